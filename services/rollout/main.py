"""rollout: configurations rolled out to groups of twins — target conditions, priorities, staged
rollouts with automatic halt (Azure automatic device configurations + hawkBit rollouts + AWS IoT
Jobs). A level-triggered reconciler: membership from `twin.changed`, a pure planner, batched
conditional twin writes through the twin-store; safe to kill at any instant."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI, Request

from services.clients.twin_store import twin_store_client
from services.contracts.events import DEVICE_EVENTS_TOPIC, TWIN_CHANGED_TOPIC, DeviceEventRecorded, TwinChanged
from services.platform.cloudevents import handle_bulk, subscription
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running, running_sidecar
from services.platform.names import INTERNAL_PUBSUB, ROLLOUT_APP
from services.platform.sidecar import Sidecar
from services.rollout.access import RULES
from services.rollout.api import Rollouts, router
from services.rollout.reconciler import Reconciler
from services.rollout.settings import RolloutSettings, get_rollout_settings
from services.rollout.store import ConfigurationStore

TWIN_CHANGED_ROUTE = "/events/twin-changed"
DEVICE_EVENTS_ROUTE = "/events/device-events"


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_rollout_settings()
    async with (
        running_sidecar(ROLLOUT_APP, Sidecar(*settings.sidecar_args())) as sidecar,
        twin_store_client(settings, timeout=60) as twins,
    ):
        state = register_platform(registry, sidecar)
        reconciler = Reconciler(ConfigurationStore(state), twins, settings)
        registry.register_value(Reconciler, reconciler)
        registry.register_value(RolloutSettings, settings)
        async with running(reconciler.run()):
            yield


app = FastAPI(title="Twinfleet rollout", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, ROLLOUT_APP)
app.include_router(router)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    return [
        subscription(INTERNAL_PUBSUB, TWIN_CHANGED_TOPIC, TWIN_CHANGED_ROUTE, bulk=500, bulk_wait_ms=20),
        subscription(INTERNAL_PUBSUB, DEVICE_EVENTS_TOPIC, DEVICE_EVENTS_ROUTE, bulk=500, bulk_wait_ms=50),
    ]


@app.post(TWIN_CHANGED_ROUTE, include_in_schema=False)
async def twin_changed(request: Request, reconciler: Rollouts) -> dict[str, Any]:
    """A bulk delivery of `twin.changed`."""
    return await handle_bulk(await request.body(), TwinChanged, reconciler.twin_changed)


@app.post(DEVICE_EVENTS_ROUTE, include_in_schema=False)
async def device_events(request: Request, reconciler: Rollouts) -> dict[str, Any]:
    """A bulk delivery of `device.events` (health gates count the types they name)."""
    return await handle_bulk(await request.body(), DeviceEventRecorded, reconciler.device_events)
