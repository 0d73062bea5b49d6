"""What a device may install, pure: a release is one target of TUF targets metadata the device's
TUF client verified (`services.device_agent.trust`), and the checks the device makes around it
(the release is the artifact its twin asked for, not older than what runs, and the downloaded
bytes are the ones signed).

The target's path is the artifact id; its `custom` holds `name`, `version` and whatever the
release manager gave the installer (e.g. `image` for the K3s installer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from packaging.version import InvalidVersion, Version


class Refusal(StrEnum):
    """Why a device refuses a release (the start of FAILED's reason)."""

    MALFORMED = "malformed metadata"
    SIGNATURE = "bad signature"
    EXPIRED = "metadata expired"
    ROLLBACK = "rollback refused"
    MISMATCH = "metadata is for another artifact"
    UNKNOWN = "not a signed release"
    UNAVAILABLE = "metadata unavailable"
    LENGTH = "length mismatch"
    HASH = "hash mismatch"


class UpdateRefused(Exception):
    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(f"{refusal.value}: {detail}")
        self.refusal = refusal
        self.reason = f"{refusal.value}: {detail}"


@dataclass(frozen=True, slots=True)
class Release:
    """A verified target: what the device may install."""

    artifact: str
    name: str
    version: str
    length: int
    sha256: str
    custom: Mapping[str, Any]


def release_of(path: str, length: int, hashes: Mapping[str, str], custom: Mapping[str, Any]) -> Release:
    """The release a verified target describes (refused when it lacks what a device needs)."""
    if "sha256" not in hashes:
        raise UpdateRefused(Refusal.MALFORMED, f"target {path} has no sha256")
    version = custom.get("version")
    if not isinstance(version, str):
        raise UpdateRefused(Refusal.MALFORMED, f"target {path} names no version")
    return Release(
        artifact=path,
        name=str(custom.get("name", path)),
        version=version,
        length=length,
        sha256=hashes["sha256"],
        custom=dict(custom),
    )


def check_offer(release: Release, artifact: str, installed: str | None) -> None:
    """The release is the artifact the twin asked for and not older than what runs."""
    if release.artifact != artifact:
        raise UpdateRefused(Refusal.MISMATCH, f"metadata names {release.artifact!r}, desired {artifact!r}")
    if installed is None:
        return
    try:
        older = Version(release.version) < Version(installed)
    except InvalidVersion:
        raise UpdateRefused(Refusal.MALFORMED, f"version {release.version!r} or {installed!r} unparsable") from None
    if older:
        raise UpdateRefused(Refusal.ROLLBACK, f"{release.version} is older than the installed {installed}")


def check_download(release: Release, length: int, sha256: str) -> None:
    if length != release.length:
        raise UpdateRefused(Refusal.LENGTH, f"downloaded {length} bytes, metadata says {release.length}")
    if sha256 != release.sha256:
        raise UpdateRefused(Refusal.HASH, f"sha256 {sha256[:16]}… is not {release.sha256[:16]}…")
