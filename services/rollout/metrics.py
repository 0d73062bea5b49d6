"""Prometheus metrics of the rollout app: writes and evaluations, and per configuration its state,
hold, twins by outcome (incl. retrying, quarantined, outside their window, awaiting consent or the
install trigger) and the decisions it took (stages, holds, health checks, quarantines, retries)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.contracts.rollout import ConfigurationState, Hold
from services.domain.rollout.configuration import Configuration
from services.domain.rollout.membership import ConfigurationStats
from services.domain.rollout.twin_plan import Mark
from services.domain.software.twin_key import UpdateStatus

EVALUATIONS = Counter("rollout_evaluations_total", "Configurations evaluated against a twin")
WRITES = Counter("rollout_twin_writes_total", "Twin writes by the twin-store's answer", ["outcome"])
STATE = Gauge("rollout_configuration_state", "1 for the state a configuration is in", ["configuration", "state"])
HOLD = Gauge(
    "rollout_configuration_hold", "1 while an active rollout is held (start, window, ended)", ["configuration", "hold"]
)
STAGE = Gauge("rollout_configuration_stage", "The stage being rolled out (1-based)", ["configuration"])
TWINS = Gauge("rollout_twins", "Targeted twins by where they stand", ["configuration", "status"])
DECISIONS = Counter(
    "rollout_decisions_total",
    "Rollout decisions: stage, completed, halted, aborted, scheduled, held_window, window_open, ended, soak, "
    "health_ok, health_held, quarantined, released, retry_asked, install_triggered",
    ["configuration", "decision"],
)
RETRIES = Counter("rollout_retries_total", "Retry attempts written to twins", ["configuration", "trigger"])
RETRIES_SCHEDULED = Counter("rollout_retries_scheduled_total", "Retries scheduled by policy", ["configuration"])
INSTALLS = Counter(
    "rollout_installs_triggered_total", "Download-only twins whose install was written", ["configuration"]
)
EVENTS_KEPT = Gauge("rollout_event_devices", "Devices whose recent events health gates count")
PREVIEWS = Counter("rollout_previews_total", "Dry runs computed")

_PHASES = {
    "awaiting_consent": UpdateStatus.WAITING_FOR_CONSENT.value,
    "awaiting_install": UpdateStatus.WAITING_FOR_INSTALL.value,
}
_HOLDS = {Hold.WINDOW: "held_window", Hold.ENDED: "ended", Hold.START: "scheduled"}


def record_stats(configuration: Configuration, stats: ConfigurationStats, outside_window: int) -> None:
    """Set a configuration's gauges from its counts (every round)."""
    cid = configuration.id
    for state in ConfigurationState:
        STATE.labels(cid, state.value).set(1 if configuration.state is state else 0)
    for hold in Hold:
        if hold is not Hold.NONE:
            HOLD.labels(cid, hold.value).set(1 if configuration.hold is hold else 0)
    STAGE.labels(cid).set(configuration.stage + 1)
    total = stats.total()
    counts = {
        "targeted": stats.targeted,
        "waiting": stats.waiting,
        "outside_window": outside_window,
        "pending": total.pending,
        "succeeded": total.succeeded,
        "failed": total.failed,
        "retrying": total.retrying,
        "superseded": total.superseded,
        "rolled_back": total.rolled_back,
        "quarantined": stats.quarantined,
        "installed": stats.installed,
        **{name: stats.phases.get(phase, 0) for name, phase in _PHASES.items()},
    }
    for status, value in counts.items():
        TWINS.labels(cid, status).set(value)


def record_decision(before: Configuration, after: Configuration) -> None:
    """Count what a stored planner decision did."""
    cid = after.id
    kinds: list[str] = []
    if after.stage != before.stage:
        kinds.append("stage")
    if after.state is not before.state:
        kinds.append(
            {ConfigurationState.COMPLETED: "completed", ConfigurationState.PAUSED: "halted"}.get(after.state, "aborted")
        )
    if after.hold is not before.hold:
        kinds.append(_HOLDS.get(after.hold, "window_open"))
    if after.soak_since is not None and before.soak_since is None:
        kinds.append("soak")
    if after.health_checks and after.health_checks != before.health_checks:
        kinds.append("health_ok" if after.health_checks[-1].passed else "health_held")
    if len(after.quarantined) > len(before.quarantined):
        kinds.append("quarantined")
    for kind in kinds:
        DECISIONS.labels(cid, kind).inc()


def record_operator(configuration: Configuration, decision: str) -> None:
    DECISIONS.labels(configuration.id, decision).inc()


def forget(configuration_id: str) -> None:
    """Drop a deleted configuration's series."""
    for metric in (STATE, HOLD, STAGE, TWINS, DECISIONS, RETRIES, RETRIES_SCHEDULED, INSTALLS):
        for labels in [
            k for k in metric._metrics if k and k[0] == configuration_id
        ]:  # prometheus-client has no public way to list a metric's series
            metric.remove(*labels)


def record_mark(before: Mark | None, after: Mark | None, configuration_id: str = "") -> None:
    """Count retries and installs a landed write made."""
    if before is None or after is None:
        return
    if after.attempt > before.attempt:
        RETRIES.labels(configuration_id, "operator" if after.request > before.request else "policy").inc()
    elif after.retry_at is not None and before.retry_at is None:
        RETRIES_SCHEDULED.labels(configuration_id).inc()
    if after.install_at is not None and before.install_at is None:
        INSTALLS.labels(configuration_id).inc()
