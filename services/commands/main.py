"""commands: durable commands for devices ("proxied RPC"). A component queues a command with a TTL
over REST; it is published to the device at once and again whenever the device syncs
(`{id}/commands/sync`, after each (re)connect), its first result (`{id}/commands/{cmd}/result`) is
kept, and a command the device never answers in time EXPIRES (lazily on reads and syncs, and by a
periodic sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.commands.api import router
from services.commands.metrics import RESULTS
from services.commands.service import CommandService, Outcome
from services.commands.settings import get_commands_settings
from services.contracts.topics import COMMAND_RESULTS_FILTER, COMMANDS_SYNC_FILTER
from services.domain.commands.requests import result_topic_command, sync_topic_device
from services.platform.cloudevents import event_payload, shared, subscription
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import COMMANDS_APP, DEVICE_BROKER
from services.platform.sidecar import Sidecar

log = structlog.get_logger()
RESULTS_ROUTE = "/device-command-results"
SYNC_ROUTE = "/device-command-sync"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_commands_settings()
    async with running_sidecar(COMMANDS_APP, Sidecar(*settings.sidecar_args())) as sidecar:
        service = CommandService(sidecar, settings)
        sweeper = asyncio.create_task(service.run_sweeper())
        app.state.commands = service
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


app = FastAPI(title="Twinfleet commands", version="0.1.0", lifespan=lifespan)
install_common(app)
app.include_router(router)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    """Every device's command results and sync requests, as shared subscriptions so replicas split
    the load."""
    return [
        subscription(DEVICE_BROKER, shared(COMMANDS_APP, COMMAND_RESULTS_FILTER), RESULTS_ROUTE, raw=True),
        subscription(DEVICE_BROKER, shared(COMMANDS_APP, COMMANDS_SYNC_FILTER), SYNC_ROUTE, raw=True),
    ]


@app.post(RESULTS_ROUTE, include_in_schema=False)
async def command_result(request: Request) -> JSONResponse:
    """A device's result (raw payload in a CloudEvent); device and command ids are the topic's."""
    event = await _event(request)
    address = result_topic_command(str(event.get("topic", ""))) if event else None
    if address is None:
        RESULTS.labels("malformed").inc()
        return JSONResponse({"status": Outcome.DROP})
    device_id, command_id = address
    return await _answer(
        request.app.state.commands.take_result(device_id, command_id, event_payload(event)),
        device_id=device_id,
        command_id=command_id,
    )


@app.post(SYNC_ROUTE, include_in_schema=False)
async def command_sync(request: Request) -> JSONResponse:
    """A device asks for its pending commands (any payload); the device id is the topic's."""
    event = await _event(request)
    device_id = sync_topic_device(str(event.get("topic", ""))) if event else None
    if device_id is None:
        return JSONResponse({"status": Outcome.DROP})
    return await _answer(_synced(request.app.state.commands, device_id), device_id=device_id)


async def _synced(service: CommandService, device_id: str) -> Outcome:
    await service.sync(device_id)
    return Outcome.SUCCESS


async def _event(request: Request) -> dict[str, Any]:
    try:
        event = await request.json()
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


async def _answer(handling: Awaitable[Outcome], **where: str) -> JSONResponse:
    """SUCCESS/DROP as decided; RETRY (daprd redelivers) when the store or sidecar failed."""
    try:
        outcome = await handling
    except Exception as error:  # noqa: BLE001 - daprd redelivers; every step is safe to repeat
        log.warning("device message failed; daprd redelivers it", error=str(error), **where)
        return JSONResponse({"status": Outcome.RETRY})
    return JSONResponse({"status": outcome})
