"""A durable command's record and its lifecycle (every transition a pure function of the record and
`now`, the cloud's clock): QUEUED -> DELIVERED (published to `{id}/commands/{cmd}`, possibly again)
-> SUCCEEDED | FAILED (the device's first result); QUEUED | DELIVERED -> EXPIRED (at `expiresAt`) |
CANCELLED. The last four are final: a later result, a second result or a cancel changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from services.contracts.commands import CommandMessage, CommandRecord, CommandResultMessage, CommandStatus
from services.domain.errors import conflict
from services.domain.json_values import JsonObject


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
        return CommandMessage(id=self.id, name=self.name, args=self.args, expires_at=self.expires_at).model_dump()

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

    def view(self) -> CommandRecord:
        """The command as the REST API shows it."""
        return CommandRecord.model_validate(self.to_json())

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


def complete(command: DeviceCommand, result: CommandResultMessage, now: float) -> DeviceCommand:
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


def record_key(device_id: str, command_id: str) -> str:
    return f"command~{device_id}~{command_id}"
