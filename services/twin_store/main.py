"""twin-store: the source of truth for twins (device contract over MQTT + REST for components)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from services.domain.twin.commands import DeviceRequest
from services.platform.cloudevents import event_payload, shared, subscription
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import DEVICE_BROKER, SHARED_SUBSCRIPTION_GROUP, TWIN_STORE_APP
from services.platform.settings import get_settings
from services.platform.sidecar import Sidecar
from services.twin_store.api import router
from services.twin_store.writer import TwinWriter


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with running_sidecar(TWIN_STORE_APP, Sidecar(*settings.sidecar_args())) as sidecar:
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


api = FastAPI(title="Twinfleet twin-store", version="0.1.0", lifespan=lifespan)
install_common(api)
api.include_router(router)


@api.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Device request topics, as shared subscriptions so replicas split the load. Filters that
    begin with `$` (the AWS profile) are subscribed plainly: Mosquitto 2.0 delivers nothing to a
    shared subscription on `$`-topics, so that profile runs one twin-store replica per broker."""
    profile = get_settings().topics()
    return [
        subscription(DEVICE_BROKER, shared(SHARED_SUBSCRIPTION_GROUP, f), "/device-requests", raw=True)
        for f in profile.subscriptions()
    ]


DEVICE_REQUESTS_ROUTE = "/device-requests"


async def handle_device_request(event: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """One device message delivered by daprd (raw payload in a CloudEvent): status and answer."""
    parsed = get_settings().topics().parse(str(event.get("topic", "")))
    if parsed is None:
        return 200, {"status": "DROP"}
    address, op = parsed
    try:
        await api.state.writer.submit(DeviceRequest(address, op, event_payload(event)))
    except Exception as error:  # noqa: BLE001 - daprd redelivers; the replay path keeps it exactly-once
        return 500, {"status": "RETRY", "message": str(error)}
    return 200, {"status": "SUCCESS"}


class DeviceRequestFastPath:
    """Plain ASGI for daprd's per-message deliveries, the hot path: FastAPI's routing and
    middleware took a quarter of the app's CPU there under load. Everything else goes to FastAPI."""

    def __init__(self, inner: FastAPI) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DEVICE_REQUESTS_ROUTE or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            status, answer = await handle_device_request(json.loads(body))
        except ValueError:
            status, answer = 200, {"status": "DROP"}
        payload = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


app = DeviceRequestFastPath(api)
