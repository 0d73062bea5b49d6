"""twin-store: the source of truth for twins (device contract over MQTT + REST for components).

Device requests come on the app's own connection to the device broker (`DeviceRequests`); state
and internal events go through its sidecar."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI

from services.contracts.access import AUDIT_TOPIC
from services.platform.cloudevents import subscription
from services.platform.device_broker import DeviceBroker
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running, running_sidecar
from services.platform.names import AUTH_STORE, DEVICE_BROKER_URL_KEY, INTERNAL_PUBSUB, TWIN_STORE_APP
from services.platform.sidecar import Sidecar
from services.platform.state import StateRepository
from services.twin_store import audit, keys
from services.twin_store.access import RULES
from services.twin_store.api import router
from services.twin_store.device_requests import DeviceRequests, device_subscriptions
from services.twin_store.listing import TwinListing
from services.twin_store.settings import get_twin_store_settings
from services.twin_store.writer import TwinWriter


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_twin_store_settings()
    async with running_sidecar(TWIN_STORE_APP, Sidecar(*settings.sidecar_args())) as sidecar:
        state = register_platform(registry, sidecar)
        profile = settings.topics()
        broker = DeviceBroker(lambda: sidecar.secret(DEVICE_BROKER_URL_KEY), settings.instance)
        writer = TwinWriter(
            state,
            sidecar,
            broker,
            profile,
            settings.limits(),
            settings.batch_max,
            settings.batch_wait_ms,
            settings.publish_concurrency,
        )
        broker.listen(device_subscriptions(profile), DeviceRequests(writer, profile))
        registry.register_value(DeviceBroker, broker, ping=DeviceBroker.ping)
        registry.register_value(TwinListing, TwinListing(state))
        registry.register_value(keys.ApiKeys, keys.ApiKeys(StateRepository(sidecar, store=AUTH_STORE)))
        registry.register_value(audit.AuditLog, audit.AuditLog(state, settings.audit_retention_seconds))
        registry.register_value(TwinWriter, writer)
        writer.start()
        async with running(broker.run()):
            yield
        await broker.close()
        await writer.stop()


app = FastAPI(title="Twinfleet twin-store", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, TWIN_STORE_APP)
app.include_router(router)
app.include_router(keys.router)
app.include_router(audit.router)
app.include_router(audit.events)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Audit records only: device requests come on the app's own broker connection."""
    return [subscription(INTERNAL_PUBSUB, AUDIT_TOPIC, audit.AUDIT_ROUTE, bulk=1000, bulk_wait_ms=1000)]
