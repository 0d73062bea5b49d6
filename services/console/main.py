"""console: the operator's web dashboard and its backend (sign-in with the suite's identity, the
fleet index fed by `twin.changed`, live updates as server-sent events, forwarding of the pages'
calls to the apps with the caller's own credential)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

import svcs
from fastapi import FastAPI, Request

from services.clients.base import app_url
from services.clients.credentials import service_auth
from services.clients.twin_store import TwinStoreClient
from services.console.access import RULES
from services.console.api import Forwarder, router
from services.console.fleet import FleetView, LiveHub, RecentEvents
from services.console.session import SessionCookie
from services.console.settings import ConsoleSettings, get_console_settings
from services.contracts.events import DEVICE_EVENTS_TOPIC, TWIN_CHANGED_TOPIC, DeviceEventRecorded, TwinChanged
from services.platform.auth import ApiKeyVerifier, Authenticator, TokenVerifier
from services.platform.cloudevents import handle_bulk, subscription
from services.platform.http import install_common, provided
from services.platform.lifecycle import register_platform, running, running_sidecar
from services.platform.names import AUTH_STORE, CONSOLE_APP, INTERNAL_PUBSUB, TWIN_STORE_APP
from services.platform.sidecar import Sidecar
from services.platform.state import StateRepository

TWIN_CHANGED_ROUTE = "/events/twin-changed"
DEVICE_EVENTS_ROUTE = "/events/device-events"


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_console_settings()
    twins_url = app_url(TWIN_STORE_APP, settings.dapr_http_port, settings.console_apps.get(TWIN_STORE_APP, ""))
    twins = TwinStoreClient(twins_url, timeout=120, headers=settings.sidecar_headers(), auth=service_auth(settings))
    async with running_sidecar(CONSOLE_APP, Sidecar(*settings.sidecar_args())) as sidecar, twins:
        register_platform(registry, sidecar, state=False)
        view = FleetView(twins, LiveHub(settings.console_live_queue), settings.console_scan_page)
        keys = ApiKeyVerifier(StateRepository(sidecar, store=AUTH_STORE))
        forwarder = Forwarder(settings)
        registry.register_value(FleetView, view)
        registry.register_value(RecentEvents, RecentEvents())
        registry.register_value(ConsoleSettings, settings)
        registry.register_value(Authenticator, Authenticator(TokenVerifier(settings), keys))
        registry.register_value(Forwarder, forwarder)
        async with running(view.rebuild()):
            yield
        await forwarder.http.aclose()


app = FastAPI(title="Twinfleet console", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, CONSOLE_APP)
app.add_middleware(SessionCookie)
app.include_router(router)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    return [
        subscription(INTERNAL_PUBSUB, TWIN_CHANGED_TOPIC, TWIN_CHANGED_ROUTE, bulk=500, bulk_wait_ms=50),
        subscription(INTERNAL_PUBSUB, DEVICE_EVENTS_TOPIC, DEVICE_EVENTS_ROUTE, bulk=500, bulk_wait_ms=200),
    ]


@app.post(TWIN_CHANGED_ROUTE, include_in_schema=False)
async def twin_changed(request: Request, view: Annotated[FleetView, provided(FleetView)]) -> dict[str, Any]:
    """A bulk delivery of `twin.changed`."""
    return await handle_bulk(await request.body(), TwinChanged, view.twin_changed)


@app.post(DEVICE_EVENTS_ROUTE, include_in_schema=False)
async def device_events(request: Request, recent: Annotated[RecentEvents, provided(RecentEvents)]) -> dict[str, Any]:
    """A bulk delivery of `device.events` (the device pages' last events)."""
    return await handle_bulk(await request.body(), DeviceEventRecorded, recent.take)
