"""Durable commands on the wire: the message a device receives on `{id}/commands/{cmd}`, the result
it sends to `{id}/commands/{cmd}/result`, and the commands app's REST contract
(`/v1/devices/{id}/commands`). The commands app, the device agent, the CLI and the tests share them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from services.contracts.api import ApiModel
from services.domain.json_values import JsonObject

DEFAULT_TTL_SECONDS = 3600
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 7 * 24 * 3600
NAME = r"^[A-Za-z0-9_.-]{1,64}$"
"""Command names and ids: 1..64 of letters, digits and `_ . -` (safe as an MQTT topic level)."""


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


class CommandMessage(ApiModel):
    """What a device receives on `{id}/commands/{cmd}` (raw JSON, QoS 1); `expiresAt` in unix
    seconds, the cloud's clock: a device does not run a command past it."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    name: str
    args: JsonObject = Field(default_factory=dict)
    expires_at: float = 0.0


class CommandResultMessage(ApiModel):
    """What a device sends to `{id}/commands/{cmd}/result`: SUCCEEDED with an optional `result`
    object, or FAILED with a `reason`."""

    status: CommandStatus
    result: JsonObject | None = None
    reason: str | None = None

    def payload(self) -> JsonObject:
        return self.model_dump(mode="json", exclude_none=True)


class CommandBody(ApiModel):
    """`POST /v1/devices/{id}/commands`: what to run, with what, and how long it may wait. A
    caller-chosen `id` makes the create idempotent."""

    name: str = Field(pattern=NAME, description="what the device should do")
    args: JsonObject = Field(default_factory=dict, description="a JSON object, at most 4096 bytes encoded")
    ttl_seconds: float = Field(
        default=DEFAULT_TTL_SECONDS,
        ge=MIN_TTL_SECONDS,
        le=MAX_TTL_SECONDS,
        description="seconds the command may wait for the device; then it EXPIRES",
    )
    id: str | None = Field(default=None, description="optional caller-chosen id: makes the create idempotent")


class CommandRecord(ApiModel):
    """A command and what became of it, as the REST API shows it (times in unix seconds)."""

    id: str
    device_id: str
    name: str
    args: JsonObject
    status: CommandStatus
    created_at: float
    expires_at: float
    deliveries: int
    """How often the command was published to the device's topic."""
    result: JsonObject | None = None
    reason: str | None = None
    completed_at: float | None = None
