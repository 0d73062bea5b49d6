"""twin-store: the source of truth for twins (device contract over MQTT + REST for components)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI

from services.contracts.access import AUDIT_TOPIC
from services.platform.auth import SidecarGate
from services.platform.cloudevents import shared, subscription
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running_sidecar
from services.platform.names import (
    AUTH_STORE,
    DEVICE_BROKER,
    INTERNAL_PUBSUB,
    SHARED_SUBSCRIPTION_GROUP,
    TWIN_STORE_APP,
)
from services.platform.sidecar import Sidecar
from services.platform.state import StateRepository
from services.twin_store import audit, keys
from services.twin_store.access import RULES
from services.twin_store.api import router
from services.twin_store.device_requests import ROUTE, DeviceRequestFastPath
from services.twin_store.listing import TwinListing
from services.twin_store.settings import get_twin_store_settings
from services.twin_store.writer import TwinWriter


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_twin_store_settings()
    async with running_sidecar(TWIN_STORE_APP, Sidecar(*settings.sidecar_args())) as sidecar:
        state = register_platform(registry, sidecar)
        writer = TwinWriter(
            state,
            sidecar,
            settings.topics(),
            settings.limits(),
            settings.batch_max,
            settings.batch_wait_ms,
            settings.publish_concurrency,
        )
        registry.register_value(TwinListing, TwinListing(state))
        registry.register_value(keys.ApiKeys, keys.ApiKeys(StateRepository(sidecar, store=AUTH_STORE)))
        registry.register_value(audit.AuditLog, audit.AuditLog(state, settings.audit_retention_seconds))
        registry.register_value(TwinWriter, writer)
        writer.start()
        yield
        await writer.stop()


api = FastAPI(title="Twinfleet twin-store", version="0.1.0", lifespan=lifespan)
install_common(api, RULES, TWIN_STORE_APP)
api.include_router(router)
api.include_router(keys.router)
api.include_router(audit.router)
api.include_router(audit.events)


@api.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Device request topics, as shared subscriptions so replicas split the load. Filters that
    begin with `$` (the AWS profile) are subscribed plainly: Mosquitto 2.0 delivers nothing to a
    shared subscription on `$`-topics, so that profile runs one twin-store replica per broker."""
    profile = get_twin_store_settings().topics()
    return [
        *(
            subscription(DEVICE_BROKER, shared(SHARED_SUBSCRIPTION_GROUP, f), ROUTE, raw=True)
            for f in profile.subscriptions()
        ),
        subscription(INTERNAL_PUBSUB, AUDIT_TOPIC, audit.AUDIT_ROUTE, bulk=200, bulk_wait_ms=50),
    ]


app = SidecarGate(DeviceRequestFastPath(api, get_twin_store_settings().topics()), [ROUTE], get_twin_store_settings())
