"""What crosses the wire for a durable command, validated: the request a component sends (400/413),
the result a device sends back, and the topics a device's results and sync requests arrive on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from services.contracts.commands import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    NAME,
    CommandResultMessage,
    CommandStatus,
)
from services.contracts.topics import channel_device
from services.domain.commands.record import DeviceCommand
from services.domain.errors import bad_request, too_large
from services.domain.json_values import JsonObject, json_equal

NAME_PATTERN = re.compile(NAME)
RESERVED_IDS = frozenset({"sync"})
"""`{id}/commands/sync` is the device's sync request, so no command may be called that."""
MAX_ARGS_BYTES = 4096
MAX_RESULT_BYTES = 16384
MAX_REASON_CHARS = 1024
_REQUEST_FIELDS = ("id", "name", "args", "ttlSeconds")


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (how args and results are measured)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True, slots=True)
class CommandRequest:
    name: str
    args: JsonObject
    ttl_seconds: float
    id: str | None = None
    """A caller-chosen id makes creation idempotent: the same request again returns the command."""


def valid_command_id(value: str) -> bool:
    return bool(NAME_PATTERN.match(value)) and value not in RESERVED_IDS


def parse_request(body: Any) -> CommandRequest:
    """A `CommandRequest` from a decoded body `{name, args?, ttlSeconds?, id?}`: 400 naming what is
    wrong, 413 when `args` encode to more than `MAX_ARGS_BYTES`."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object: {name, args, ttlSeconds}")
    unknown = sorted(set(body) - set(_REQUEST_FIELDS))
    if unknown:
        raise bad_request(f"unknown field(s) {', '.join(unknown)}; a command has {', '.join(_REQUEST_FIELDS)}")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise bad_request("name must be 1..64 of letters, digits and _ . -")
    command_id = body.get("id")
    if command_id is not None and (not isinstance(command_id, str) or not valid_command_id(command_id)):
        raise bad_request("id must be 1..64 of letters, digits and _ . - (and not `sync`)")
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise bad_request("args must be a JSON object")
    ttl = body.get("ttlSeconds", DEFAULT_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl):
        raise bad_request("ttlSeconds must be a number of seconds")
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise bad_request(f"ttlSeconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} (7 days), got {ttl}")
    size = encoded_size(args)
    if size > MAX_ARGS_BYTES:
        raise too_large(f"args are {size} bytes as JSON; at most {MAX_ARGS_BYTES} are allowed")
    return CommandRequest(name=name, args=args, ttl_seconds=float(ttl), id=command_id)


def new_command(device_id: str, request: CommandRequest, command_id: str, now: float) -> DeviceCommand:
    """A QUEUED command for `device_id`; `command_id` is used when the request names none."""
    return DeviceCommand(
        id=request.id or command_id,
        device_id=device_id,
        name=request.name,
        args=request.args,
        created_at=now,
        expires_at=now + request.ttl_seconds,
    )


def same_request(command: DeviceCommand, request: CommandRequest) -> bool:
    """Whether `request` asks for what `command` is (an idempotent retry), TTL aside."""
    return command.name == request.name and json_equal(command.args, request.args)


def parse_result(payload: Any) -> CommandResultMessage:
    """A device's `{status, result?, reason?}` (other fields are ignored); malformed: 400. A result
    larger than `MAX_RESULT_BYTES` is kept as FAILED with a reason saying so; long reasons are cut."""
    if not isinstance(payload, dict):
        raise bad_request("a command result must be a JSON object {status, result?, reason?}")
    status = payload.get("status")
    if status not in (CommandStatus.SUCCEEDED, CommandStatus.FAILED):
        raise bad_request("status must be SUCCEEDED or FAILED")
    result = payload.get("result")
    if result is not None and not isinstance(result, dict):
        raise bad_request("result must be a JSON object")
    reason = payload.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_request("reason must be a string")
    if result is not None and (size := encoded_size(result)) > MAX_RESULT_BYTES:
        reason = f"the device's result was {size} bytes; at most {MAX_RESULT_BYTES} are kept"
        return CommandResultMessage(status=CommandStatus.FAILED, reason=reason)
    reason = None if reason is None else reason[:MAX_REASON_CHARS]
    return CommandResultMessage(status=CommandStatus(status), result=result, reason=reason)


def result_topic_command(topic: str) -> tuple[str, str] | None:
    """`(device_id, command_id)` of a result topic `{id}/commands/{cmd}/result`, else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[1] != "commands" or parts[3] != "result":
        return None
    device_id = channel_device(topic)
    if device_id is None or not valid_command_id(parts[2]):
        return None
    return device_id, parts[2]


def sync_topic_device(topic: str) -> str | None:
    """The device id of a sync topic `{id}/commands/sync`, else None."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[1:] != ["commands", "sync"]:
        return None
    return channel_device(topic)
