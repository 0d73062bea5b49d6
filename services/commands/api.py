"""REST API for components (queue a command for a device, read it, list a device's commands, cancel)
and the routes daprd delivers device messages to (results, sync requests).

The device id always comes from the path (or the topic). Bad requests are 400/413 and store nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from services.commands.metrics import RESULTS
from services.commands.service import CommandService, Outcome
from services.contracts.commands import CommandBody, CommandRecord, CommandStatus
from services.contracts.topics import valid_id
from services.contracts.wire import decode_payload
from services.domain.commands.requests import result_topic_command, sync_topic_device, valid_command_id
from services.domain.errors import bad_request, too_large
from services.platform.auth import DeviceInScope
from services.platform.cloudevents import event_payload
from services.platform.http import provided

log = structlog.get_logger()
router = APIRouter(prefix="/v1/devices/{device_id}/commands", tags=["commands"], dependencies=[DeviceInScope])
deliveries = APIRouter(include_in_schema=False)
Commands = Annotated[CommandService, provided(CommandService)]
MAX_BODY_BYTES = 16 * 1024
RESULTS_ROUTE = "/device-command-results"
SYNC_ROUTE = "/device-command-sync"


def _device(device_id: str) -> str:
    if not valid_id(device_id):
        raise bad_request("device id must be 1..128 of letters, digits and _ . : -")
    return device_id


def _command_id(command_id: str) -> str:
    if not valid_command_id(command_id):
        raise bad_request("command id must be 1..64 of letters, digits and _ . -")
    return command_id


def _status(status: str | None) -> CommandStatus | None:
    if status is None:
        return None
    try:
        return CommandStatus(status)
    except ValueError:
        raise bad_request(f"status must be one of {', '.join(CommandStatus)}") from None


def _location(device_id: str, command_id: str) -> str:
    return f"/v1/devices/{device_id}/commands/{command_id}"


@router.post(
    "",
    status_code=201,
    response_model=CommandRecord,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CommandBody.model_json_schema(by_alias=True)}},
        }
    },
    responses={200: {"description": "an idempotent retry (same `id`): the command as it is"}},
)
async def create_command(device_id: str, request: Request, commands: Commands) -> JSONResponse:
    """Queue a command for the device and publish it at once (a device online gets it now, one away
    on its next sync); 201 with the command and its `Location`. The body (`CommandBody`) is
    validated by `parse_request`, which answers 400/413 naming what to fix."""
    _device(device_id)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise too_large(f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} are allowed")
    document, _ = decode_payload(body)
    command, created = await commands.create(device_id, document)
    return JSONResponse(
        command.view().model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": _location(device_id, command.id)},
    )


@router.get("", response_model=list[CommandRecord])
async def list_commands(
    device_id: str,
    commands: Commands,
    status: Annotated[str | None, Query(description="only commands in this status (QUEUED, DELIVERED, …)")] = None,
    limit: Annotated[int, Query(ge=1, le=256)] = 100,
) -> list[CommandRecord]:
    """The device's commands, newest first (finished ones are kept for 7 days)."""
    return [c.view() for c in await commands.list_commands(_device(device_id), _status(status), limit)]


@router.get("/{command_id}", response_model=CommandRecord)
async def get_command(device_id: str, command_id: str, commands: Commands) -> CommandRecord:
    """One command: status, deliveries, and the device's result once it answered; 404 when unknown."""
    return (await commands.get(_device(device_id), _command_id(command_id))).view()


@router.post("/{command_id}/cancel", response_model=CommandRecord)
async def cancel_command(device_id: str, command_id: str, commands: Commands) -> CommandRecord:
    """Cancel a QUEUED or DELIVERED command (409 once it finished); a result that comes later is
    ignored. The device is not told, so it may still run a copy it already has."""
    return (await commands.cancel(_device(device_id), _command_id(command_id))).view()


@deliveries.post(RESULTS_ROUTE)
async def command_result(request: Request, commands: Commands) -> JSONResponse:
    """A device's result (raw payload in a CloudEvent); device and command ids are the topic's."""
    event = await _event(request)
    address = result_topic_command(str(event.get("topic", ""))) if event else None
    if address is None:
        RESULTS.labels("malformed").inc()
        return JSONResponse({"status": Outcome.DROP})
    device_id, command_id = address
    return await _answer(
        commands.take_result(device_id, command_id, event_payload(event)), device_id=device_id, command_id=command_id
    )


@deliveries.post(SYNC_ROUTE)
async def command_sync(request: Request, commands: Commands) -> JSONResponse:
    """A device asks for its pending commands (any payload); the device id is the topic's."""
    event = await _event(request)
    device_id = sync_topic_device(str(event.get("topic", ""))) if event else None
    if device_id is None:
        return JSONResponse({"status": Outcome.DROP})
    return await _answer(_synced(commands, device_id), device_id=device_id)


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
