"""Internal event contracts (versioned), shared by every app that publishes or reads them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.device_events import DeviceEvent
from services.contracts.wire import WireEncoding
from services.domain.json_values import JsonObject

TWIN_CHANGED_TOPIC = "twin.changed"
DELTA_REQUESTED_TOPIC = "twin.delta-requested"
DEVICE_EVENTS_TOPIC = "device.events"
"""Every accepted device event, for downstream storage; consumers order and de-duplicate by
(device_id, seq) (bulk publish sends a batch's entries in parallel)."""


class TwinChanged(BaseModel):
    """A twin was changed: its document before and after (None when absent), past tense."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    device_id: str
    shadow: str = ""
    version: int
    timestamp: int
    cause: Literal["update", "delete", "desired", "tags", "configuration"]
    """What changed it: a device `update`/`delete`, a REST `desired` or `tags` patch (or a REST
    create/delete: `update`/`delete`), or a batch write: `desired` when its desired changed,
    `configuration` when only configuration marks or tags did (nothing for the device then)."""
    client_token: str | None = None
    previous: dict[str, Any] | None = None
    """`TwinDocument.snapshot()` before the change."""
    current: dict[str, Any] | None = None
    """`TwinDocument.snapshot()` after the change; None after a delete."""
    wire: WireEncoding = WireEncoding.JSON
    """The device's wire encoding (`TwinDocument.wire`): what `/delta` and `/documents` go out in.
    Added without a schema bump: events without it mean JSON."""
    tags: JsonObject = Field(default_factory=dict)
    """The current document's tags (empty after a delete); additive, like `wire`."""
    configurations: JsonObject = Field(default_factory=dict)
    """The current document's configuration marks (empty after a delete); additive."""
    traceparent: str | None = None
    """W3C Trace Context of the request that made the change (traces span the apps); additive."""


class DeltaRequested(BaseModel):
    """A device asked for its document (`get`): the delta app re-sends the full delta."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    device_id: str
    shadow: str = ""
    version: int
    client_token: str | None = None
    current: dict[str, Any]
    wire: WireEncoding = WireEncoding.JSON
    """The encoding of the `get` (the device's, if the request was empty)."""


class DeviceEventRecorded(BaseModel):
    """A device event the cloud took, past tense: published on `DEVICE_EVENTS_TOPIC` and written to
    the sinks. Taken once per (device_id, seq), but a crash or a retry may deliver it again
    downstream, and entries of one batch may arrive in any order: consumers de-duplicate and order
    by (device_id, seq)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    device_id: str
    seq: int = Field(ge=1)
    ts: float
    type: str
    data: JsonObject = Field(default_factory=dict)

    @staticmethod
    def of(device_id: str, event: DeviceEvent) -> DeviceEventRecorded:
        return DeviceEventRecorded(device_id=device_id, seq=event.seq, ts=event.ts, type=event.type, data=event.data)
