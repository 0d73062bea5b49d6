"""`twin config ...`: configurations, staged rollouts of desired state to twins."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from services.cli.suite import console, print_json, rollouts
from services.clients.rollout import Action
from services.contracts.rollout import ConfigurationSpec

configs = typer.Typer(help="Configurations: staged rollouts of desired state to twins.", no_args_is_help=True)


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
) -> ConfigurationSpec:
    """The configuration spec the `create` options describe (a malformed one: `BadParameter`)."""
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
    body = {
        "id": configuration_id,
        "targetCondition": target,
        "priority": priority,
        "content": _json_option("--content", content),
        "metrics": named,
        "rollout": rollout,
    }
    try:
        return ConfigurationSpec.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        raise typer.BadParameter(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


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
    spec: ConfigurationSpec | dict[str, Any]
    if file is not None:
        spec = yaml.safe_load(file.read_text())  # the whole spec as written: the API checks it
    elif configuration_id is None:
        raise typer.BadParameter("give a spec file or --id with the options")
    else:
        spec = spec_from_options(
            configuration_id, target, priority, content, metric, stage, max_per_minute, success, failure,
            timeout, fail_percent, fail_count, on_failure, rollback,
        )  # fmt: skip
    print_json(rollouts(lambda api: api.create(spec)))


@configs.command("list")
def list_configurations() -> None:
    """Every configuration with where its rollout stands."""
    table = Table("id", "state", "priority", "stage", "targeted", "applied", "succeeded", "failed", "pending")
    for view in rollouts(lambda api: api.configurations()):
        m = view.progress
        table.add_row(
            view.id, view.state.value, str(view.priority), f"{view.stage + 1}/{len(view.rollout.stages)}",
            *(str(n) for n in (m.targeted, m.applied, m.succeeded, m.failed, m.pending)),
        )  # fmt: skip
    console.print(table)


@configs.command("get")
def get_configuration(configuration_id: str) -> None:
    print_json(rollouts(lambda api: api.get(configuration_id)))


def _act(configuration_id: str, action: Action, rollback: bool = True) -> None:
    view = rollouts(lambda api: api.act(configuration_id, action, rollback=rollback))
    reason = f" ({view.reason})" if view.reason else ""
    console.print(f"{view.id}: {view.state.value}, stage {view.stage + 1}{reason}")


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
    _act(configuration_id, "cancel", rollback)


@configs.command("delete")
def delete_configuration(configuration_id: str) -> None:
    """Delete a draft or an aborted configuration."""
    rollouts(lambda api: api.delete(configuration_id))
    console.print(f"deleted {configuration_id}")


@configs.command("metrics")
def configuration_metrics(configuration_id: str) -> None:
    """Targeted, applied, succeeded, failed, pending, custom metrics, and per-stage counts."""
    m = rollouts(lambda api: api.metrics(configuration_id))
    totals = Table("targeted", "waiting", "applied", "succeeded", "failed", "pending", *m.custom)
    counts = (m.targeted, m.waiting, m.applied, m.succeeded, m.failed, m.pending)
    totals.add_row(*(str(n) for n in counts), *(str(v) for v in m.custom.values()))
    console.print(totals)
    stages = Table("stage", "size", "admitted", "succeeded", "failed", "pending", "state")
    for s in m.stages:
        stages.add_row(
            str(s.index + 1), *(str(n) for n in (s.target, s.admitted, s.succeeded, s.failed, s.pending)), s.state
        )
    console.print(stages)


@configs.command("history")
def configuration_history(configuration_id: str) -> None:
    """Every decision of the rollout, with its reason."""
    for entry in rollouts(lambda api: api.history(configuration_id)).items:
        console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry.at))}  {entry.message}")


@configs.command("devices")
def configuration_devices(
    configuration_id: str,
    status: str | None = typer.Option(None, help="waiting, pending, succeeded, failed, superseded, rolled_back"),
    limit: int = typer.Option(100),
) -> None:
    """Targeted twins and where each stands."""
    table = Table("device", "status", "stage", "reason")
    for item in rollouts(lambda api: api.members(configuration_id, status, limit)).items:
        table.add_row(item.device_id, item.status, "-" if item.stage < 0 else str(item.stage + 1), item.reason)
    console.print(table)
