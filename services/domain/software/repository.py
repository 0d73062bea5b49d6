"""The release repository's rules, pure, on python-tuf's Metadata API (TUF roles):

- **root** lists every role's keys and threshold (e.g. 2 of 3 root keys), signed offline by the
  root key holders. A new root is version + 1 and signed by the threshold of the old root's root
  keys *and* of its own (so devices that trust the old one can follow it, step by step).
- **targets** lists the releases (path = artifact id, length, sha256, `custom`), signed offline by
  the release manager(s) to the targets threshold (`twin firmware sign`). The suite accepts a
  targets version only when it verifies against root and every target it lists is an artifact
  whose stored bytes have that length and hash.
- **snapshot** and **timestamp** are the suite's: signed with the online keys it reads from the
  Dapr secret store, each time a targets version is accepted and before they expire. With only
  those keys an attacker can re-date or re-order metadata, never list a byte of new software.

Errors are `TwinError` values (400 for metadata that does not verify, 409 for a version that is
not the next one).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import CanonicalJSONSerializer

from services.domain.errors import bad_request, conflict

ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ONLINE_ROLES = (Snapshot.type, Timestamp.type)
"""The roles whose keys the suite holds (from the Dapr secret store); root and targets are offline."""

M = TypeVar("M", bound="Metadata[Any]")


# -- keys ----------------------------------------------------------------------------------------
def seed_signer(hex_seed: str) -> CryptoSigner:
    """An ed25519 signer from a 32-byte seed in hex (how online keys are kept as secrets)."""
    try:
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(hex_seed))
    except ValueError:
        raise bad_request("an ed25519 key seed is 64 hex digits") from None
    return CryptoSigner(private)


def new_private_pem() -> bytes:
    """A new ed25519 private key as PKCS#8 PEM (what `twin firmware keys --new` writes)."""
    return Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def pem_signer(pem: bytes) -> CryptoSigner:
    """A signer from a PKCS#8 PEM private key (400 when it is not one)."""
    try:
        private = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise bad_request(f"not an unencrypted PEM private key: {error}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise bad_request("keys are ed25519")
    return CryptoSigner(private)


def pem_public_key(pem: bytes) -> Key:
    """The TUF key of a PEM public or private key (400 otherwise)."""
    if b"PRIVATE KEY" in pem:
        return pem_signer(pem).public_key
    try:
        return SSlibKey.from_crypto(load_pem_public_key(pem))
    except (ValueError, TypeError) as error:
        raise bad_request(f"not a PEM public key: {error}") from None


def public_pem(signer: CryptoSigner) -> bytes:
    key = load_pem_private_key(signer.private_bytes, password=None).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


# -- reading ------------------------------------------------------------------------------------
def load(data: bytes, role: str) -> Metadata[Any]:
    """Metadata of `role` from JSON bytes (400 naming what is wrong)."""
    try:
        metadata: Metadata[Any] = Metadata.from_bytes(data)
    except DeserializationError as error:
        raise bad_request(f"not TUF metadata: {error}") from None
    if metadata.signed.type != role:
        raise bad_request(f"expected {role} metadata, got {metadata.signed.type}")
    return metadata


def canonical(metadata: Metadata[Any]) -> bytes:
    return CanonicalJSONSerializer().serialize(metadata.signed)


@dataclass(frozen=True, slots=True)
class Verification:
    role: str
    verified: int
    threshold: int

    @property
    def ok(self) -> bool:
        return self.verified >= self.threshold

    def __str__(self) -> str:
        return f"{self.verified} of the {self.threshold} {self.role} signature(s) required verified"


def verification(root: Root, role: str, metadata: Metadata[Any]) -> Verification:
    """How many of `role`'s keys in `root` signed `metadata` (each key counts once)."""
    result = root.get_verification_result(role, canonical(metadata), metadata.signatures)
    return Verification(role, len(result.signed), root.roles[role].threshold)


def _expires(metadata: Metadata[Any], now: datetime) -> None:
    if metadata.signed.is_expired(now):
        raise bad_request(f"{metadata.signed.type} metadata expired at {metadata.signed.expires:%Y-%m-%dT%H:%M:%SZ}")


# -- root -------------------------------------------------------------------------------------
def new_root(
    keys: Mapping[str, Sequence[Key]], thresholds: Mapping[str, int], expires: datetime, version: int = 1
) -> Metadata[Root]:
    """An unsigned root naming `keys` and `thresholds` per role (every role of `ROLES`)."""
    root = Root(version=version, expires=expires, consistent_snapshot=True)
    for role in ROLES:
        root.roles[role] = Role([], thresholds[role])
        for key in keys[role]:
            root.add_key(key, role)
    return Metadata(root)


@dataclass
class RootChange:
    """What a rotation changes about one role."""

    add: list[Key] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    """Key ids."""
    threshold: int | None = None


def rotated(current: Root, changes: Mapping[str, RootChange], expires: datetime) -> Metadata[Root]:
    """An unsigned root, version + 1, with `changes` applied to a copy of `current`."""
    root = Root.from_dict(copy.deepcopy(current.to_dict()))  # to_dict shares lists
    root.version = current.version + 1
    root.expires = expires
    for role, change in changes.items():
        if role not in ROLES:
            raise bad_request(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        for key_id in change.remove:
            if key_id not in root.roles[role].keyids:
                raise bad_request(f"key {key_id[:12]}… is not a {role} key")
            root.revoke_key(key_id, role)
        for key in change.add:
            root.add_key(key, role)
        if change.threshold is not None:
            root.roles[role].threshold = change.threshold
    check_shape(root)
    return Metadata(root)


def check_shape(root: Root) -> None:
    """Every role has at least as many keys as its threshold (≥ 1); the snapshot and timestamp
    roles one key each (the suite signs with one online key per role)."""
    for role in ROLES:
        spec = root.roles.get(role)
        if spec is None:
            raise bad_request(f"root names no {role} role")
        if spec.threshold < 1 or len(spec.keyids) < spec.threshold:
            raise bad_request(f"{role}: threshold {spec.threshold} with {len(spec.keyids)} key(s)")
    for role in ONLINE_ROLES:
        if len(root.roles[role].keyids) != 1:
            raise bad_request(f"{role} must have exactly one key (the suite's online key)")
    if not root.consistent_snapshot:
        raise bad_request("root must use consistent snapshots")


def check_root(new: Metadata[Root], trusted: Root | None, online: Mapping[str, Key], now: datetime) -> None:
    """Accept `new` as the next root: the first one signed by its own threshold; later ones
    version + 1 and signed by the threshold of the old root's root keys and of their own. Either
    way it must name the suite's online keys for snapshot and timestamp, and not be expired."""
    root = new.signed
    check_shape(root)
    expected = 1 if trusted is None else trusted.version + 1
    if trusted is not None and root.version <= trusted.version:
        raise conflict(f"root version {root.version} is not newer than the current {trusted.version}")
    if root.version != expected:
        raise bad_request(f"root version must be {expected}, not {root.version}")
    if trusted is not None and not (old := verification(trusted, Root.type, new)).ok:
        raise bad_request(f"new root not signed by the current root's keys: {old}")
    if not (own := verification(root, Root.type, new)).ok:
        raise bad_request(f"new root not signed by its own root keys: {own}")
    _expires(new, now)
    for role in ONLINE_ROLES:
        if root.roles[role].keyids != [online[role].keyid]:
            raise bad_request(f"root's {role} key is not the suite's online {role} key {online[role].keyid[:12]}…")


# -- targets -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredBytes:
    length: int
    sha256: str


def check_targets(
    root: Root, new: Metadata[Targets], current: int, stored: Mapping[str, StoredBytes], now: datetime
) -> None:
    """Accept `new` as the next targets metadata: signed by the targets threshold, newer than
    `current`, not expired, and listing only artifacts stored with exactly those bytes."""
    if not (check := verification(root, Targets.type, new)).ok:
        raise bad_request(f"targets metadata is not signed by the release manager(s): {check}")
    if new.signed.version <= current:
        raise conflict(f"targets version {new.signed.version} is not newer than the current {current}")
    _expires(new, now)
    if new.signed.delegations is not None:
        raise bad_request("delegated targets are not supported")
    for path, target in new.signed.targets.items():
        have = stored.get(path)
        if have is None:
            raise bad_request(f"target {path} is not an uploaded artifact: upload its bytes first")
        if target.length != have.length or target.hashes.get("sha256") != have.sha256:
            raise bad_request(f"target {path} does not describe the stored bytes ({have.length} bytes, {have.sha256})")


def targets_with(
    current: Targets | None, path: str, length: int, sha256: str, custom: Mapping[str, Any], expires: datetime
) -> Metadata[Targets]:
    """The release manager's next targets version: `current` plus (or with a new) target `path`."""
    targets = (
        Targets(version=1, expires=expires) if current is None else Targets.from_dict(copy.deepcopy(current.to_dict()))
    )
    if current is not None:
        targets.version = current.version + 1
        targets.expires = expires
    targets.targets[path] = TargetFile(length, {"sha256": sha256}, path, {"custom": dict(custom)})
    return Metadata(targets)


def targets_without(current: Targets, path: str, expires: datetime) -> Metadata[Targets]:
    """The next targets version without `path` (what a deletion is signed as)."""
    if path not in current.targets:
        raise bad_request(f"{path} is not a signed target")
    targets = Targets.from_dict(copy.deepcopy(current.to_dict()))
    targets.version = current.version + 1
    targets.expires = expires
    del targets.targets[path]
    return Metadata(targets)


def signed_by(metadata: M, signers: Iterable[Signer]) -> M:
    """`metadata` with a signature of each signer added (existing signatures by them replaced)."""
    for signer in signers:
        metadata.sign(signer, append=True)
    return metadata


# -- snapshot and timestamp (the suite's online roles) -----------------------------------------
def snapshot_for(version: int, targets_version: int, expires: datetime, signer: Signer) -> Metadata[Snapshot]:
    snapshot = Snapshot(version=version, expires=expires, meta={"targets.json": MetaFile(targets_version)})
    return signed_by(Metadata(snapshot), [signer])


def timestamp_for(version: int, snapshot_version: int, expires: datetime, signer: Signer) -> Metadata[Timestamp]:
    timestamp = Timestamp(version=version, expires=expires, snapshot_meta=MetaFile(snapshot_version))
    return signed_by(Metadata(timestamp), [signer])


def due(expires: datetime, now: datetime, lifetime: timedelta) -> bool:
    """Re-sign when less than half the lifetime is left (devices never meet an expired one)."""
    return expires - now < lifetime / 2


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)
