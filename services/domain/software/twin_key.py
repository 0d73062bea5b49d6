"""The software update contract on the twin, pure: one top-level key, `software`.

desired   `{"artifact": "<artifact id>", "version": "2.1.0"}` — a reference, written by an operator
          or a configuration rollout; never a URL (URLs expire, references do not).
delta     the same, plus `url`: a download URL minted for this device by the firmware app when the
          delta is sent (late binding), so a device that was offline for a week still gets a
          valid one: the object store's own (SAS, presigned) or the app's HMAC URL.
reported  `{"artifact", "version", "status", "reason"?, "progress"?, "attempt"?}` — what runs
          (artifact and version change only on UPDATED) and how the last attempt went:
          DOWNLOADING → DOWNLOADED → VERIFIED → INSTALLING → UPDATED | FAILED | ROLLED_BACK.

Reported `artifact`/`version` equal to desired means no delta for the key; a failed attempt is
reported with the artifact it tried (`attempt`), and the device does not try the same artifact
again until the desired reference changes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from services.domain.software.grants import Grant, presign

SOFTWARE_KEY = "software"


class UpdateStatus(StrEnum):
    DOWNLOADING = "DOWNLOADING"
    DOWNLOADED = "DOWNLOADED"
    VERIFIED = "VERIFIED"
    INSTALLING = "INSTALLING"
    UPDATED = "UPDATED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


FINISHED = frozenset({UpdateStatus.UPDATED, UpdateStatus.FAILED, UpdateStatus.ROLLED_BACK})


def desired_artifact(desired: Any) -> str | None:
    """The artifact a desired `software` value asks for (None when it names none)."""
    if isinstance(desired, dict) and isinstance(desired.get("artifact"), str):
        return str(desired["artifact"])
    return None


def attempted(current: Any) -> str | None:
    """The artifact the device's last attempt was about: the one it runs after UPDATED, the one
    it tried after FAILED or ROLLED_BACK."""
    if not isinstance(current, dict):
        return None
    if current.get("status") in (UpdateStatus.FAILED, UpdateStatus.ROLLED_BACK):
        value = current.get("attempt")
    else:
        value = current.get("artifact")
    return str(value) if isinstance(value, str) else None


def satisfied(current: Any, desired: Any) -> bool:
    """Nothing to do: the device finished an attempt at the desired artifact (installed it, or
    failed and waits for a new reference)."""
    artifact = desired_artifact(desired)
    if artifact is None or not isinstance(current, dict):
        return False
    return current.get("status") in FINISHED and attempted(current) == artifact


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
