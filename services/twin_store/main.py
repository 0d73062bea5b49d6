"""twin-store: the source of truth for twins (device contract over MQTT + REST for components)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.platform.cloudevents import event_payload, subscription
from services.platform.http import install_common
from services.platform.logging import configure_logging
from services.platform.names import DEVICE_BROKER, SHARED_SUBSCRIPTION_GROUP, TWIN_STORE_APP
from services.platform.settings import get_settings
from services.platform.sidecar import Sidecar
from services.twin_store.api import router
from services.twin_store.commands import DeviceRequest
from services.twin_store.ingest import TwinWriter


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(TWIN_STORE_APP)
    sidecar = Sidecar(*settings.sidecar_args())
    connecting = asyncio.create_task(sidecar.connect())
    writer = TwinWriter(
        sidecar,
        settings.topics(),
        settings.limits(),
        settings.batch_max,
        settings.batch_wait_ms,
        settings.publish_concurrency,
    )
    writer.start()
    app.state.sidecar, app.state.writer = sidecar, writer
    yield
    await writer.stop()
    connecting.cancel()
    await sidecar.close()


app = FastAPI(title="Twinfleet twin-store", version="0.1.0", lifespan=lifespan)
install_common(app)
app.include_router(router)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Device request topics, as shared subscriptions so replicas split the load. Filters that
    begin with `$` (the AWS profile) are subscribed plainly: Mosquitto 2.0 delivers nothing to a
    shared subscription on `$`-topics, so that profile runs one twin-store replica per broker."""
    profile = get_settings().topics()
    return [subscription(DEVICE_BROKER, _shared(f), "/device-requests", raw=True) for f in profile.subscriptions()]


def _shared(topic_filter: str) -> str:
    return topic_filter if topic_filter.startswith("$") else f"$share/{SHARED_SUBSCRIPTION_GROUP}/{topic_filter}"


@app.post("/device-requests", include_in_schema=False)
async def device_requests(request: Request) -> JSONResponse:
    """One device message, delivered by daprd from the device broker (raw payload)."""
    event = await request.json()
    parsed = get_settings().topics().parse(str(event.get("topic", "")))
    if parsed is None:
        return JSONResponse({"status": "DROP"})
    address, op = parsed
    try:
        await request.app.state.writer.submit(DeviceRequest(address, op, event_payload(event)))
    except Exception as error:  # noqa: BLE001 - daprd redelivers; the replay path keeps it exactly-once
        return JSONResponse({"status": "RETRY", "message": str(error)}, status_code=500)
    return JSONResponse({"status": "SUCCESS"})
