"""Where accepted device events go. Every sink must be idempotent: the same events for the same
device may be handed over again (a take that stopped after the cursor write and before every sink
answered is handed over once more), always as the same range, and must not end up twice
downstream.

- `TopicSink`: each event as a `DeviceEventRecorded` on the internal pub/sub (`device.events`);
  consumers de-duplicate by (device_id, seq).
- `BatchFileSink`: one object per accepted batch through a Dapr output binding (local files, Azure
  Blob, S3, ...), named by the batch's sequence range, so a rewrite replaces it with the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.contracts.device_events import DeviceEvent
from services.contracts.events import DEVICE_EVENTS_TOPIC, DeviceEventRecorded
from services.platform.sidecar import Sidecar


class EventSink(Protocol):
    async def deliver(self, device_id: str, events: Sequence[DeviceEvent]) -> None:
        """Store or forward `events` (consecutive, in order); raise if they were not taken."""


class EventsSidecar(Sidecar):
    """The shared sidecar client plus output bindings."""

    async def create_object(self, binding: str, metadata: dict[str, str], data: bytes) -> None:
        await self.call("invoke_binding", binding, "create", data, binding_metadata=metadata)


class TopicSink:
    """Bulk-publishes the events to `device.events` (entries may arrive in any order)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar

    async def deliver(self, device_id: str, events: Sequence[DeviceEvent]) -> None:
        records = [DeviceEventRecorded.of(device_id, event).model_dump_json() for event in events]
        await self._sidecar.publish_events(DEVICE_EVENTS_TOPIC, records)


class BatchFileSink:
    """One object per batch, `{device}/{first_seq:012d}-{last_seq:012d}.json`, JSON lines."""

    def __init__(self, sidecar: EventsSidecar, binding: str, name_key: str) -> None:
        self._sidecar = sidecar
        self._binding = binding
        self._name_key = name_key

    async def deliver(self, device_id: str, events: Sequence[DeviceEvent]) -> None:
        await self._sidecar.create_object(
            self._binding, {self._name_key: batch_object_name(device_id, events)}, batch_lines(device_id, events)
        )


def batch_object_name(device_id: str, events: Sequence[DeviceEvent]) -> str:
    """`{device}/{first:012d}-{last:012d}.json`; a device id starting with `.` (valid, but `.` and
    `..` are path steps) has that dot written as `%2E`, which no device id contains."""
    folder = "%2E" + device_id[1:] if device_id.startswith(".") else device_id
    return f"{folder}/{events[0].seq:012d}-{events[-1].seq:012d}.json"


def batch_lines(device_id: str, events: Sequence[DeviceEvent]) -> bytes:
    """The events as JSON lines of `DeviceEventRecorded`, the same bytes every time."""
    return b"".join(DeviceEventRecorded.of(device_id, event).model_dump_json().encode() + b"\n" for event in events)
