"""delta: turns twin events into `/update/delta` and `/update/documents` on the device broker
(on the app's own connection to it; the events come through the sidecar).

Receives `twin.changed` and `twin.delta-requested` in bulk and hands them to the `Fanout` worker.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI, Request

from services.clients.base import app_url
from services.clients.credentials import service_auth
from services.clients.firmware import FirmwareClient
from services.contracts.events import DELTA_REQUESTED_TOPIC, TWIN_CHANGED_TOPIC, DeltaRequested, TwinChanged
from services.delta.access import RULES
from services.delta.fanout import Fanout
from services.delta.settings import get_delta_settings
from services.platform.cloudevents import handle_bulk, subscription
from services.platform.device_broker import DeviceBroker
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running, running_sidecar
from services.platform.names import DELTA_APP, DEVICE_BROKER_URL_KEY, FIRMWARE_APP, INTERNAL_PUBSUB
from services.platform.sidecar import Sidecar

TWIN_CHANGED_ROUTE = "/events/twin-changed"
DELTA_REQUESTED_ROUTE = "/events/delta-requested"


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_delta_settings()
    async with (
        running_sidecar(DELTA_APP, Sidecar(*settings.sidecar_args())) as sidecar,
        FirmwareClient(
            app_url(FIRMWARE_APP, settings.dapr_http_port, settings.firmware_url),
            headers=settings.sidecar_headers(),
            auth=service_auth(settings),
        ) as firmware,
    ):
        broker = DeviceBroker(lambda: sidecar.secret(DEVICE_BROKER_URL_KEY), settings.instance)
        urls = firmware if settings.download_urls else None
        fanout = Fanout(
            sidecar, broker, settings.topics(), settings.publish_concurrency, urls, settings.download_url_ttl
        )
        register_platform(registry, sidecar, state=False)
        registry.register_value(Fanout, fanout)
        registry.register_value(DeviceBroker, broker, ping=DeviceBroker.ping)
        async with running(broker.run()):
            yield


app = FastAPI(title="Twinfleet delta", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, DELTA_APP)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    return [
        subscription(INTERNAL_PUBSUB, TWIN_CHANGED_TOPIC, TWIN_CHANGED_ROUTE, bulk=500, bulk_wait_ms=1),
        subscription(INTERNAL_PUBSUB, DELTA_REQUESTED_TOPIC, DELTA_REQUESTED_ROUTE, bulk=500, bulk_wait_ms=5),
    ]


async def _bulk(
    request: Request, services: svcs.Container, model: type[TwinChanged] | type[DeltaRequested]
) -> dict[str, Any]:
    fanout = await services.aget(Fanout)
    return await handle_bulk(await request.body(), model, fanout.handle)


@app.post(TWIN_CHANGED_ROUTE, include_in_schema=False)
async def twin_changed(request: Request, services: svcs.fastapi.DepContainer) -> dict[str, Any]:
    return await _bulk(request, services, TwinChanged)


@app.post(DELTA_REQUESTED_ROUTE, include_in_schema=False)
async def delta_requested(request: Request, services: svcs.fastapi.DepContainer) -> dict[str, Any]:
    return await _bulk(request, services, DeltaRequested)
