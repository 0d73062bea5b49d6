"""Configurations: what to write into which twins' desired state, and how to roll it out.

A configuration is an id, a target condition (CEL over a twin), a priority, content (a desired-state
patch; each top-level key is the unit of conflict between configurations), custom metrics (CEL
conditions counted over targeted twins) and a rollout policy (stages, pace, success and failure
conditions, per-device timeout, failure threshold, optional rollback content).

Lifecycle: draft → active → paused ⇄ active → completed, and aborted from any live state. Content and
target are editable only in draft; a new version is a new configuration. The transitions here are
pure: they take the configuration and the clock and return the new one, or raise a 409 saying why.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from services.contracts.rollout import (
    Cohort,
    ConfigurationSpec,
    ConfigurationState,
    HealthComparison,
    HistoryEntry,
    Hold,
    InstallBody,
    InstallTriggers,
    RetryRequest,
)
from services.domain.access import Scope
from services.domain.errors import TwinError, bad_request, conflict, not_found
from services.domain.rollout.cohorts import check_cohort_policy
from services.domain.rollout.conditions import TargetCondition, compile_condition
from services.domain.rollout.retries import check_retry_policy
from services.domain.rollout.schedule import check_schedule
from services.domain.software.twin_key import SOFTWARE_KEY, desired_artifact
from services.domain.twin.limits import Limits, check_section

CONFIGURATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_METRICS = 20
MAX_HISTORY = 200
"""History entries kept per configuration (the oldest are dropped)."""
MAX_HEALTH_CHECKS = 20
MAX_DEVICE_REQUESTS = 10_000
"""Per-device retry requests and install triggers kept (the oldest are dropped: use a stage or all)."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Configuration(_Model):
    """A configuration as stored: the spec plus where its rollout stands."""

    spec: ConfigurationSpec
    state: ConfigurationState = ConfigurationState.DRAFT
    stage: int = 0
    """Index of the stage being rolled out."""
    accepted_stages: list[int] = Field(default_factory=list)
    """Stages an operator resumed after they halted: their failures no longer halt the rollout."""
    reason: str = ""
    """Why the rollout last halted (or was cancelled)."""
    rollback: bool = False
    """Aborted with rollback: the twins it was applied to get `rollback_content`."""
    created_at: int = 0
    activated_at: int | None = None
    updated_at: int = 0
    revision: int = 0
    """Bumped on every stored change; lets readers tell a stale copy."""
    history: list[HistoryEntry] = Field(default_factory=list)
    hold: Hold = Hold.NONE
    """Why the active rollout admits nothing although twins wait (start time, windows, end time)."""
    soak_since: int | None = None
    """When the current stage settled and its health soak began (health-gated rollouts)."""
    health_checks: list[HealthComparison] = Field(default_factory=list)
    quarantined: list[Cohort] = Field(default_factory=list)
    install_triggers: InstallTriggers = Field(default_factory=InstallTriggers)
    retry_serial: int = 0
    retry_all: RetryRequest | None = None
    retry_devices: dict[str, RetryRequest] = Field(default_factory=dict)
    scope: dict[str, str] = Field(default_factory=dict)
    """The tag scope of whoever created it: its target condition selects only twins within it."""

    @property
    def id(self) -> str:
        return self.spec.id

    def retry_request(self, device_id: str) -> RetryRequest | None:
        """The newest operator retry covering `device_id` (all failed twins, or this one)."""
        found = [r for r in (self.retry_all, self.retry_devices.get(device_id)) if r is not None]
        return max(found, key=lambda r: r.serial, default=None)

    def in_quarantine(self, values: dict[str, str]) -> Cohort | None:
        """The quarantined cohort a twin with these cohort values belongs to, if any."""
        return next((c for c in self.quarantined if values.get(c.key) == c.value), None)

    def with_history(self, now: int, *messages: str, **changes: object) -> Configuration:
        """A copy with `changes` applied, `messages` appended to the history and the revision bumped."""
        history = [*self.history, *(HistoryEntry(at=now, message=m) for m in messages)][-MAX_HISTORY:]
        return self.model_copy(update={**changes, "history": history, "updated_at": now, "revision": self.revision + 1})

    def precedence(self) -> tuple[int, int, str]:
        """Higher wins a contested key: priority, then the newer configuration, then the id."""
        return (self.spec.priority, self.created_at, self.spec.id)


class CompiledConfiguration:
    """A configuration with its conditions compiled once (what the planner evaluates)."""

    def __init__(self, configuration: Configuration) -> None:
        spec = configuration.spec
        self.configuration = configuration
        self.target = compile_condition(spec.target_condition)
        self.scope: Scope = configuration.scope
        """Its creator's tag scope, ANDed with the target condition (`evaluate_twin`)."""
        policy = spec.rollout
        self.success = _compile_optional("success condition", policy.success_condition)
        self.failure = _compile_optional("failure condition", policy.failure_condition)
        self.metrics = {name: _compile_metric(name, text) for name, text in spec.metrics.items()}
        health = policy.health
        self.unhealthy = _compile_optional("health condition", health.unhealthy if health else None)

    @property
    def id(self) -> str:
        return self.configuration.spec.id

    @cached_property
    def content_keys(self) -> frozenset[str]:
        return frozenset(self.configuration.spec.content)


def _compile_optional(what: str, text: str | None) -> TargetCondition | None:
    if text is None:
        return None
    try:
        return compile_condition(text)
    except TwinError as error:
        raise bad_request(error.message.replace("target condition", what)) from None


def _compile_metric(name: str, text: str) -> TargetCondition:
    try:
        return compile_condition(text)
    except TwinError as error:
        raise bad_request(error.message.replace("target condition", f"metric {name!r}")) from None


def validate_spec(spec: ConfigurationSpec, limits: Limits) -> CompiledConfiguration:
    """Check what pydantic cannot: id, metric names, content limits, every condition compiles.
    Raises a 400 naming the problem; returns the compiled configuration."""
    if not CONFIGURATION_ID.match(spec.id):
        raise bad_request(
            "configuration id must be 1..64 of letters, digits and _ . - (starting with one of the first two)"
        )
    if not spec.content:
        raise bad_request("content is empty: a configuration writes at least one desired key")
    check_section("content", spec.content, limits)
    if spec.rollout.rollback_content is not None:
        check_section("rollout.rollbackContent", spec.rollout.rollback_content, limits)
    if len(spec.metrics) > MAX_METRICS:
        raise bad_request(f"at most {MAX_METRICS} custom metrics")
    for name in spec.metrics:
        if not METRIC_NAME.match(name):
            raise bad_request(f"metric name {name!r} must be a letter then letters, digits or _ (at most 64)")
    policy = spec.rollout
    if policy.schedule is not None:
        check_schedule(policy.schedule)
    if policy.retry is not None:
        check_retry_policy(policy.retry)
    if policy.cohorts is not None:
        check_cohort_policy(policy.cohorts)
    if policy.install is not None and desired_artifact(spec.content.get(SOFTWARE_KEY)) is None:
        raise bad_request('rollout.install needs a software update in the content: {"software": {"artifact": …}}')
    return CompiledConfiguration(Configuration(spec=spec))


# -- lifecycle ------------------------------------------------------------------------------------
Action = Literal["activate", "pause", "resume", "cancel"]


def new_configuration(spec: ConfigurationSpec, now: int, scope: Scope | None = None) -> Configuration:
    """A draft; created by a scoped caller, it keeps that scope, and its target condition is ANDed
    with it (a twin is targeted only if its tags are within the scope and the condition holds), so
    it can never select a twin outside the scope, whatever the condition says."""
    return Configuration(
        spec=spec,
        created_at=now,
        updated_at=now,
        history=[HistoryEntry(at=now, message="created")],
        scope=dict(scope or {}),
    )


def replace_spec(configuration: Configuration, spec: ConfigurationSpec, now: int) -> Configuration:
    """Edit a draft; 409 once active (content and target are immutable: create a new configuration)."""
    if configuration.state is not ConfigurationState.DRAFT:
        raise conflict(
            f"configuration {configuration.id} is {configuration.state}: content and target are immutable "
            "once active; create a new configuration (a new id) instead"
        )
    return configuration.with_history(now, "edited", spec=spec)


def activate(configuration: Configuration, now: int) -> Configuration:
    _require(configuration, "activate", ConfigurationState.DRAFT)
    return configuration.with_history(
        now,
        f"activated: stage 1 of {len(configuration.spec.rollout.stages)} started",
        state=ConfigurationState.ACTIVE,
        activated_at=now,
        stage=0,
    )


def pause(configuration: Configuration, now: int, reason: str = "paused by operator") -> Configuration:
    _require(configuration, "pause", ConfigurationState.ACTIVE)
    return configuration.with_history(now, reason, state=ConfigurationState.PAUSED, reason=reason)


def resume(configuration: Configuration, now: int) -> Configuration:
    """Resume a paused rollout; a stage that halted on its failures is accepted as it is."""
    _require(configuration, "resume", ConfigurationState.PAUSED)
    accepted = sorted({*configuration.accepted_stages, configuration.stage})
    return configuration.with_history(
        now,
        f"resumed by operator at stage {configuration.stage + 1}",
        state=ConfigurationState.ACTIVE,
        accepted_stages=accepted,
        reason="",
    )


def cancel(configuration: Configuration, now: int, rollback: bool = True) -> Configuration:
    """Stop for good; with `rollback` (and rollback content) the twins it reached get that content."""
    _require(
        configuration, "cancel", ConfigurationState.ACTIVE, ConfigurationState.PAUSED, ConfigurationState.COMPLETED
    )
    rolls_back = rollback and configuration.spec.rollout.rollback_content is not None
    reason = "cancelled by operator" + ("; rolling back" if rolls_back else "")
    return configuration.with_history(now, reason, state=ConfigurationState.ABORTED, reason=reason, rollback=rolls_back)


def request_retry(configuration: Configuration, devices: list[str] | None, now: int) -> Configuration:
    """An operator's retry of failed twins (`devices`, or all): each is tried once more now,
    whatever its failure and attempts (the policy's limits are for automatic retries)."""
    _require(configuration, "retry", ConfigurationState.ACTIVE, ConfigurationState.PAUSED, ConfigurationState.COMPLETED)
    request = RetryRequest(serial=configuration.retry_serial + 1, at=now)
    if devices is None:
        return configuration.with_history(
            now, "retry of every failed twin asked by operator", retry_serial=request.serial, retry_all=request
        )
    if not devices:
        raise bad_request("devices is empty: leave it out to retry every failed twin")
    kept = {d: r for d, r in configuration.retry_devices.items() if d not in devices}
    kept |= dict.fromkeys(devices, request)
    newest = dict(sorted(kept.items(), key=lambda item: item[1].serial)[-MAX_DEVICE_REQUESTS:])
    named = ", ".join(devices[:5]) + (f" and {len(devices) - 5} more" if len(devices) > 5 else "")
    return configuration.with_history(
        now, f"retry asked by operator for {named}", retry_serial=request.serial, retry_devices=newest
    )


def trigger_install(configuration: Configuration, body: InstallBody, now: int) -> Configuration:
    """Install a download-only update: on some devices, one stage (1-based) or all twins."""
    install = configuration.spec.rollout.install
    if install is None or not install.later:
        raise conflict(f"configuration {configuration.id} installs as it downloads (rollout.install.later is off)")
    _require(
        configuration, "install", ConfigurationState.ACTIVE, ConfigurationState.PAUSED, ConfigurationState.COMPLETED
    )
    triggers = configuration.install_triggers
    stages = len(configuration.spec.rollout.stages)
    if body.all:
        what, triggers = "all twins", triggers.model_copy(update={"all": True})
    elif body.stage is not None:
        if body.stage > stages:
            raise bad_request(f"stage {body.stage}: the configuration has {stages} stages")
        what = f"stage {body.stage}"
        triggers = triggers.model_copy(update={"stages": sorted({*triggers.stages, body.stage - 1})})
    elif body.devices:
        devices = [d for d in triggers.devices if d not in body.devices] + body.devices
        what = ", ".join(body.devices[:5]) + (f" and {len(body.devices) - 5} more" if len(body.devices) > 5 else "")
        triggers = triggers.model_copy(update={"devices": devices[-MAX_DEVICE_REQUESTS:]})
    else:
        raise bad_request("say what to install: devices, stage or all")
    return configuration.with_history(now, f"install triggered by operator for {what}", install_triggers=triggers)


def release_cohort(configuration: Configuration, label: str, now: int) -> Configuration:
    """Admit a quarantined cohort (`key=value`) again; its failures count again."""
    kept = [c for c in configuration.quarantined if c.label() != label]
    if len(kept) == len(configuration.quarantined):
        shown = ", ".join(c.label() for c in configuration.quarantined) or "none"
        raise not_found(f"configuration {configuration.id} has no quarantined cohort {label!r} (quarantined: {shown})")
    return configuration.with_history(now, f"cohort {label} released by operator", quarantined=kept)


def check_deletable(configuration: Configuration) -> None:
    """Only drafts and aborted configurations may be deleted (a live one owns keys on twins)."""
    if configuration.state.live:
        raise conflict(f"configuration {configuration.id} is {configuration.state}: cancel it before deleting it")


def apply_action(configuration: Configuration, action: Action, now: int, rollback: bool = True) -> Configuration:
    if action == "activate":
        return activate(configuration, now)
    if action == "pause":
        return pause(configuration, now)
    if action == "resume":
        return resume(configuration, now)
    return cancel(configuration, now, rollback)


def _require(configuration: Configuration, action: str, *states: ConfigurationState) -> None:
    if configuration.state not in states:
        allowed = " or ".join(s.value for s in states)
        raise conflict(f"cannot {action} configuration {configuration.id}: it is {configuration.state}, not {allowed}")
