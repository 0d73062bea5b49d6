"""REST API for components: queue a command for a device, read it, list a device's commands, cancel.

The device id always comes from the path. Bad requests are 400/413 and store nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.commands.service import CommandService
from services.contracts.topics import valid_id
from services.contracts.wire import decode_payload
from services.domain.commands.record import CommandStatus
from services.domain.commands.requests import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, MIN_TTL_SECONDS, valid_command_id
from services.domain.errors import bad_request, too_large
from services.domain.json_values import JsonObject

router = APIRouter(prefix="/v1/devices/{device_id}/commands", tags=["commands"])
MAX_BODY_BYTES = 16 * 1024


class CommandBody(BaseModel):
    """The request body of `POST /v1/devices/{device_id}/commands` (documentation only: the body is
    validated by `parse_request`, which answers 400/413 naming what to fix)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="what the device should do")
    args: JsonObject = Field(default_factory=dict, description="a JSON object, at most 4096 bytes encoded")
    ttl_seconds: float = Field(
        alias="ttlSeconds",
        default=DEFAULT_TTL_SECONDS,
        ge=MIN_TTL_SECONDS,
        le=MAX_TTL_SECONDS,
        description="seconds the command may wait for the device; then it EXPIRES",
    )
    id: str | None = Field(default=None, description="optional caller-chosen id: makes the create idempotent")


def _service(request: Request) -> CommandService:
    service: CommandService = request.app.state.commands
    return service


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
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": CommandBody.model_json_schema()}}}
    },
    responses={200: {"description": "an idempotent retry (same `id`): the command as it is"}},
)
async def create_command(device_id: str, request: Request) -> JSONResponse:
    """Queue a command for the device and publish it at once (a device online gets it now, one away
    on its next sync); 201 with the command and its `Location`."""
    _device(device_id)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise too_large(f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} are allowed")
    document, _ = decode_payload(body)
    command, created = await _service(request).create(device_id, document)
    return JSONResponse(
        command.to_json(),
        status_code=201 if created else 200,
        headers={"Location": _location(device_id, command.id)},
    )


@router.get("")
async def list_commands(
    device_id: str,
    request: Request,
    status: Annotated[str | None, Query(description="only commands in this status (QUEUED, DELIVERED, …)")] = None,
    limit: Annotated[int, Query(ge=1, le=256)] = 100,
) -> list[JsonObject]:
    """The device's commands, newest first (finished ones are kept for 7 days)."""
    commands = await _service(request).list_commands(_device(device_id), _status(status), limit)
    return [command.to_json() for command in commands]


@router.get("/{command_id}")
async def get_command(device_id: str, command_id: str, request: Request) -> JsonObject:
    """One command: status, deliveries, and the device's result once it answered; 404 when unknown."""
    command = await _service(request).get(_device(device_id), _command_id(command_id))
    return command.to_json()


@router.post("/{command_id}/cancel")
async def cancel_command(device_id: str, command_id: str, request: Request) -> JsonObject:
    """Cancel a QUEUED or DELIVERED command (409 once it finished); a result that comes later is
    ignored. The device is not told, so it may still run a copy it already has."""
    command = await _service(request).cancel(_device(device_id), _command_id(command_id))
    return command.to_json()
