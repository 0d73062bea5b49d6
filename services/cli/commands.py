"""`twin commands send|get|list|cancel`: durable commands for devices."""

from __future__ import annotations

import json
import time

import typer
from rich.table import Table

from services.cli.suite import commands as commands_api
from services.cli.suite import console, print_json
from services.contracts.commands import DEFAULT_TTL_SECONDS, CommandBody, CommandStatus

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
    # Built without checking: the commands app checks it and says what to fix (400/413).
    body = CommandBody.model_construct(name=name, args=arguments, ttl_seconds=ttl, id=command_id)
    print_json(commands_api(lambda api: api.send(device_id, body)))


@commands.command("get")
def get_command(device_id: str, command_id: str) -> None:
    """Print a command: status, deliveries, and the device's result once it answered."""
    print_json(commands_api(lambda api: api.get(device_id, command_id)))


@commands.command("list")
def list_commands(
    device_id: str,
    status: CommandStatus | None = typer.Option(None, help="only commands in this status"),
    limit: int = typer.Option(50, help="most commands shown"),
) -> None:
    """A device's commands, newest first."""
    records = commands_api(lambda api: api.list_commands(device_id, status, limit))
    table = Table("id", "name", "status", "sent", "expires in")
    table.columns[0].no_wrap = True
    now = time.time()
    for record in records:
        expires = f"{record.expires_at - now:.0f} s" if record.status.pending else "-"
        table.add_row(record.id, record.name, record.status.value, str(record.deliveries), expires)
    console.print(table)


@commands.command("cancel")
def cancel_command(device_id: str, command_id: str) -> None:
    """Cancel a command that is still QUEUED or DELIVERED."""
    record = commands_api(lambda api: api.cancel(device_id, command_id))
    console.print(f"{record.id}: {record.status.value}")
