"""commands: durable commands for devices ("proxied RPC"). A component queues a command with a TTL
over REST; it is published to the device at once and again whenever the device syncs
(`{id}/commands/sync`, after each (re)connect), its first result (`{id}/commands/{cmd}/result`) is
kept, and a command the device never answers in time EXPIRES (lazily on reads and syncs, and by a
periodic sweep).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI

from services.clients.twin_store import twin_store_client
from services.commands.access import RULES
from services.commands.api import RESULTS_ROUTE, SYNC_ROUTE, deliveries, router
from services.commands.service import CommandService
from services.commands.settings import get_commands_settings
from services.contracts.topics import COMMAND_RESULTS_FILTER, COMMANDS_SYNC_FILTER
from services.platform.auth import DeviceTags
from services.platform.cloudevents import shared, subscription
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running, running_sidecar
from services.platform.names import COMMANDS_APP, DEVICE_BROKER
from services.platform.sidecar import Sidecar


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_commands_settings()
    async with (
        running_sidecar(COMMANDS_APP, Sidecar(*settings.sidecar_args())) as sidecar,
        twin_store_client(settings) as twins,
    ):
        register_platform(registry, sidecar)
        registry.register_value(DeviceTags, DeviceTags(twins.tags))
        service = CommandService(sidecar, settings)
        registry.register_value(CommandService, service)
        async with running(service.run_sweeper()):
            yield


app = FastAPI(title="Twinfleet commands", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, COMMANDS_APP)
app.include_router(router)
app.include_router(deliveries)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Every device's command results and sync requests, as shared subscriptions so replicas split
    the load."""
    return [
        subscription(DEVICE_BROKER, shared(COMMANDS_APP, COMMAND_RESULTS_FILTER), RESULTS_ROUTE, raw=True),
        subscription(DEVICE_BROKER, shared(COMMANDS_APP, COMMANDS_SYNC_FILTER), SYNC_ROUTE, raw=True),
    ]
