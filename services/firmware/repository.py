"""The suite's TUF repository (`services.domain.software.repository` has the rules), kept in the
state store:

- `tuf~root~{n}` and `tuf~targets~{n}`: every root and targets version as signed offline,
  immutable (created only, never overwritten: two releases racing for one version cannot both
  land);
- `tuf~head`: which root and targets versions are current, plus the suite's own snapshot (the
  last few versions, so a device that read a timestamp just before a release still finds its
  snapshot) and timestamp, all flipped by one conditional write.

Files are served under the names the TUF client asks for (consistent snapshots):
`{n}.root.json`, `timestamp.json`, `{n}.snapshot.json`, `{n}.targets.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from services.domain.errors import conflict, not_found
from services.domain.json_values import JsonObject
from services.domain.software import repository as rules
from services.firmware.storage import Keys
from services.platform.names import TUF_SNAPSHOT_KEY, TUF_TIMESTAMP_KEY
from services.platform.state import Put, StateRepository

log = structlog.get_logger()
HEAD = "tuf~head"
SNAPSHOTS_KEPT = 4
FILE = re.compile(r"^(?:(\d+)\.)?(root|targets|snapshot|timestamp)\.json$")


def role_key(role: str, version: int) -> str:
    return f"tuf~{role}~{version}"


@dataclass
class Head:
    root: int
    targets: int = 0
    snapshots: dict[str, JsonObject] | None = None
    timestamp: JsonObject | None = None

    @classmethod
    def of(cls, value: JsonObject) -> Head:
        return cls(value["root"], value.get("targets", 0), value.get("snapshots") or {}, value.get("timestamp"))

    def dump(self) -> JsonObject:
        return {
            "root": self.root,
            "targets": self.targets,
            "snapshots": self.snapshots or {},
            "timestamp": self.timestamp,
        }

    @property
    def snapshot_version(self) -> int:
        return max((int(v) for v in self.snapshots or {}), default=0)

    @property
    def timestamp_version(self) -> int:
        return int(self.timestamp["signed"]["version"]) if self.timestamp else 0


class ReleaseRepository:
    def __init__(self, state: StateRepository, keys: Keys, snapshot_ttl: int, timestamp_ttl: int) -> None:
        self._state = state
        self._keys = keys
        self._snapshot_ttl = timedelta(seconds=snapshot_ttl)
        self._timestamp_ttl = timedelta(seconds=timestamp_ttl)

    # -- reading ------------------------------------------------------------------------------
    async def head(self) -> Head | None:
        stored = (await self._state.get(HEAD)).value
        return Head.of(stored) if stored is not None else None

    async def _document(self, role: str, version: int) -> JsonObject | None:
        value = (await self._state.get(role_key(role, version))).value
        return None if value is None else value.get("metadata")

    async def root(self, version: int | None = None) -> Metadata[Root]:
        head = await self.head()
        if head is None:
            raise not_found("no root metadata yet: the release team publishes the first root")
        document = await self._document(Root.type, version or head.root)
        if document is None or (version or 0) > head.root:
            raise not_found(f"no root version {version}")
        root: Metadata[Root] = Metadata.from_dict(dict(document))
        return root

    async def targets(self) -> Targets | None:
        """The current (accepted) targets, None before the first release."""
        head = await self.head()
        if head is None or not head.targets:
            return None
        document = await self._document(Targets.type, head.targets)
        if document is None:
            return None
        targets: Metadata[Targets] = Metadata.from_dict(dict(document))
        return targets.signed

    async def file(self, name: str) -> bytes:
        """A metadata file by the name a TUF client asks for (404 for any other)."""
        match = FILE.match(name)
        head = await self.head()
        if match is None or head is None:
            raise not_found(f"no metadata file {name}")
        number, role = match.group(1), match.group(2)
        version = int(number) if number else None
        document: JsonObject | None = None
        if role == Timestamp.type and version is None:
            document = head.timestamp
        elif role == Snapshot.type and version is not None:
            document = (head.snapshots or {}).get(str(version))
        elif role == Root.type:
            wanted = version or head.root
            document = await self._document(role, wanted) if wanted <= head.root else None
        elif role == Targets.type and head.targets:
            wanted = version or head.targets
            document = await self._document(role, wanted) if wanted <= head.targets else None
        if document is None:
            raise not_found(f"no metadata file {name}")
        return json.dumps(document, separators=(",", ":")).encode()

    # -- the suite's online keys --------------------------------------------------------------
    async def online(self) -> dict[str, CryptoSigner]:
        return {
            Snapshot.type: rules.seed_signer(await self._keys.get(TUF_SNAPSHOT_KEY)),
            Timestamp.type: rules.seed_signer(await self._keys.get(TUF_TIMESTAMP_KEY)),
        }

    async def online_keys(self) -> dict[str, Key]:
        return {role: signer.public_key for role, signer in (await self.online()).items()}

    # -- publishing ---------------------------------------------------------------------------
    async def publish_root(self, data: bytes) -> Root:
        """Accept the first root, or the next one (see `rules.check_root`); the online keys are
        re-read first, so a rotation of them takes effect with the root that names them."""
        new: Metadata[Root] = rules.load(data, Root.type)
        self._keys.forget(TUF_SNAPSHOT_KEY, TUF_TIMESTAMP_KEY)
        signers = await self.online()
        head = await self.head()
        trusted = None if head is None else (await self.root()).signed
        now = datetime.now(UTC)
        rules.check_root(new, trusted, {r: s.public_key for r, s in signers.items()}, now)
        await self._create(Root.type, new)

        def step(value: JsonObject | None) -> tuple[Put | None, None]:
            if value is None:
                return Put(Head(new.signed.version).dump()), None
            current = Head.of(value)
            if current.root >= new.signed.version:
                raise conflict(f"root version {current.root} was published meanwhile")
            current.root = new.signed.version
            if current.targets:  # new timestamp (and snapshot) keys sign from now on
                self._resign(current, signers, now, snapshot=True)
            return Put(current.dump()), None

        await self._state.update(HEAD, step)
        log.info("root published", version=new.signed.version)
        return new.signed

    async def publish_targets(self, data: bytes, stored: Mapping[str, rules.StoredBytes]) -> Targets:
        """Accept the release manager's next targets version, then sign snapshot and timestamp."""
        new: Metadata[Targets] = rules.load(data, Targets.type)
        head = await self.head()
        if head is None:
            raise conflict("no root metadata yet: the release team publishes the first root")
        root = (await self.root()).signed
        now = datetime.now(UTC)
        rules.check_targets(root, new, head.targets, stored, now)
        signers = await self.online()
        await self._create(Targets.type, new)
        version = new.signed.version

        def step(value: JsonObject | None) -> tuple[Put | None, None]:
            current = Head.of(value or {})
            if current.targets >= version:
                raise conflict(f"targets version {current.targets} was published meanwhile; sign on top of it")
            if current.root != root.version:
                raise conflict("root was rotated meanwhile; publish again")
            current.targets = version
            self._resign(current, signers, now, snapshot=True)
            return Put(current.dump()), None

        await self._state.update(HEAD, step)
        log.info("targets published", version=version, targets=len(new.signed.targets))
        return new.signed

    async def _create(self, role: str, metadata: Metadata[Any]) -> None:
        key = role_key(role, metadata.signed.version)
        document = metadata.to_dict()
        if not await self._state.create(key, {"metadata": document}):
            existing = await self._document(role, metadata.signed.version)
            if existing != document:
                raise conflict(f"{role} version {metadata.signed.version} exists already; sign on top of it")

    def _resign(self, head: Head, signers: Mapping[str, CryptoSigner], now: datetime, *, snapshot: bool) -> None:
        """New snapshot (when asked) and timestamp versions into `head`."""
        snapshots = dict(head.snapshots or {})
        if snapshot or not snapshots:
            version = head.snapshot_version + 1
            signed = rules.snapshot_for(version, head.targets, now + self._snapshot_ttl, signers[Snapshot.type])
            snapshots[str(version)] = signed.to_dict()
            for old in sorted(snapshots, key=int)[:-SNAPSHOTS_KEPT]:
                del snapshots[old]
        head.snapshots = snapshots
        timestamp = rules.timestamp_for(
            head.timestamp_version + 1, head.snapshot_version, now + self._timestamp_ttl, signers[Timestamp.type]
        )
        head.timestamp = timestamp.to_dict()

    async def refresh(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> bool:
        """Re-sign snapshot and/or timestamp once less than half their lifetime is left; True
        when something was re-signed."""
        head = await self.head()
        if head is None or not head.targets or head.timestamp is None:
            return False
        signers = await self.online()

        def step(value: JsonObject | None) -> tuple[Put | None, bool]:
            if value is None:
                return None, False
            current = Head.of(value)
            at = now()
            latest = (current.snapshots or {}).get(str(current.snapshot_version))
            snapshot_due = latest is None or rules.due(_expiry(latest), at, self._snapshot_ttl)
            timestamp_due = current.timestamp is None or rules.due(_expiry(current.timestamp), at, self._timestamp_ttl)
            if not (snapshot_due or timestamp_due):
                return None, False
            self._resign(current, signers, at, snapshot=snapshot_due)
            return Put(current.dump()), True

        return await self._state.update(HEAD, step)


def _expiry(document: JsonObject) -> datetime:
    return datetime.strptime(str(document["signed"]["expires"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
