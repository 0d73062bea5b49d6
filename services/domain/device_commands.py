"""Durable commands ("proxied RPC"): a component queues a command for a device with a time to live;
the cloud delivers it whenever the device is online, keeps the device's first result, and expires it
when the device stays away past its TTL.

Lifecycle (every transition is a pure function of the record and `now`, the cloud's clock):
QUEUED -> DELIVERED (published to `{id}/commands/{cmd}`, possibly again) -> SUCCEEDED | FAILED (the
device's first result); QUEUED | DELIVERED -> EXPIRED (at `expiresAt`) | CANCELLED. The last four
are final: a later result, a second result or a cancel changes nothing.

Also here: request validation (400/413), the message a device receives and the result it sends,
the per-device index that lets `sync` find a device's pending commands without a scan, and the due
shards that tell the periodic sweep which devices to look at.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from services.domain.errors import bad_request, conflict, too_large
from services.domain.json_values import JsonObject, json_equal
from services.domain.topics import channel_device

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""Command names and ids: 1..64 of letters, digits and `_ . -` (safe as an MQTT topic level)."""
RESERVED_IDS = frozenset({"sync"})
"""`{id}/commands/sync` is the device's sync request, so no command may be called that."""
MAX_ARGS_BYTES = 4096
MAX_RESULT_BYTES = 16384
MAX_REASON_CHARS = 1024
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_TTL_SECONDS = 3600
DUE_SHARDS = 64
_REQUEST_FIELDS = ("id", "name", "args", "ttlSeconds")


class CommandStatus(StrEnum):
    QUEUED = "QUEUED"
    """Stored, not yet handed to the broker for the device."""
    DELIVERED = "DELIVERED"
    """Published to the device's topic at least once (the broker took it; the device may be away)."""
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"

    @property
    def pending(self) -> bool:
        return self in (CommandStatus.QUEUED, CommandStatus.DELIVERED)


_PROGRESS = {CommandStatus.QUEUED: 0, CommandStatus.DELIVERED: 1}
"""How far a status is along the lifecycle (final statuses: 2); statuses only move forward."""


def _progress(status: CommandStatus) -> int:
    return _PROGRESS.get(status, 2)


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (how args and results are measured)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# -- the record ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCommand:
    """One command for one device and what became of it (times are unix seconds, cloud clock)."""

    id: str
    device_id: str
    name: str
    args: JsonObject
    created_at: float
    expires_at: float
    status: CommandStatus = CommandStatus.QUEUED
    result: JsonObject | None = None
    reason: str | None = None
    deliveries: int = 0
    """How often the command was published to the device's topic."""
    completed_at: float | None = None
    """When it reached a final status (for EXPIRED: `expires_at`)."""

    @property
    def pending(self) -> bool:
        return self.status.pending

    def due(self, now: float) -> bool:
        """Pending, but its time is up: the next look at it expires it."""
        return self.pending and now >= self.expires_at

    def message(self) -> JsonObject:
        """What the device receives on `{id}/commands/{cmd}` (raw JSON, QoS 1)."""
        return {"id": self.id, "name": self.name, "args": self.args, "expiresAt": self.expires_at}

    def to_json(self) -> JsonObject:
        """The stored form, which is also what the REST API shows."""
        return {
            "id": self.id,
            "deviceId": self.device_id,
            "name": self.name,
            "args": self.args,
            "status": self.status.value,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "deliveries": self.deliveries,
            "result": self.result,
            "reason": self.reason,
            "completedAt": self.completed_at,
        }

    @staticmethod
    def from_json(value: JsonObject) -> DeviceCommand:
        return DeviceCommand(
            id=str(value["id"]),
            device_id=str(value["deviceId"]),
            name=str(value["name"]),
            args=dict(value.get("args") or {}),
            created_at=float(value["createdAt"]),
            expires_at=float(value["expiresAt"]),
            status=CommandStatus(value.get("status", CommandStatus.QUEUED)),
            result=value.get("result"),
            reason=value.get("reason"),
            deliveries=int(value.get("deliveries", 0)),
            completed_at=None if value.get("completedAt") is None else float(value["completedAt"]),
        )


# -- the request a component sends ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandRequest:
    name: str
    args: JsonObject
    ttl_seconds: float
    id: str | None = None
    """A caller-chosen id makes creation idempotent: the same request again returns the command."""


def valid_command_id(value: str) -> bool:
    return bool(NAME_PATTERN.match(value)) and value not in RESERVED_IDS


def parse_request(body: Any) -> CommandRequest:
    """A `CommandRequest` from a decoded body `{name, args?, ttlSeconds?, id?}`: 400 naming what is
    wrong, 413 when `args` encode to more than `MAX_ARGS_BYTES`."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object: {name, args, ttlSeconds}")
    unknown = sorted(set(body) - set(_REQUEST_FIELDS))
    if unknown:
        raise bad_request(f"unknown field(s) {', '.join(unknown)}; a command has {', '.join(_REQUEST_FIELDS)}")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise bad_request("name must be 1..64 of letters, digits and _ . -")
    command_id = body.get("id")
    if command_id is not None and (not isinstance(command_id, str) or not valid_command_id(command_id)):
        raise bad_request("id must be 1..64 of letters, digits and _ . - (and not `sync`)")
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise bad_request("args must be a JSON object")
    ttl = body.get("ttlSeconds", DEFAULT_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl):
        raise bad_request("ttlSeconds must be a number of seconds")
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise bad_request(f"ttlSeconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} (7 days), got {ttl}")
    size = encoded_size(args)
    if size > MAX_ARGS_BYTES:
        raise too_large(f"args are {size} bytes as JSON; at most {MAX_ARGS_BYTES} are allowed")
    return CommandRequest(name=name, args=args, ttl_seconds=float(ttl), id=command_id)


def new_command(device_id: str, request: CommandRequest, command_id: str, now: float) -> DeviceCommand:
    """A QUEUED command for `device_id`; `command_id` is used when the request names none."""
    return DeviceCommand(
        id=request.id or command_id,
        device_id=device_id,
        name=request.name,
        args=request.args,
        created_at=now,
        expires_at=now + request.ttl_seconds,
    )


def same_request(command: DeviceCommand, request: CommandRequest) -> bool:
    """Whether `request` asks for what `command` is (an idempotent retry), TTL aside."""
    return command.name == request.name and json_equal(command.args, request.args)


# -- the result a device sends ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandResult:
    status: CommandStatus
    """SUCCEEDED or FAILED."""
    result: JsonObject | None = None
    reason: str | None = None


def parse_result(payload: Any) -> CommandResult:
    """A device's `{status, result?, reason?}` (other fields are ignored); malformed: 400. A result
    larger than `MAX_RESULT_BYTES` is kept as FAILED with a reason saying so; long reasons are cut."""
    if not isinstance(payload, dict):
        raise bad_request("a command result must be a JSON object {status, result?, reason?}")
    status = payload.get("status")
    if status not in (CommandStatus.SUCCEEDED, CommandStatus.FAILED):
        raise bad_request("status must be SUCCEEDED or FAILED")
    result = payload.get("result")
    if result is not None and not isinstance(result, dict):
        raise bad_request("result must be a JSON object")
    reason = payload.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_request("reason must be a string")
    if result is not None and (size := encoded_size(result)) > MAX_RESULT_BYTES:
        return CommandResult(
            CommandStatus.FAILED, None, f"the device's result was {size} bytes; at most {MAX_RESULT_BYTES} are kept"
        )
    return CommandResult(CommandStatus(status), result, None if reason is None else reason[:MAX_REASON_CHARS])


def result_topic_command(topic: str) -> tuple[str, str] | None:
    """`(device_id, command_id)` of a result topic `{id}/commands/{cmd}/result`, else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[1] != "commands" or parts[3] != "result":
        return None
    device_id = channel_device(topic)
    if device_id is None or not valid_command_id(parts[2]):
        return None
    return device_id, parts[2]


def sync_topic_device(topic: str) -> str | None:
    """The device id of a sync topic `{id}/commands/sync`, else None."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[1:] != ["commands", "sync"]:
        return None
    return channel_device(topic)


# -- transitions ------------------------------------------------------------------------------------


def expire(command: DeviceCommand, now: float) -> DeviceCommand:
    """EXPIRED (completed at `expires_at`) when pending and due; otherwise unchanged."""
    if not command.due(now):
        return command
    return replace(command, status=CommandStatus.EXPIRED, completed_at=command.expires_at)


def deliver(command: DeviceCommand, now: float) -> DeviceCommand:
    """Count one more publish to the device: a pending command becomes DELIVERED; a due one EXPIRED
    instead; a final one is unchanged."""
    command = expire(command, now)
    if not command.pending:
        return command
    return replace(command, status=CommandStatus.DELIVERED, deliveries=command.deliveries + 1)


def complete(command: DeviceCommand, result: CommandResult, now: float) -> DeviceCommand:
    """Take the device's result: the first one wins. A result for a due command is refused (the
    command EXPIRES: the cloud's clock decides), one for a final command is ignored (unchanged)."""
    command = expire(command, now)
    if not command.pending:
        return command
    return replace(command, status=result.status, result=result.result, reason=result.reason, completed_at=now)


def cancel(command: DeviceCommand, now: float) -> DeviceCommand:
    """CANCELLED; only a QUEUED or DELIVERED command that is not due can be (409 otherwise). The
    device is not told: it may still run a copy it has, and its result is then ignored."""
    current = expire(command, now)
    if not current.pending:
        raise conflict(
            f"command {command.id} is {current.status.value}; only QUEUED or DELIVERED commands can be cancelled"
        )
    return replace(current, status=CommandStatus.CANCELLED, reason="cancelled", completed_at=now)


def retention_ttl(command: DeviceCommand, now: float, retention: float) -> int | None:
    """Seconds the store keeps a final record (`retention` after completion, at least 1); None
    while pending (pending records never expire from the store)."""
    if command.pending or command.completed_at is None:
        return None
    return max(1, math.ceil(command.completed_at + retention - now))


# -- the per-device index ---------------------------------------------------------------------------


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


# -- the due shards -----------------------------------------------------------------------------------


def due_shard(device_id: str) -> int:
    """The due shard a device belongs to (stable across processes and restarts)."""
    return zlib.crc32(device_id.encode()) % DUE_SHARDS


@dataclass(frozen=True, slots=True)
class DueEntry:
    at: float
    token: str
    """Changes with every schedule, so a sweep can tell whether someone scheduled meanwhile."""


@dataclass(frozen=True, slots=True)
class DueShard:
    """When the sweep should next look at each device of one shard."""

    devices: Mapping[str, DueEntry] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {"devices": {d: [e.at, e.token] for d, e in self.devices.items()}}

    @staticmethod
    def from_json(value: JsonObject | None) -> DueShard:
        if not value:
            return DueShard()
        return DueShard({d: DueEntry(float(at), str(token)) for d, (at, token) in value.get("devices", {}).items()})

    def scheduled(self, device_id: str, at: float, token: str) -> DueShard:
        """Look at `device_id` by `at` (or earlier, if it already was), under a fresh token."""
        known = self.devices.get(device_id)
        earliest = at if known is None else min(known.at, at)
        return DueShard({**self.devices, device_id: DueEntry(earliest, token)})

    def rescheduled(self, device_id: str, seen_token: str, at: float | None, token: str) -> DueShard:
        """After a sweep looked at a device: its next time (`None`: nothing pending), but only if
        nobody scheduled it since the sweep read `seen_token`; otherwise unchanged."""
        known = self.devices.get(device_id)
        if known is None or known.token != seen_token:
            return self
        devices = dict(self.devices)
        if at is None:
            del devices[device_id]
        else:
            devices[device_id] = DueEntry(at, token)
        return DueShard(devices)

    def due(self, now: float) -> list[tuple[float, str, str]]:
        """`(at, device_id, token)` of the devices due by `now`, earliest first."""
        return sorted((e.at, d, e.token) for d, e in self.devices.items() if e.at <= now)


# -- state keys ----------------------------------------------------------------------------------------


def record_key(device_id: str, command_id: str) -> str:
    return f"command~{device_id}~{command_id}"


def index_key(device_id: str) -> str:
    return f"commands~{device_id}"


def due_shard_key(shard: int) -> str:
    return f"commands-due~{shard}"
