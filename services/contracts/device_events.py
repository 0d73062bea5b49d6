"""Device events (telemetry, alarms, …) on the wire: a batch of consecutively numbered events from a
device's outbox (`{id}/events`, JSON or CBOR; the device id comes from the topic).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts.api import ApiModel
from services.domain.json_values import JsonObject

MAX_BATCH_EVENTS = 500


class DeviceEvent(BaseModel):
    """One event: its sequence number on the device, when it happened, what kind, its data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    ts: float
    """Seconds since the epoch, device clock."""
    type: str = Field(min_length=1, max_length=64)
    data: JsonObject = Field(default_factory=dict)


class EventBatch(BaseModel):
    """Consecutive events of one device (the device id comes from the topic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[DeviceEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)
    skipped_through: int = Field(default=0, ge=0)
    """The highest sequence number the device dropped unsent (outbox full); 0 when none."""

    @model_validator(mode="after")
    def _consecutive(self) -> EventBatch:
        first = self.events[0].seq
        if any(event.seq != first + i for i, event in enumerate(self.events)):
            raise ValueError("events must have consecutive sequence numbers")
        if self.skipped_through >= first:
            raise ValueError("skipped_through must be below the batch's first sequence number")
        return self

    @property
    def first(self) -> int:
        return self.events[0].seq

    @property
    def last(self) -> int:
        return self.events[-1].seq


class EventsAck(BaseModel):
    """The cloud's answer on `{id}/events/ack`: every event below `next_seq` is taken (or counted
    lost), so the device may purge them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    next_seq: int = Field(ge=1)


class EventCursorView(ApiModel):
    """`GET /v1/devices/{id}/events/cursor` (events app): how far the cloud has taken a device's
    events."""

    next_seq: int
    """The sequence number the cloud expects next from the device (all below were taken or lost)."""
    lost: int
    """Events the device dropped unsent (outbox full) or that never came within the gap timeout."""
