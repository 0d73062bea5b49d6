"""events: device event batches (`{id}/events`) in, each event exactly once and in order per device
to the sinks (the internal `device.events` topic and an example output binding).

Batches may repeat and arrive out of order; `accept_batch` de-duplicates and orders them per
device, and a batch past a gap is answered RETRY so daprd redelivers it once the gap is filled.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.clients.twin_store import twin_store_client
from services.contracts.topics import EVENTS_FILTER, channel_device
from services.events.access import RULES
from services.events.api import Ingest, router
from services.events.ingest import EventIngest, Outcome
from services.events.metrics import BATCHES
from services.events.settings import get_events_settings
from services.events.sinks import BatchFileSink, EventSink, EventsSidecar, TopicSink
from services.platform.auth import DeviceTags
from services.platform.cloudevents import event_payload, shared, subscription
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running_sidecar
from services.platform.names import DEVICE_BROKER, EVENTS_APP, EVENTS_SINK

DEVICE_EVENTS_ROUTE = "/device-events"


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_events_settings()
    async with (
        running_sidecar(EVENTS_APP, EventsSidecar(*settings.sidecar_args())) as sidecar,
        twin_store_client(settings) as twins,
    ):
        register_platform(registry, sidecar)
        registry.register_value(DeviceTags, DeviceTags(twins.tags))
        sinks: list[EventSink] = [
            TopicSink(sidecar),
            BatchFileSink(sidecar, EVENTS_SINK, settings.events_sink_name_key),
        ]
        registry.register_value(EventIngest, EventIngest(sidecar, sinks, settings.events_gap_timeout))
        yield


app = FastAPI(title="Twinfleet events", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, EVENTS_APP)
app.include_router(router)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Every device's `{id}/events`, as a shared subscription so replicas split the load."""
    return [subscription(DEVICE_BROKER, shared(EVENTS_APP, EVENTS_FILTER), DEVICE_EVENTS_ROUTE, raw=True)]


@app.post(DEVICE_EVENTS_ROUTE, include_in_schema=False)
async def device_events(request: Request, ingest: Ingest) -> JSONResponse:
    """One batch delivered by daprd (raw payload in a CloudEvent); the device id is the topic's."""
    try:
        event = await request.json()
        device_id = channel_device(str(event.get("topic", "")))
        payload = event_payload(event)
    except (ValueError, AttributeError):
        device_id = None
    if device_id is None:
        BATCHES.labels("dropped").inc()
        return JSONResponse({"status": Outcome.DROP})
    return JSONResponse({"status": await ingest.handle(device_id, payload)})
