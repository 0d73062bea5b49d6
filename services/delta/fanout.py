"""The delta app's worker: plans each bulk of twin events with `plan_fanout` (coalesced per twin,
stale versions dropped) and publishes `/update/delta` and `/update/documents` with bounded
concurrency, each twin's messages in its device's wire encoding (carried by the events). A delta
that carries a software reference gets a download URL the firmware app mints for its device as it
is sent (late binding): the object store's own URL, or the app's HMAC URL for proxied stores."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from services.clients.base import ApiError
from services.clients.firmware import FirmwareClient
from services.contracts.events import DeltaRequested, TwinChanged
from services.contracts.firmware import UrlRequest
from services.contracts.topics import Operation, Reply, TopicProfile, TwinAddress
from services.contracts.wire import WireEncoding
from services.delta.metrics import FANOUT_LAG, PUBLISHED
from services.domain.software.twin_key import delta_artifact, with_download_url
from services.domain.twin.fanout import Outgoing, plan_fanout
from services.platform import tracing
from services.platform.device_broker import DevicePublisher
from services.platform.sidecar import Sidecar


class Fanout:
    """Holds the versions already sent per twin (so stale events are dropped) and publishes."""

    def __init__(
        self,
        sidecar: Sidecar,
        devices: DevicePublisher,
        profile: TopicProfile,
        concurrency: int,
        firmware: FirmwareClient | None = None,
        url_ttl: int = 3600,
    ) -> None:
        self._sidecar = sidecar
        self._devices = devices
        self._profile = profile
        self._chunk = concurrency
        self._sent: dict[TwinAddress, int] = {}
        self._lock = asyncio.Lock()
        self._firmware = firmware
        self._url_ttl = url_ttl

    async def _bind(self, address: TwinAddress, delta: dict[str, Any]) -> dict[str, Any]:
        """Late binding: a delta with a software reference gets a download URL minted now, for
        this device. A reference the firmware app cannot mint for (not released, deleted) goes
        out without one: the device's own checks refuse it and say why."""
        artifact = delta_artifact(delta)
        if self._firmware is None or artifact is None:
            return delta
        try:
            minted = await self._firmware.mint_url(artifact, UrlRequest(device_id=address.device_id, ttl=self._url_ttl))
        except ApiError as error:
            if error.status not in (400, 404):
                raise
            return delta
        return with_download_url(delta, minted.url)

    async def handle(self, events: Sequence[TwinChanged | DeltaRequested]) -> None:
        """Publish what `events` call for; versions count as sent only once all were published.
        Batches run one at a time so a newer delta is never overtaken by an older one."""
        profile = self._profile
        async with self._lock:
            outgoing, sent = plan_fanout(events, self._sent)
            wires = device_encodings(events)
            messages: list[tuple[str, dict[str, Any], WireEncoding, str]] = []
            for out in outgoing:
                wire = wires.get(out.address, WireEncoding.JSON)
                if out.documents is not None:
                    topic = profile.reply_topic(out.address, Operation.UPDATE, Reply.DOCUMENTS)
                    messages.append((topic, out.documents, wire, "documents"))
                if out.delta is not None:
                    topic = profile.reply_topic(out.address, Operation.UPDATE, Reply.DELTA)
                    messages.append((topic, await self._bind(out.address, out.delta), wire, "delta"))
            traces = {
                TwinAddress(ev.device_id, ev.shadow): ev.traceparent
                for ev in events
                if isinstance(ev, TwinChanged) and ev.traceparent
            }
            parents = [traces.get(out.address) for out in outgoing for _ in range(_messages_of(out))]
            for start in range(0, len(messages), self._chunk):
                chunk = messages[start : start + self._chunk]
                with contextlib.ExitStack() as spans:
                    # each message in the trace of the change that caused it
                    for (topic, *_), parent in zip(chunk, parents[start : start + self._chunk], strict=True):
                        if parent is not None:
                            spans.enter_context(
                                tracing.span("delta publish", SpanKind.PRODUCER, parent=parent, topic=topic)
                            )
                    await self._devices.publish_devices([(t, p, w) for t, p, w, _ in chunk])
                for *_, kind in chunk:
                    PUBLISHED.labels(kind).inc()
            self._sent = sent
        now = time.time()
        for event in events:
            if isinstance(event, TwinChanged):
                FANOUT_LAG.observe(max(0.0, now - event.timestamp))


def _messages_of(out: Outgoing) -> int:
    return int(out.documents is not None) + int(out.delta is not None)


def device_encodings(events: Sequence[TwinChanged | DeltaRequested]) -> dict[TwinAddress, WireEncoding]:
    """Each twin's device encoding as of its newest event in the batch (the later one on a tie: a
    `get` in a new encoding is answered in it even when its version equals the last change's)."""
    newest: dict[TwinAddress, tuple[int, WireEncoding]] = {}
    for event in events:
        address = TwinAddress(event.device_id, event.shadow)
        seen = newest.get(address)
        if seen is None or event.version >= seen[0]:
            newest[address] = (event.version, event.wire)
    return {address: wire for address, (_, wire) in newest.items()}
