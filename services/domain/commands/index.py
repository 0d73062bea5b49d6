"""A device's command index: what `sync`, listing and the sweep need to know of a device's commands
without reading every record, and how a device's pending commands are settled at `now`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.contracts.commands import CommandStatus
from services.domain.commands.record import DeviceCommand, expire
from services.domain.json_values import JsonObject

_PROGRESS = {CommandStatus.QUEUED: 0, CommandStatus.DELIVERED: 1}
"""How far a status is along the lifecycle (final statuses: 2); statuses only move forward."""


def _progress(status: CommandStatus) -> int:
    return _PROGRESS.get(status, 2)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the index knows of one command: enough to list, sync and sweep without the record."""

    created_at: float
    expires_at: float
    status: CommandStatus
    completed_at: float | None = None

    def to_json(self) -> JsonObject:
        return {"c": self.created_at, "e": self.expires_at, "s": self.status.value, "d": self.completed_at}

    @staticmethod
    def from_json(value: JsonObject) -> IndexEntry:
        done = value.get("d")
        return IndexEntry(
            float(value["c"]), float(value["e"]), CommandStatus(value["s"]), None if done is None else float(done)
        )

    @staticmethod
    def of(command: DeviceCommand) -> IndexEntry:
        return IndexEntry(command.created_at, command.expires_at, command.status, command.completed_at)


@dataclass(frozen=True, slots=True)
class CommandIndex:
    """A device's commands by id, as last seen. The records are the truth; the index is a hint
    that every writer refreshes and whose statuses only move forward, so concurrent refreshes from
    stale copies cannot undo a newer one."""

    entries: Mapping[str, IndexEntry] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {"commands": {cid: entry.to_json() for cid, entry in self.entries.items()}}

    @staticmethod
    def from_json(value: JsonObject | None) -> CommandIndex:
        if not value:
            return CommandIndex()
        return CommandIndex({cid: IndexEntry.from_json(e) for cid, e in value.get("commands", {}).items()})

    def with_commands(self, commands: Iterable[DeviceCommand]) -> CommandIndex:
        """The index with each command added or moved forward (never back)."""
        entries = dict(self.entries)
        for command in commands:
            known = entries.get(command.id)
            if known is None or _progress(command.status) > _progress(known.status):
                entries[command.id] = IndexEntry.of(command)
        return CommandIndex(entries)

    def without(self, command_ids: Iterable[str]) -> CommandIndex:
        gone = set(command_ids)
        return CommandIndex({cid: e for cid, e in self.entries.items() if cid not in gone})

    def pending_ids(self) -> list[str]:
        """Ids whose last known status is pending, oldest first."""
        pending = [(e.created_at, cid) for cid, e in self.entries.items() if e.status.pending]
        return [cid for _, cid in sorted(pending)]

    def live_pending(self, now: float) -> int:
        """Pending commands that are not due yet (what counts against a device's limit)."""
        return sum(1 for e in self.entries.values() if e.status.pending and now < e.expires_at)

    def newest_first(self) -> list[str]:
        return [cid for _, cid in sorted(((e.created_at, cid) for cid, e in self.entries.items()), reverse=True)]

    def pruned(self, now: float, retention: float, max_entries: int) -> CommandIndex:
        """Without final entries whose records the store has dropped (`retention` after completion),
        and without the oldest final entries beyond `max_entries` (pending ones always stay)."""
        entries = {
            cid: e
            for cid, e in self.entries.items()
            if e.status.pending or e.completed_at is None or e.completed_at + retention > now
        }
        excess = len(entries) - max_entries
        if excess > 0:
            final = sorted((e.created_at, cid) for cid, e in entries.items() if not e.status.pending)
            for _, cid in final[:excess]:
                del entries[cid]
        return CommandIndex(entries)

    def next_due(self, now: float, redeliver_after: float) -> float | None:
        """When the sweep should look at this device next: the earliest expiry of a pending
        command, or `redeliver_after` past creation (or past now) for one never published."""
        times = [entry_due(e, now, redeliver_after) for e in self.entries.values() if e.status.pending]
        return min(times) if times else None


def entry_due(entry: IndexEntry, now: float, redeliver_after: float) -> float:
    if entry.status is not CommandStatus.QUEUED:
        return entry.expires_at
    retry = entry.created_at + redeliver_after
    return min(entry.expires_at, retry if retry > now else now + redeliver_after)


@dataclass(frozen=True, slots=True)
class Settled:
    """A device's pending commands looked at `now` (see `settle`)."""

    expired: list[DeviceCommand]
    """Records that just expired (to be written)."""
    pending: list[DeviceCommand]
    """Unexpired pending commands, oldest first (what a sync publishes again)."""
    forget: list[str]
    """Index entries whose record never came to exist and whose time is up (a create that died)."""
    seen: list[DeviceCommand]
    """The records read that did not just expire, to refresh the index with (the shell adds the
    expired ones as its writes turned out)."""


def settle(index: CommandIndex, records: Mapping[str, DeviceCommand | None], now: float) -> Settled:
    """Look at the records of the index's pending entries: expire the due ones, list the ones
    still pending, and forget entries without a record once their time is up (before that the
    record may still be on its way: index entries are written before records)."""
    expired: list[DeviceCommand] = []
    pending: list[DeviceCommand] = []
    forget: list[str] = []
    seen: list[DeviceCommand] = []
    for command_id in index.pending_ids():
        record = records.get(command_id)
        if record is None:
            if now >= index.entries[command_id].expires_at:
                forget.append(command_id)
            continue
        after = expire(record, now)
        if after.status is not record.status:
            expired.append(after)
            continue
        if after.pending:
            pending.append(after)
        seen.append(after)
    return Settled(expired, pending, forget, seen)


def resend_due(pending: Iterable[DeviceCommand], now: float, redeliver_after: float) -> list[DeviceCommand]:
    """Pending commands never published (a create whose publish failed or that died before it)
    for at least `redeliver_after` seconds: the sweep publishes them."""
    return [c for c in pending if c.status is CommandStatus.QUEUED and now - c.created_at >= redeliver_after]


def index_key(device_id: str) -> str:
    return f"commands~{device_id}"
