"""TUF-style signed targets metadata (ed25519 over canonical JSON) and the checks a device makes
before installing a release.

The targets metadata follows TUF's `targets` role: `{"signed": {"_type": "targets", "version",
"expires", "targets": {name: {"length", "hashes": {"sha256"}, "custom": {...}}}}, "signatures":
[{"keyid", "sig"}]}`. A device trusts only the public keys it was given (never keys fetched from
the service) and refuses metadata that is unsigned by them, expired, for other bytes, or older than
what it runs.

Canonical JSON here is sorted keys, no whitespace, UTF-8 — the subset of OLPC canonical JSON that
TUF libraries (securesystemslib) produce for our documents; written out because the signing is
three lines and securesystemslib would pull a framework in for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from packaging.version import InvalidVersion, Version

from services.domain.errors import bad_request
from services.domain.software.artifacts import Artifact

SPEC_VERSION = "1.0.31"


# -- signed metadata ---------------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_key_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def key_id(key: Ed25519PublicKey) -> str:
    """TUF's key id: SHA-256 of the canonical public key object."""
    public = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public_key_hex(key)}}
    return hashlib.sha256(canonical_json(public)).hexdigest()


def load_public_key(hex_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError:
        raise bad_request("an ed25519 public key is 64 hex digits") from None


def load_private_key(hex_seed: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(hex_seed))
    except ValueError:
        raise bad_request("an ed25519 private key is a 64 hex digit seed") from None


def trusted_keys(hex_keys: list[str]) -> dict[str, Ed25519PublicKey]:
    keys = [load_public_key(k) for k in hex_keys]
    return {key_id(k): k for k in keys}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def targets_for(artifact: Artifact, expires: float, version: int = 1) -> dict[str, Any]:
    """The `signed` part of an artifact's targets metadata."""
    return {
        "_type": "targets",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": iso(expires),
        "targets": {
            artifact.name: {
                "length": artifact.length,
                "hashes": {"sha256": artifact.sha256},
                "custom": {**artifact.custom, "artifact": artifact.id, "version": artifact.version},
            }
        },
    }


def sign(signed: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    signature = key.sign(canonical_json(signed)).hex()
    return {"signed": signed, "signatures": [{"keyid": key_id(key.public_key()), "sig": signature}]}


class Refusal(StrEnum):
    """Why a device refuses a release (reported in FAILED's reason)."""

    MALFORMED = "malformed metadata"
    SIGNATURE = "bad signature"
    EXPIRED = "metadata expired"
    ROLLBACK = "rollback refused"
    MISMATCH = "metadata is for another artifact"
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
    expires: float
    custom: Mapping[str, Any]


def verify_metadata(metadata: Any, trusted: Mapping[str, Ed25519PublicKey], now: float) -> Release:
    """The release in `metadata` if a trusted key signed it and it has not expired."""
    try:
        signed = metadata["signed"]
        signatures = metadata["signatures"]
        if signed["_type"] != "targets" or len(signed["targets"]) != 1:
            raise UpdateRefused(Refusal.MALFORMED, "expected targets metadata with one target")
        ((name, target),) = signed["targets"].items()
        release = Release(
            artifact=str(target["custom"]["artifact"]),
            name=str(name),
            version=str(target["custom"]["version"]),
            length=int(target["length"]),
            sha256=str(target["hashes"]["sha256"]),
            expires=from_iso(str(signed["expires"])),
            custom=dict(target["custom"]),
        )
        message = canonical_json(signed)
        good = False
        for entry in signatures:
            key = trusted.get(str(entry["keyid"]))
            if key is None:
                continue
            try:
                key.verify(bytes.fromhex(str(entry["sig"])), message)
                good = True
                break
            except (InvalidSignature, ValueError):
                continue
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UpdateRefused(Refusal.MALFORMED, f"{type(error).__name__}: {error}") from None
    if not good:
        raise UpdateRefused(Refusal.SIGNATURE, "no signature by a trusted key verifies")
    if release.expires <= now:
        raise UpdateRefused(Refusal.EXPIRED, f"expired {signed['expires']}")
    return release


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
