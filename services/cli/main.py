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
import yaml
from rich.console import Console
from rich.table import Table

from services.devstack.broker import BrokerAccounts
from services.domain.device_commands import DEFAULT_TTL_SECONDS, CommandStatus
from services.domain.topics import Operation, TwinAddress, profile
from services.platform.names import COMMANDS_APP, ROLLOUT_APP

app = typer.Typer(add_completion=False, help="Work with Twinfleet twins and devices.", no_args_is_help=True)
devices = typer.Typer(help="Provision devices.", no_args_is_help=True)
app.add_typer(devices, name="devices")
commands = typer.Typer(help="Durable commands: queue for a device, read results.", no_args_is_help=True)
app.add_typer(commands, name="commands")
configs = typer.Typer(help="Configurations: staged rollouts of desired state to twins.", no_args_is_help=True)
app.add_typer(configs, name="config")
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


def _app_api(app: str) -> str:
    """An app's base URL: TWINFLEET_<APP>_API, else the running suite's."""
    explicit = os.environ.get(f"TWINFLEET_{app.upper()}_API")
    if explicit:
        return explicit
    url = _stack().get("apps", {}).get(app)
    if not url:
        raise typer.BadParameter(f"the running suite has no {app} app (or predates it): restart it")
    return str(url)


def _commands_api() -> str:
    return _app_api(COMMANDS_APP)


def _rollout_api() -> str:
    return _app_api(ROLLOUT_APP)


def _call(method: str, path: str, base: str | None = None, **kwargs: Any) -> Any:
    response = httpx.request(method, (base or _api()) + path, timeout=30, **kwargs)
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        console.print(f"[red]{response.status_code}[/] {message}")
        raise typer.Exit(1)
    return response.json() if response.content else None


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


# -- configurations -------------------------------------------------------------------------------
def parse_stage(text: str) -> dict[str, Any]:
    """`10%` -> {"percent": 10}; `50` -> {"count": 50}."""
    try:
        if text.endswith("%"):
            return {"percent": float(text[:-1])}
        return {"count": int(text)}
    except ValueError:
        raise typer.BadParameter(f"stage {text!r}: a percent (10%) or a count (50)") from None


def _json_option(name: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"{name} is not JSON: {error}") from None


def spec_from_options(
    configuration_id: str,
    target: str,
    priority: int,
    content: str,
    metrics: list[str],
    stages: list[str],
    max_per_minute: int | None,
    success: str | None,
    failure: str | None,
    timeout: int | None,
    fail_percent: float | None,
    fail_count: int | None,
    on_failure: str,
    rollback: str | None,
) -> dict[str, Any]:
    """The configuration spec (the REST body) the `create` options describe."""
    rollout: dict[str, Any] = {"stages": [parse_stage(s) for s in stages] or [{"percent": 100}]}
    for key, value in (
        ("maxPerMinute", max_per_minute),
        ("successCondition", success),
        ("failureCondition", failure),
        ("deviceTimeoutSeconds", timeout),
        ("rollbackContent", _json_option("--rollback", rollback)),
    ):
        if value is not None:
            rollout[key] = value
    if fail_percent is not None or fail_count is not None:
        rollout["failureThreshold"] = {"percent": fail_percent, "count": fail_count, "action": on_failure}
    named: dict[str, str] = {}
    for metric in metrics:
        name, sep, condition = metric.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"metric {metric!r}: write NAME=CEL")
        named[name] = condition
    return {
        "id": configuration_id,
        "targetCondition": target,
        "priority": priority,
        "content": _json_option("--content", content),
        "metrics": named,
        "rollout": rollout,
    }


@configs.command("create")
def create_configuration(
    file: Path | None = typer.Argument(None, help="a JSON or YAML file holding the whole spec"),
    configuration_id: str | None = typer.Option(None, "--id"),
    target: str = typer.Option("true", "--target", help="CEL over deviceId, tags, reported, desired"),
    priority: int = typer.Option(0, "--priority", help="the highest wins a contested key; ties: the newest"),
    content: str = typer.Option("{}", "--content", help="desired-state patch, JSON"),
    metric: list[str] = typer.Option([], "--metric", help="NAME=CEL, counted over targeted twins (repeatable)"),
    stage: list[str] = typer.Option([], "--stage", help="cumulative stage: 10% or a count (repeatable)"),
    max_per_minute: int | None = typer.Option(None, "--max-per-minute"),
    success: str | None = typer.Option(None, "--success", help="CEL; default: reported conforms to the content"),
    failure: str | None = typer.Option(None, "--failure", help="CEL; default: a content key reported FAILED"),
    timeout: int | None = typer.Option(None, "--timeout", help="seconds a twin may stay pending before it fails"),
    fail_percent: float | None = typer.Option(None, "--fail-percent", help="halt a stage above this % failed"),
    fail_count: int | None = typer.Option(None, "--fail-count", help="halt a stage above this many failed"),
    on_failure: str = typer.Option("pause", "--on-failure", help="pause or abort"),
    rollback: str | None = typer.Option(None, "--rollback", help="content written back on abort, JSON"),
) -> None:
    """Create a configuration (a draft: `activate` starts its rollout)."""
    if file is not None:
        spec = yaml.safe_load(file.read_text())
    elif configuration_id is None:
        raise typer.BadParameter("give a spec file or --id with the options")
    else:
        spec = spec_from_options(
            configuration_id, target, priority, content, metric, stage, max_per_minute, success, failure,
            timeout, fail_percent, fail_count, on_failure, rollback,
        )  # fmt: skip
    _print_configuration(_call("POST", "/v1/configurations", base=_rollout_api(), json=spec))


def _print_configuration(view: dict[str, Any]) -> None:
    console.print_json(json.dumps(view))


@configs.command("list")
def list_configurations() -> None:
    """Every configuration with where its rollout stands."""
    table = Table("id", "state", "priority", "stage", "targeted", "applied", "succeeded", "failed", "pending")
    for view in _call("GET", "/v1/configurations", base=_rollout_api())["items"]:
        m = view["progress"]
        stages = len(view["rollout"]["stages"])
        table.add_row(
            view["id"], view["state"], str(view["priority"]), f"{view['stage'] + 1}/{stages}",
            *(str(m[k]) for k in ("targeted", "applied", "succeeded", "failed", "pending")),
        )  # fmt: skip
    console.print(table)


@configs.command("get")
def get_configuration(configuration_id: str) -> None:
    _print_configuration(_call("GET", f"/v1/configurations/{configuration_id}", base=_rollout_api()))


def _act(configuration_id: str, action: str, body: dict[str, Any] | None = None) -> None:
    view = _call("POST", f"/v1/configurations/{configuration_id}/{action}", base=_rollout_api(), json=body)
    reason = f" ({view['reason']})" if view.get("reason") else ""
    console.print(f"{view['id']}: {view['state']}, stage {view['stage'] + 1}{reason}")


@configs.command("activate")
def activate_configuration(configuration_id: str) -> None:
    """Start the rollout (content and target are fixed from now on)."""
    _act(configuration_id, "activate")


@configs.command("pause")
def pause_configuration(configuration_id: str) -> None:
    _act(configuration_id, "pause")


@configs.command("resume")
def resume_configuration(configuration_id: str) -> None:
    """Carry on; a stage that halted on its failures is accepted as it is."""
    _act(configuration_id, "resume")


@configs.command("cancel")
def cancel_configuration(
    configuration_id: str, rollback: bool = typer.Option(True, "--rollback/--no-rollback")
) -> None:
    """Stop for good; the rollback content (if any) goes to the twins it reached."""
    _act(configuration_id, "cancel", {"rollback": rollback})


@configs.command("delete")
def delete_configuration(configuration_id: str) -> None:
    """Delete a draft or an aborted configuration."""
    _call("DELETE", f"/v1/configurations/{configuration_id}", base=_rollout_api())
    console.print(f"deleted {configuration_id}")


@configs.command("metrics")
def configuration_metrics(configuration_id: str) -> None:
    """Targeted, applied, succeeded, failed, pending, custom metrics, and per-stage counts."""
    m = _call("GET", f"/v1/configurations/{configuration_id}/metrics", base=_rollout_api())
    totals = Table("targeted", "waiting", "applied", "succeeded", "failed", "pending", *m["custom"])
    keys = ("targeted", "waiting", "applied", "succeeded", "failed", "pending")
    totals.add_row(*(str(m[k]) for k in keys), *(str(v) for v in m["custom"].values()))
    console.print(totals)
    stages = Table("stage", "size", "admitted", "succeeded", "failed", "pending", "state")
    for s in m["stages"]:
        stages.add_row(
            str(s["index"] + 1), *(str(s[k]) for k in ("target", "admitted", "succeeded", "failed", "pending")),
            s["state"],
        )  # fmt: skip
    console.print(stages)


@configs.command("history")
def configuration_history(configuration_id: str) -> None:
    """Every decision of the rollout, with its reason."""
    for entry in _call("GET", f"/v1/configurations/{configuration_id}/history", base=_rollout_api())["items"]:
        console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry['at']))}  {entry['message']}")


@configs.command("devices")
def configuration_devices(
    configuration_id: str,
    status: str | None = typer.Option(None, help="waiting, pending, succeeded, failed, superseded, rolled_back"),
    limit: int = typer.Option(100),
) -> None:
    """Targeted twins and where each stands."""
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    table = Table("device", "status", "stage", "reason")
    answer = _call("GET", f"/v1/configurations/{configuration_id}/devices", base=_rollout_api(), params=params)
    for item in answer["items"]:
        stage = "-" if item["stage"] < 0 else str(item["stage"] + 1)
        table.add_row(item["deviceId"], item["status"], stage, item["reason"])
    console.print(table)


if __name__ == "__main__":
    app()
