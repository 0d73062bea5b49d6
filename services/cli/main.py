"""`twin`: the command line for twins and devices (talks to the REST API of a running suite)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.devstack.broker import BrokerAccounts
from services.domain.device_commands import DEFAULT_TTL_SECONDS, CommandStatus
from services.domain.topics import Operation, TwinAddress, profile
from services.platform.names import COMMANDS_APP

app = typer.Typer(add_completion=False, help="Work with Twinfleet twins and devices.", no_args_is_help=True)
devices = typer.Typer(help="Provision devices.", no_args_is_help=True)
app.add_typer(devices, name="devices")
commands = typer.Typer(help="Durable commands: queue for a device, read results.", no_args_is_help=True)
app.add_typer(commands, name="commands")
console = Console()


def _run_dir() -> Path:
    return Path(os.environ.get("TWINFLEET_RUN_DIR", ".run"))


def _stack() -> dict[str, Any]:
    path = _run_dir() / "stack.json"
    if not path.exists():
        raise typer.BadParameter(f"no running suite found ({path} missing): start one with `make up`")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _api() -> str:
    return os.environ.get("TWINFLEET_API") or str(_stack()["api"])


def _commands_api() -> str:
    """The commands app (TWINFLEET_COMMANDS_API, else the running suite's)."""
    explicit = os.environ.get("TWINFLEET_COMMANDS_API")
    if explicit:
        return explicit
    url = _stack().get("apps", {}).get(COMMANDS_APP)
    if not url:
        raise typer.BadParameter("the running suite has no commands app (or predates it): restart it")
    return str(url)


def _call(method: str, path: str, base: str | None = None, **kwargs: Any) -> Any:
    response = httpx.request(method, (base or _api()) + path, timeout=30, **kwargs)
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        console.print(f"[red]{response.status_code}[/] {message}")
        raise typer.Exit(1)
    return response.json()


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`a.b=1 c=on d=null` -> {"a": {"b": 1}, "c": "on", "d": None}; values are JSON when they parse."""
    patch: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{assignment!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = patch
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return patch


@devices.command("create")
def create_device(device_id: str) -> None:
    """Give a device broker credentials and register its (empty) twin; prints how it connects."""
    stack = _stack()
    password = secrets.token_urlsafe(18)
    BrokerAccounts(Path(stack["run_dir"]) / "mosquitto").set_many([(device_id, password)])
    mosquitto_pid = stack["pids"].get("mosquitto")
    if mosquitto_pid:
        os.kill(int(mosquitto_pid), signal.SIGHUP)  # reload credentials
    httpx.put(f"{_api()}/v1/twins/{device_id}", timeout=30)  # 409 when it exists already: fine
    topics = profile(stack.get("topic_profile", "default"))
    address = TwinAddress(device_id)
    console.print_json(
        json.dumps(
            {
                "host": stack["mqtt"]["host"],
                "port": stack["mqtt"]["port"],
                "clientId": device_id,
                "username": device_id,
                "password": password,
                "publish": topics.request_topic(address, Operation.UPDATE),
                "subscribe": topics.device_topics(device_id),
            }
        )
    )


@app.command()
def get(device_id: str, shadow: str = typer.Option("", help="named shadow")) -> None:
    """Print a twin (desired, reported, delta, metadata, version, tags)."""
    console.print_json(json.dumps(_call("GET", f"/v1/twins/{device_id}", params={"shadow": shadow})))


@app.command()
def desire(
    device_id: str,
    assignments: list[str],
    if_version: int | None = typer.Option(None, "--if-version", help="only if the twin is at this version"),
) -> None:
    """Patch desired state: `twin desire dev1 config.fan=on sampleRate=5 old=null`."""
    headers = {"If-Match": f'"{if_version}"'} if if_version is not None else {}
    doc = _call("PATCH", f"/v1/twins/{device_id}/desired", json=parse_assignments(assignments), headers=headers)
    console.print(f"version {doc['version']}; delta: {json.dumps(doc['state'].get('delta', {}))}")


@app.command()
def tag(device_id: str, assignments: list[str]) -> None:
    """Set tags: `twin tag dev1 site=berlin ring=canary`."""
    doc = _call("PATCH", f"/v1/twins/{device_id}/tags", json=parse_assignments(assignments))
    console.print(f"version {doc['version']}; tags: {json.dumps(doc['tags'])}")


@app.command("list")
def list_twins(limit: int = typer.Option(50, help="page size"), cursor: str | None = None) -> None:
    """List twins, a page at a time."""
    page = _call("GET", "/v1/twins", params={"limit": limit, **({"cursor": cursor} if cursor else {})})
    table = Table("device", "shadow", "version", "tags")
    for item in page["items"]:
        table.add_row(item["device_id"], item["shadow"], str(item["version"]), json.dumps(item["tags"]))
    console.print(table)
    if page["next"]:
        console.print(f"more: twin list --cursor '{page['next']}'")


@app.command()
def delete(device_id: str) -> None:
    """Delete a twin (its version is kept for when it comes back)."""
    doc = _call("DELETE", f"/v1/twins/{device_id}")
    console.print(f"deleted at version {doc['version']}")


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
    record = _call("POST", f"/v1/devices/{device_id}/commands", base=_commands_api(), json=body)
    console.print_json(json.dumps(record))


@commands.command("get")
def get_command(device_id: str, command_id: str) -> None:
    """Print a command: status, deliveries, and the device's result once it answered."""
    console.print_json(json.dumps(_call("GET", f"/v1/devices/{device_id}/commands/{command_id}", base=_commands_api())))


@commands.command("list")
def list_commands(
    device_id: str,
    status: CommandStatus | None = typer.Option(None, help="only commands in this status"),
    limit: int = typer.Option(50, help="most commands shown"),
) -> None:
    """A device's commands, newest first."""
    params: dict[str, Any] = {"limit": limit, **({"status": status.value} if status else {})}
    records = _call("GET", f"/v1/devices/{device_id}/commands", base=_commands_api(), params=params)
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
    record = _call("POST", f"/v1/devices/{device_id}/commands/{command_id}/cancel", base=_commands_api())
    console.print(f"{record['id']}: {record['status']}")


if __name__ == "__main__":
    app()
