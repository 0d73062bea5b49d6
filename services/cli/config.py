"""`twin config ...`: configurations, staged rollouts of desired state to twins."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from services.cli.suite import Output, console, print_json, rollouts
from services.clients.rollout import Action
from services.contracts.rollout import ConfigurationSpec, InstallBody, PreviewBody, PreviewView

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


def parse_time(text: str) -> int:
    """Unix seconds, or an ISO 8601 time (`2025-03-01T00:00:00Z`; no zone means UTC)."""
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: unix seconds or an ISO time such as 2025-03-01T00:00:00Z") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


def parse_window(text: str) -> dict[str, Any]:
    """`22:00-02:00`, `sat,sun 10:00-16:00` (weekly) or `cron:0 2 * * 1-5@120` (cron, minutes open)."""
    if text.startswith("cron:"):
        expression, sep, minutes = text.removeprefix("cron:").rpartition("@")
        if not sep or not minutes.isdigit():
            raise typer.BadParameter(f"window {text!r}: write cron:EXPRESSION@MINUTES")
        return {"cron": expression.strip(), "durationMinutes": int(minutes)}
    days, _, span = text.strip().rpartition(" ")
    start, sep, end = span.partition("-")
    if not sep:
        raise typer.BadParameter(f"window {text!r}: write [DAYS ]HH:MM-HH:MM, e.g. 'sat,sun 22:00-02:00'")
    window: dict[str, Any] = {"start": start, "end": end}
    if days:
        window["days"] = [d.strip().lower()[:3] for d in days.split(",") if d.strip()]
    return window


def policy_from_options(
    *,
    start: str | None = None,
    end: str | None = None,
    windows: list[str] | None = None,
    timezone: str | None = None,
    timezone_tag: str | None = None,
    install_seconds: int | None = None,
    retries: int | None = None,
    retry_backoff: int | None = None,
    retry_on: list[str] | None = None,
    download_only: bool = False,
    auto_consent: int | None = None,
    ramp: str | None = None,
    health: str | None = None,
    health_events: list[str] | None = None,
    soak: int | None = None,
    health_margin: float | None = None,
    cohorts: list[str] | None = None,
    cohort_min_failures: int | None = None,
) -> dict[str, Any]:
    """The rollout policy's schedule, retry, install, ramp, health and cohort parts the options give."""
    policy: dict[str, Any] = {}
    schedule: dict[str, Any] = {}
    for key, value in (
        ("startAt", parse_time(start) if start else None),
        ("endAt", parse_time(end) if end else None),
        ("windows", [parse_window(w) for w in windows or []] or None),
        ("timezone", timezone),
        ("timezoneTag", timezone_tag),
        ("installSeconds", install_seconds),
    ):
        if value is not None:
            schedule[key] = value
    if schedule:
        policy["schedule"] = schedule
    if retries is not None or retry_backoff is not None or retry_on:
        retry: dict[str, Any] = {"attempts": retries if retries is not None else 3}
        if retry_backoff is not None:
            retry["backoffSeconds"] = retry_backoff
        if retry_on:
            retry["on"] = [kind for item in retry_on for kind in item.split(",") if kind]
        policy["retry"] = retry
    if download_only or auto_consent is not None:
        policy["install"] = {"later": download_only, **({"autoConsentSeconds": auto_consent} if auto_consent else {})}
    if ramp is not None:
        try:
            base, factor, every = ramp.split(",")
            policy["ramp"] = {"basePerMinute": int(base), "factor": float(factor), "every": int(every)}
        except ValueError:
            raise typer.BadParameter(f"ramp {ramp!r}: write BASE_PER_MINUTE,FACTOR,EVERY (e.g. 10,2,50)") from None
    if health is not None or health_events:
        gate: dict[str, Any] = {"events": health_events or []}
        options: tuple[tuple[str, object], ...] = (
            ("unhealthy", health),
            ("soakSeconds", soak),
            ("marginPercent", health_margin),
        )
        for key, option in options:
            if option is not None:
                gate[key] = option
        policy["health"] = gate
    if cohorts:
        policy["cohorts"] = {"keys": cohorts, **({"minFailures": cohort_min_failures} if cohort_min_failures else {})}
    return policy


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
    policy: dict[str, Any] | None = None,
) -> ConfigurationSpec:
    """The configuration spec the `create` options describe (a malformed one: `BadParameter`);
    `policy` adds the rollout policy's further parts (`policy_from_options`)."""
    rollout: dict[str, Any] = {"stages": [parse_stage(s) for s in stages] or [{"percent": 100}], **(policy or {})}
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
    start: str | None = typer.Option(None, "--start", help="admit nothing before (ISO time or unix seconds)"),
    end: str | None = typer.Option(None, "--end", help="admit nothing after (ISO time or unix seconds)"),
    window: list[str] = typer.Option(
        [], "--window", help="maintenance window: '22:00-02:00', 'sat,sun 10:00-16:00', 'cron:0 2 * * *@120'"
    ),
    timezone: str | None = typer.Option(None, "--timezone", help="zone of the windows (default UTC)"),
    timezone_tag: str | None = typer.Option(None, "--timezone-tag", help="tag holding each device's IANA zone"),
    install_seconds: int | None = typer.Option(None, "--install-seconds", help="an install must fit in the window"),
    retries: int | None = typer.Option(None, "--retries", help="retry failed twins up to N more times"),
    retry_backoff: int | None = typer.Option(None, "--retry-backoff", help="seconds before the first retry"),
    retry_on: list[str] = typer.Option([], "--retry-on", help="failure kinds to retry (download, timeout, ...)"),
    download_only: bool = typer.Option(False, "--download-only", help="install later, on `twin config install`"),
    auto_consent: int | None = typer.Option(None, "--auto-consent", help="seconds after which consent is assumed"),
    ramp: str | None = typer.Option(None, "--ramp", help="exponential pace BASE_PER_MINUTE,FACTOR,EVERY"),
    health: str | None = typer.Option(None, "--health", help="CEL: the twin is unhealthy (promotion gate)"),
    health_event: list[str] = typer.Option([], "--health-event", help="device event type that means unhealthy"),
    soak: int | None = typer.Option(None, "--soak", help="seconds a stage is watched before promotion"),
    health_margin: float | None = typer.Option(None, "--health-margin", help="points worse than the hold-out allowed"),
    cohort: list[str] = typer.Option([], "--cohort", help="quarantine a failing cohort by this key (tags.hwRev)"),
) -> None:
    """Create a configuration (a draft: `activate` starts its rollout; `preview` shows what it would do)."""
    spec: ConfigurationSpec | dict[str, Any]
    if file is not None:
        spec = yaml.safe_load(file.read_text())  # the whole spec as written: the API checks it
    elif configuration_id is None:
        raise typer.BadParameter("give a spec file or --id with the options")
    else:
        policy = policy_from_options(
            start=start, end=end, windows=window, timezone=timezone, timezone_tag=timezone_tag,
            install_seconds=install_seconds, retries=retries, retry_backoff=retry_backoff, retry_on=retry_on,
            download_only=download_only, auto_consent=auto_consent, ramp=ramp, health=health,
            health_events=health_event, soak=soak, health_margin=health_margin, cohorts=cohort,
        )  # fmt: skip
        spec = spec_from_options(
            configuration_id, target, priority, content, metric, stage, max_per_minute, success, failure,
            timeout, fail_percent, fail_count, on_failure, rollback, policy,
        )  # fmt: skip
    print_json(rollouts(lambda api: api.create(spec)))


@configs.command("list")
def list_configurations() -> None:
    """Every configuration with where its rollout stands."""
    table = Table(
        "id", "state", "hold", "priority", "stage", "targeted", "applied", "succeeded", "failed", "retrying",
        "pending", "quarantined",
    )  # fmt: skip
    for view in rollouts(lambda api: api.configurations()):
        m = view.progress
        table.add_row(
            view.id, view.state.value, view.hold.value or "-", str(view.priority),
            f"{view.stage + 1}/{len(view.rollout.stages)}",
            *(str(n) for n in (m.targeted, m.applied, m.succeeded, m.failed, m.retrying, m.pending, m.quarantined)),
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


@configs.command("update")
def update_configuration(
    configuration_id: str,
    file: Path = typer.Argument(..., help="the new spec (JSON, as `POST /v1/configurations` takes it)"),
) -> None:
    """Replace a draft's spec (target, priority, content, metrics, rollout policy)."""
    spec = json.loads(file.read_text())
    view = rollouts(lambda api: api.update(configuration_id, spec))
    console.print(f"{view.id}: {view.state.value}, updated")


FINAL = ("completed", "aborted")


def watch_rollout(configuration_id: str, interval: float, timeout: float | None) -> None:
    """Follow a rollout live: a progress bar per stage (succeeded of its size), failures and the
    state, until it completes or is aborted (or `timeout` seconds, or Ctrl-C); with `--output json`,
    one JSON line per change instead."""
    Output.following = True
    started = time.monotonic()
    last = ""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=console, disable=Output.json) as progress:
        tasks: dict[int, TaskID] = {}
        state = progress.add_task("state", total=None, note="")
        while True:
            view = rollouts(lambda api: api.get(configuration_id))
            if Output.json:
                line = view.progress.model_dump_json(by_alias=True)
                if line != last:
                    print(json.dumps({"state": view.state.value, "reason": view.reason, "progress": json.loads(line)}))
                    last = line
            for stage in view.progress.stages:
                if stage.index not in tasks:
                    tasks[stage.index] = progress.add_task(f"stage {stage.index + 1}", total=stage.target, note="")
                note = f"{stage.state}; {stage.failed} failed, {stage.pending} pending"
                progress.update(tasks[stage.index], completed=stage.succeeded, total=max(stage.target, 1), note=note)
            reason = f": {view.reason}" if view.reason else ""
            progress.update(state, description=f"{view.id} {view.state.value}{reason}")
            if view.state.value in FINAL:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                break
            time.sleep(interval)
    Output.following = False


@configs.command("metrics")
def configuration_metrics(
    configuration_id: str,
    watch: bool = typer.Option(False, "--watch", help="follow the rollout live until it completes or is aborted"),
    interval: float = typer.Option(1.0, help="seconds between updates (--watch)"),
    timeout: float | None = typer.Option(None, help="stop watching after this many seconds"),
) -> None:
    """Targeted, applied, succeeded, failed, retrying, pending, quarantined, outside their window,
    awaiting consent or the install, custom metrics; per-stage counts; holds, cohorts, health checks."""
    if watch:
        watch_rollout(configuration_id, interval, timeout)
    view = rollouts(lambda api: api.get(configuration_id))
    m = view.progress
    totals = Table(
        "targeted", "waiting", "applied", "succeeded", "failed", "retrying", "pending", "quarantined",
        "outside window", "awaiting consent", "awaiting install", "installed", "retries", *m.custom,
    )  # fmt: skip
    counts = (
        m.targeted, m.waiting, m.applied, m.succeeded, m.failed, m.retrying, m.pending, m.quarantined,
        m.outside_window, m.awaiting_consent, m.awaiting_install, m.installed, m.attempts,
    )  # fmt: skip
    totals.add_row(*(str(n) for n in counts), *(str(v) for v in m.custom.values()))
    console.print(totals)
    stages = Table("stage", "size", "admitted", "succeeded", "failed", "retrying", "pending", "state")
    for s in m.stages:
        numbers = (s.target, s.admitted, s.succeeded, s.failed, s.retrying, s.pending)
        stages.add_row(str(s.index + 1), *(str(n) for n in numbers), s.state)
    console.print(stages)
    pace = "unpaced" if m.rate_per_minute is None else f"{m.rate_per_minute:g}/min"
    console.print(f"state {view.state.value}; hold {view.hold.value or 'none'}; pace {pace}")
    for c in view.quarantined:
        console.print(f"quarantined {c.label()}: {c.failed}/{c.admitted} failed ({_when(c.at)})")
    for check in view.health_checks:
        console.print(f"health {_when(check.at)}: {check.message}")


def _when(at: int | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


@configs.command("history")
def configuration_history(configuration_id: str) -> None:
    """Every decision of the rollout, with its reason."""
    for entry in rollouts(lambda api: api.history(configuration_id)).items:
        console.print(f"{_when(entry.at)}  {entry.message}")


@configs.command("devices")
def configuration_devices(
    configuration_id: str,
    status: str | None = typer.Option(
        None, help="waiting, quarantined, pending, succeeded, failed, retrying, superseded, rolled_back"
    ),
    limit: int = typer.Option(100),
) -> None:
    """Targeted twins and where each stands, with their attempts and next retry."""
    table = Table("device", "status", "stage", "attempts", "failure", "retry at", "phase", "reason")
    for item in rollouts(lambda api: api.members(configuration_id, status, limit)).items:
        table.add_row(
            item.device_id, item.status, "-" if item.stage < 0 else str(item.stage + 1), str(item.attempts or "-"),
            item.failure or "-", _when(item.retry_at) if item.retry_at else "-", item.phase or "-", item.reason,
        )  # fmt: skip
    console.print(table)


@configs.command("retry")
def retry_configuration(
    configuration_id: str,
    device: list[str] = typer.Option([], "--device", help="retry only this twin (repeatable); default: all failed"),
) -> None:
    """Try failed twins again now, once each (whatever their failure kind and attempts so far)."""
    view = rollouts(lambda api: api.retry(configuration_id, device or None))
    asked = ", ".join(device) if device else "every failed twin"
    console.print(
        f"{view.id}: retry asked for {asked}; {view.progress.retrying} retrying, {view.progress.failed} failed"
    )


@configs.command("install")
def install_configuration(
    configuration_id: str,
    device: list[str] = typer.Option([], "--device", help="install on this twin (repeatable)"),
    stage: int | None = typer.Option(None, "--stage", help="install on the twins of this stage (1-based)"),
    all_twins: bool = typer.Option(False, "--all", help="install on every twin, now and admitted later"),
) -> None:
    """Install a download-only update (downloaded and verified, waiting for this trigger)."""
    trigger = InstallBody(devices=device or None, stage=stage, all=all_twins)
    view = rollouts(lambda api: api.install(configuration_id, trigger))
    t = view.install_triggers
    console.print(f"{view.id}: installs asked for all={t.all}, stages={[s + 1 for s in t.stages]}, devices={t.devices}")


@configs.command("release")
def release_configuration(configuration_id: str, cohort: str) -> None:
    """Admit a quarantined cohort (`key=value`, as `metrics` shows it) again."""
    view = rollouts(lambda api: api.release(configuration_id, cohort))
    console.print(f"{view.id}: released {cohort}; quarantined: {[c.label() for c in view.quarantined] or 'none'}")


@configs.command("preview")
def preview_configuration(
    what: str = typer.Argument(..., help="a stored draft's id, or a JSON/YAML spec file"),
    start: str | None = typer.Option(None, "--start", help="as if activated then (default now)"),
    assume: int = typer.Option(60, "--assume", help="seconds each twin takes to succeed"),
    limit: int = typer.Option(20, "--limit", help="twins listed"),
    as_json: bool = typer.Option(False, "--json", help="the whole answer as JSON"),
) -> None:
    """A dry run: the twins it would select, the keys each would win or lose, the stage timeline."""
    options = PreviewBody(start_at=parse_time(start) if start else None, assume_seconds=assume, limit=limit)
    path = Path(what)
    target: str | dict[str, Any] = yaml.safe_load(path.read_text()) if path.is_file() else what
    shown = rollouts(lambda api: api.preview(target, options))
    if as_json:
        print_json(shown)
        return
    print_preview(shown)


def print_preview(shown: PreviewView) -> None:
    stages = Table("stage", "size", "starts", "all admitted", "done")
    for s in shown.stages:
        stages.add_row(str(s.index + 1), str(s.target), _when(s.starts_at), _when(s.admitted_by), _when(s.done_at))
    console.print(f"{shown.targeted} twins targeted; completes {_when(shown.completes_at)}")
    console.print(stages)
    devices = Table("device", "stage", "admitted", "wins", "loses")
    for d in shown.devices:
        loses = ", ".join(f"{k} to {w}" for k, w in d.loses.items()) or "-"
        stage = "-" if d.stage is None else str(d.stage + 1)
        devices.add_row(d.device_id, stage, _when(d.admit_at), ", ".join(d.wins) or "-", loses)
    console.print(devices)
    if shown.truncated:
        console.print(f"(first {len(shown.devices)} of {shown.targeted} listed)")
    for entry in shown.history:
        console.print(f"{_when(entry.at)}  {entry.message}")
    console.print(f"assuming {shown.assumptions}")
