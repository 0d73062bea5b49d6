"""delta: turns twin events into `/update/delta` and `/update/documents` on the device broker.

Receives `twin.changed` and `twin.delta-requested` in bulk, plans with `plan_fanout` (coalesced
per twin, stale versions dropped) and publishes with bounded concurrency, each twin's messages in
its device's wire encoding (carried by the events). A delta that carries a software reference
gets a download URL minted for its device as it is sent (late binding).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from prometheus_client import Counter

from services.contracts.events import DELTA_REQUESTED_TOPIC, TWIN_CHANGED_TOPIC, DeltaRequested, TwinChanged
from services.contracts.topics import Operation, Reply, TwinAddress
from services.contracts.wire import WireEncoding
from services.domain.software.twin_key import SOFTWARE_KEY, bind_download_url, desired_artifact, download_url
from services.domain.twin.fanout import plan_fanout
from services.platform.cloudevents import handle_bulk, subscription
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import DELTA_APP, DOWNLOAD_URL_KEY, INTERNAL_PUBSUB
from services.platform.settings import get_settings
from services.platform.sidecar import Sidecar, gather_bounded

log = structlog.get_logger()
PUBLISHED = Counter("delta_published_total", "Messages sent to devices", ["kind"])


class Fanout:
    """Holds the versions already sent per twin (so stale events are dropped) and publishes."""

    def __init__(self, sidecar: Sidecar, concurrency: int, firmware_url: str = "", url_ttl: int = 3600) -> None:
        self._sidecar = sidecar
        self._limit = asyncio.Semaphore(concurrency)
        self._sent: dict[TwinAddress, int] = {}
        self._lock = asyncio.Lock()
        self._firmware_url = firmware_url
        self._url_ttl = url_ttl
        self._url_key: bytes | None = None

    async def _bind(self, address: TwinAddress, delta: dict[str, Any]) -> dict[str, Any]:
        """Late binding: a delta with a software reference gets a download URL minted now, for
        this device (the key is read from the secret store once, when first needed)."""
        if not self._firmware_url or desired_artifact((delta.get("state") or {}).get(SOFTWARE_KEY)) is None:
            return delta
        if self._url_key is None:
            self._url_key = (await self._sidecar.secret(DOWNLOAD_URL_KEY)).encode()
        key, base = self._url_key, self._firmware_url
        return bind_download_url(
            delta, address.device_id, time.time(), self._url_ttl, lambda grant: download_url(base, key, grant)
        )

    async def handle(self, events: list[TwinChanged | DeltaRequested]) -> None:
        """Publish what `events` call for; versions count as sent only once all were published.
        Batches run one at a time so a newer delta is never overtaken by an older one."""
        profile = get_settings().topics()
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
            results = await gather_bounded(
                self._limit, [self._sidecar.publish_device(t, p, w) for t, p, w, _ in messages]
            )
            for (*_, kind), result in zip(messages, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                PUBLISHED.labels(kind).inc()
            self._sent = sent


def device_encodings(events: list[TwinChanged | DeltaRequested]) -> dict[TwinAddress, WireEncoding]:
    """Each twin's device encoding as of its newest event in the batch (the later one on a tie: a
    `get` in a new encoding is answered in it even when its version equals the last change's)."""
    newest: dict[TwinAddress, tuple[int, WireEncoding]] = {}
    for event in events:
        address = TwinAddress(event.device_id, event.shadow)
        seen = newest.get(address)
        if seen is None or event.version >= seen[0]:
            newest[address] = (event.version, event.wire)
    return {address: wire for address, (_, wire) in newest.items()}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with running_sidecar(DELTA_APP, Sidecar(*settings.sidecar_args())) as sidecar:
        app.state.fanout = Fanout(
            sidecar, settings.publish_concurrency, settings.firmware_public_url, settings.download_url_ttl
        )
        yield


app = FastAPI(title="Twinfleet delta", version="0.1.0", lifespan=lifespan)
install_common(app)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    return [
        subscription(INTERNAL_PUBSUB, TWIN_CHANGED_TOPIC, "/events/twin-changed", bulk=500, bulk_wait_ms=5),
        subscription(INTERNAL_PUBSUB, DELTA_REQUESTED_TOPIC, "/events/delta-requested", bulk=500, bulk_wait_ms=5),
    ]


async def _bulk(request: Request, model: type[TwinChanged] | type[DeltaRequested]) -> dict[str, Any]:
    return await handle_bulk(await request.json(), model, request.app.state.fanout.handle)


@app.post("/events/twin-changed", include_in_schema=False)
async def twin_changed(request: Request) -> dict[str, Any]:
    return await _bulk(request, TwinChanged)


@app.post("/events/delta-requested", include_in_schema=False)
async def delta_requested(request: Request) -> dict[str, Any]:
    return await _bulk(request, DeltaRequested)
