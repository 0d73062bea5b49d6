"""`twin commands send|get|list|cancel`: durable commands for devices."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.table import Table

from services.cli.suite import call, commands_api, console
from services.domain.commands.record import CommandStatus
from services.domain.commands.requests import DEFAULT_TTL_SECONDS

commands = typer.Typer(help="Durable commands: queue for a device, read results.", no_args_is_help=True)


@commands.command("send")
def send_command(
    device_id: str,
    name: str,
    args: str = typer.Option("{}", "--args", help="the command's arguments, a JSON object"),
    ttl: float = typer.Option(DEFAULT_TTL_SECONDS, "--ttl", help="seconds it may wait for the device"),
    command_id: str | None = typer.Option(None, "--id", help="your own id (makes a retry idempotent)"),
) -> None:
    """Queue a command for a device: `twin commands send dev1 reboot --args '{"delay": 5}' --ttl 60`."""
    try:
        arguments = json.loads(args)
    except ValueError as error:
        raise typer.BadParameter(f"--args is not JSON: {error}") from None
    body: dict[str, Any] = {"name": name, "args": arguments, "ttlSeconds": ttl}
    if command_id is not None:
        body["id"] = command_id
    record = call("POST", f"/v1/devices/{device_id}/commands", base=commands_api(), json=body)
    console.print_json(json.dumps(record))


@commands.command("get")
def get_command(device_id: str, command_id: str) -> None:
    """Print a command: status, deliveries, and the device's result once it answered."""
    console.print_json(json.dumps(call("GET", f"/v1/devices/{device_id}/commands/{command_id}", base=commands_api())))


@commands.command("list")
def list_commands(
    device_id: str,
    status: CommandStatus | None = typer.Option(None, help="only commands in this status"),
    limit: int = typer.Option(50, help="most commands shown"),
) -> None:
    """A device's commands, newest first."""
    params: dict[str, Any] = {"limit": limit, **({"status": status.value} if status else {})}
    records = call("GET", f"/v1/devices/{device_id}/commands", base=commands_api(), params=params)
    table = Table("id", "name", "status", "sent", "expires in")
    table.columns[0].no_wrap = True
    now = time.time()
    for record in records:
        left = record["expiresAt"] - now
        expires = f"{left:.0f} s" if record["status"] in ("QUEUED", "DELIVERED") else "-"
        table.add_row(record["id"], record["name"], record["status"], str(record["deliveries"]), expires)
    console.print(table)


@commands.command("cancel")
def cancel_command(device_id: str, command_id: str) -> None:
    """Cancel a command that is still QUEUED or DELIVERED."""
    record = call("POST", f"/v1/devices/{device_id}/commands/{command_id}/cancel", base=commands_api())
    console.print(f"{record['id']}: {record['status']}")
