"""Firmware artifacts and releases, pure: what an artifact is, TUF-style signed targets metadata
(ed25519 over canonical JSON), the checks a device makes before installing, and byte ranges.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, Field

from services.domain.errors import bad_request, range_not_satisfiable

ARTIFACT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SPEC_VERSION = "1.0.31"
DEFAULT_CHUNK_SIZE = 1 << 20
"""Artifacts are stored as objects of this many bytes: storage bindings move whole objects, so a
chunk is what the service holds in memory at once, whatever the artifact's size."""


class ArtifactStatus(StrEnum):
    UPLOADING = "uploading"
    READY = "ready"


class Artifact(BaseModel):
    """One uploaded artifact: its bytes (stored as chunks), their digest and the signed release."""

    id: str
    name: str
    version: str
    length: int = 0
    sha256: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    status: ArtifactStatus = ArtifactStatus.UPLOADING
    created: float
    custom: dict[str, Any] = Field(default_factory=dict)
    """Free-form release data the installer reads (e.g. a container image for the K3s installer)."""
    metadata: dict[str, Any] | None = None
    """The signed targets metadata (None until the upload completed)."""

    @property
    def chunks(self) -> int:
        return -(-self.length // self.chunk_size)


def check_artifact_id(value: str) -> str:
    if not ARTIFACT_ID.match(value):
        raise bad_request("artifact id must be 1..64 of a-z 0-9 . _ - starting with a letter or digit")
    return value


def parse_version(value: str) -> Version:
    try:
        return Version(value)
    except InvalidVersion:
        raise bad_request(f"version {value!r} is not a version (PEP 440 / semver-like, e.g. 1.4.2)") from None


def chunk_name(artifact_id: str, index: int) -> str:
    return f"artifacts/{artifact_id}/{index:08d}.bin"


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


# -- byte ranges -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Inclusive, as in `Content-Range`."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """The single byte range a `Range` header asks for (None: the whole artifact). Several
    ranges or a range past the end are 416; an unparsable header is ignored, as RFC 9110 says."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        if header.strip().startswith("bytes=") and "," in header:
            raise range_not_satisfiable("only a single byte range is served")
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise range_not_satisfiable(f"empty suffix range; the artifact has {total} bytes")
        return ByteRange(max(0, total - suffix), total - 1)
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if start >= total or (last and int(last) < start):
        raise range_not_satisfiable(f"range {header} is outside the artifact's {total} bytes")
    return ByteRange(start, end)


def chunk_spans(byte_range: ByteRange, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk index, start, stop) slices of the stored chunks that make up `byte_range`."""
    spans: list[tuple[int, int, int]] = []
    position = byte_range.start
    while position <= byte_range.end:
        index = position // chunk_size
        start = position - index * chunk_size
        stop = min(chunk_size, byte_range.end + 1 - index * chunk_size)
        spans.append((index, start, stop))
        position = index * chunk_size + stop
    return spans
