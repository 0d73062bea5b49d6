"""The device agent's local REST API (on the device, for apps beside it): post events, read status."""

from __future__ import annotations

from pydantic import Field

from services.contracts.api import ApiModel
from services.domain.json_values import JsonObject

MAX_EVENTS_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 1024 * 1024
"""The largest request body the agent reads (its local API and its sidecar's deliveries alike):
1,000 events of ≈ 1 KiB each; a larger one is a 413 before it is read into memory."""


class LocalEvent(ApiModel):
    """One event an app on the device posts to `POST /v1/events`; `ts` defaults to now."""

    type: str = Field(min_length=1, max_length=64)
    data: JsonObject = Field(default_factory=dict)
    ts: float | None = None


class QueuedEvents(ApiModel):
    """The sequence numbers the posted events got, in order."""

    seqs: list[int]


class OutboxStatus(ApiModel):
    pending: int
    """Events stored and not yet acknowledged by the cloud."""
    dropped: int
    """Events dropped unsent because the outbox was full."""


class AgentStatus(ApiModel):
    """`GET /v1/status`: whether the cloud is reachable, what the agent knows of its twin, its outbox."""

    device_id: str
    connected: bool
    view: JsonObject
    """The desired and reported state the agent has taken, and the twin version it is from."""
    outbox: OutboxStatus


class ConsentBody(ApiModel):
    """`POST /v1/software/consent`: answer the update waiting for local consent (`artifact`, or
    whichever waits): `accept` installs it, `false` refuses it (the attempt fails: `consent`)."""

    artifact: str | None = None
    accept: bool = True


class ConsentAnswer(ApiModel):
    artifact: str
    accepted: bool


class SoftwareStatus(ApiModel):
    """`GET /v1/software`: what the software handler reports (status, running version, attempt)."""

    software: JsonObject | None
    require_consent: bool
