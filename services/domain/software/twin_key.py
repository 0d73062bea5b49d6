"""The software update contract on the twin, pure: one top-level key, `software`.

desired   `{"artifact": "<artifact id>", "version": "2.1.0"}` — a reference, written by an operator
          or a configuration rollout; never a URL (URLs expire, references do not). A rollout may
          add `"install": "later"` (download and verify only, until the install is triggered:
          then `"now"`),
          `"retry": n` (try again: the n-th retry) and `"autoConsentAt": t` (a device that asks
          for local consent installs anyway from then on).
delta     the same, plus `url`: a download URL minted for this device by the firmware app when the
          delta is sent (late binding), so a device that was offline for a week still gets a
          valid one: the object store's own (SAS, presigned) or the app's HMAC URL.
reported  `{"artifact", "version", "status", "reason"?, "failure"?, "progress"?, "attempt"?,
          "retry"?}` — what runs (artifact and version change only on UPDATED) and how the last
          attempt went: DOWNLOADING → DOWNLOADED → VERIFIED → [WAITING_FOR_INSTALL |
          WAITING_FOR_CONSENT →] INSTALLING → UPDATED | FAILED(failure, reason) | ROLLED_BACK;
          `retry` echoes the desired one the attempt answered.

Reported `artifact`/`version` equal to desired means no delta for the key; a failed attempt is
reported with the artifact it tried (`attempt`), and the device does not try the same artifact
again until the desired reference changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from services.domain.software.grants import Grant, presign

SOFTWARE_KEY = "software"


class UpdateStatus(StrEnum):
    DOWNLOADING = "DOWNLOADING"
    DOWNLOADED = "DOWNLOADED"
    VERIFIED = "VERIFIED"
    WAITING_FOR_INSTALL = "WAITING_FOR_INSTALL"
    """Downloaded and verified; the install waits for the trigger (`"install": "later"`)."""
    WAITING_FOR_CONSENT = "WAITING_FOR_CONSENT"
    """Downloaded and verified; the install waits for local consent (or `autoConsentAt`)."""
    INSTALLING = "INSTALLING"
    UPDATED = "UPDATED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


FINISHED = frozenset({UpdateStatus.UPDATED, UpdateStatus.FAILED, UpdateStatus.ROLLED_BACK})
WAITING = frozenset({UpdateStatus.WAITING_FOR_INSTALL, UpdateStatus.WAITING_FOR_CONSENT})


class FailureKind(StrEnum):
    """Why an update failed, as a device reports it under `failure` (the rollout retries by kind)."""

    DOWNLOAD = "download"
    """The artifact (or a credential for it) could not be fetched."""
    METADATA = "metadata"
    """The release metadata could not be fetched, or was malformed or for another artifact."""
    SIGNATURE = "signature"
    """No trusted key signed the metadata: never retried."""
    EXPIRED = "expired"
    VERSION = "version"
    """Older than what runs (rollback refused): never retried."""
    INTEGRITY = "integrity"
    """Length or hash do not match the signed metadata."""
    INSTALL = "install"
    HEALTH = "health"
    """Installed, failed its health check, rolled back."""
    CONSENT = "consent"
    """Local consent was refused."""


def retry_of(value: Any) -> int:
    """The retry a desired or reported software value is about (0: the first attempt)."""
    if isinstance(value, dict) and isinstance(value.get("retry"), int) and not isinstance(value["retry"], bool):
        return max(0, int(value["retry"]))
    return 0


def desired_artifact(desired: Any) -> str | None:
    """The artifact a desired `software` value asks for (None when it names none)."""
    if isinstance(desired, dict) and isinstance(desired.get("artifact"), str):
        return str(desired["artifact"])
    return None


def attempted(current: Any) -> str | None:
    """The artifact the device's last attempt was about: the one it runs after UPDATED, the one
    it tries or tried otherwise (FAILED, ROLLED_BACK, waiting or under way)."""
    if not isinstance(current, dict):
        return None
    value = current.get("artifact")
    if current.get("status") not in (None, UpdateStatus.UPDATED) and "attempt" in current:
        value = current.get("attempt")
    return str(value) if isinstance(value, str) else None


def satisfied(current: Any, desired: Any, consented: bool = False, now: float = 0.0) -> bool:
    """Nothing to do now: the device runs the desired artifact, or finished this attempt at it
    (failed, and waits for a new reference or retry), or waits — downloaded — for the install
    trigger or for consent that has not come."""
    artifact = desired_artifact(desired)
    if artifact is None or not isinstance(current, dict):
        return False
    status = current.get("status")
    if status == UpdateStatus.UPDATED and current.get("artifact") == artifact:
        return True
    if attempted(current) != artifact or retry_of(current) != retry_of(desired):
        return False
    if status in FINISHED:
        return True
    if status == UpdateStatus.WAITING_FOR_INSTALL:
        return install_later(desired)
    if status == UpdateStatus.WAITING_FOR_CONSENT:
        return not install_later(desired) and not consented and not consent_due(desired, current, now)
    return False


def install_later(desired: Any) -> bool:
    """Whether the desired update is download-only for now."""
    return isinstance(desired, dict) and desired.get("install") == "later"


def consent_due(desired: Any, current: Any, now: float) -> bool:
    """Whether the auto-consent deadline (the rollout's `autoConsentAt`, or the device's own in
    its waiting report) has passed."""
    deadlines = [
        v["autoConsentAt"]
        for v in (desired, current)
        if isinstance(v, dict) and isinstance(v.get("autoConsentAt"), (int, float))
    ]
    return bool(deadlines) and now >= min(deadlines)


class Gate(StrEnum):
    """What a device does with a verified download."""

    INSTALL = "install"
    WAIT_FOR_INSTALL = "wait_for_install"
    WAIT_FOR_CONSENT = "wait_for_consent"


def install_gate(desired: Any, consent_required: bool, consented: bool, deadline: float | None, now: float) -> Gate:
    """Install now, or wait for the trigger or for consent. `deadline` is the device's own
    auto-consent time (None: none); the desired `autoConsentAt` applies too, the earlier wins."""
    if install_later(desired):
        return Gate.WAIT_FOR_INSTALL
    if not consent_required or consented:
        return Gate.INSTALL
    if consent_due(desired, {"autoConsentAt": deadline} if deadline is not None else None, now):
        return Gate.INSTALL
    return Gate.WAIT_FOR_CONSENT


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a device's update of one desired value went, as the rollout counts it."""

    state: str
    """`succeeded`, `failed` or `pending`."""
    phase: str = ""
    """The reported status while pending (or waiting)."""
    failure: str = ""
    reason: str = ""


def verdict(reported: Any, desired: Any) -> Verdict:
    """Succeeded: runs the desired artifact, or (download-only) waits for the install trigger;
    failed: this attempt (same artifact and retry) ended FAILED or ROLLED_BACK; else pending."""
    artifact = desired_artifact(desired)
    if not isinstance(reported, dict) or artifact is None:
        return Verdict("pending")
    status = str(reported.get("status", ""))
    if status == UpdateStatus.UPDATED and reported.get("artifact") == artifact:
        return Verdict("succeeded", status)
    if attempted(reported) != artifact or retry_of(reported) != retry_of(desired):
        return Verdict("pending")
    if status == UpdateStatus.WAITING_FOR_INSTALL and install_later(desired):
        return Verdict("succeeded", status)
    if status == UpdateStatus.ROLLED_BACK:
        return Verdict("failed", status, FailureKind.HEALTH.value, str(reported.get("reason", "")))
    if status == UpdateStatus.FAILED:
        kind = reported.get("failure")
        return Verdict("failed", status, str(kind) if kind else "failed", str(reported.get("reason", "")))
    return Verdict("pending", status)


def references(value: Any) -> set[str]:
    """Artifact ids referred to anywhere in `value` (a configuration's content, its rollback
    content, a desired state): every `software` object naming an artifact."""
    found: set[str] = set()
    if isinstance(value, dict):
        artifact = desired_artifact(value.get(SOFTWARE_KEY))
        if artifact is not None:
            found.add(artifact)
        for item in value.values():
            found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def download_url(base_url: str, key: bytes, grant: Grant) -> str:
    """A pre-signed URL for `grant` on the firmware service at `base_url`."""
    return f"{base_url.rstrip('/')}/v1/artifacts/{grant.artifact}/download?{urlencode(presign(key, grant))}"


def with_download_url(delta: dict[str, Any], url: str) -> dict[str, Any]:
    """`delta` with `url` next to its software reference (late binding; see `delta_artifact`)."""
    state = delta["state"]
    return {**delta, "state": {**state, SOFTWARE_KEY: {**state[SOFTWARE_KEY], "url": url}}}


def delta_artifact(delta: dict[str, Any]) -> str | None:
    """The artifact a delta's software reference names (None: the delta needs no URL)."""
    state = delta.get("state")
    if not isinstance(state, dict) or not isinstance(state.get(SOFTWARE_KEY), dict):
        return None
    return desired_artifact(state[SOFTWARE_KEY])
