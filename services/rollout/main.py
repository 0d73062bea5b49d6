"""rollout: configurations rolled out to groups of twins — target conditions, priorities, staged
rollouts with automatic halt (Azure automatic device configurations + hawkBit rollouts + AWS IoT
Jobs). A level-triggered reconciler: membership from `twin.changed`, a pure planner, batched
conditional twin writes through the twin-store; safe to kill at any instant."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from services.contracts.events import TWIN_CHANGED_TOPIC, TwinChanged
from services.platform.cloudevents import handle_bulk, subscription
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import INTERNAL_PUBSUB, ROLLOUT_APP
from services.platform.sidecar import Sidecar
from services.rollout.api import router
from services.rollout.reconciler import Reconciler
from services.rollout.settings import get_rollout_settings
from services.rollout.store import ConfigurationStore
from services.rollout.twins import TwinStoreClient

TWIN_CHANGED_ROUTE = "/events/twin-changed"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_rollout_settings()
    async with running_sidecar(ROLLOUT_APP, Sidecar(*settings.sidecar_args())) as sidecar:
        twins = TwinStoreClient(settings.dapr_http_port, settings.twin_store_url)
        reconciler = Reconciler(ConfigurationStore(sidecar), twins, settings)
        app.state.reconciler, app.state.limits = reconciler, settings.limits()
        running = asyncio.create_task(reconciler.run())
        yield
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await twins.close()


app = FastAPI(title="Twinfleet rollout", version="0.1.0", lifespan=lifespan)
install_common(app)
app.include_router(router)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    return [subscription(INTERNAL_PUBSUB, TWIN_CHANGED_TOPIC, TWIN_CHANGED_ROUTE, bulk=500, bulk_wait_ms=20)]


@app.post(TWIN_CHANGED_ROUTE, include_in_schema=False)
async def twin_changed(request: Request) -> dict[str, Any]:
    """A bulk delivery of `twin.changed`."""
    return await handle_bulk(await request.json(), TwinChanged, request.app.state.reconciler.twin_changed)
