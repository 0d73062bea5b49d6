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

from services.contracts.rollout import ConfigurationSpec, ConfigurationState, HistoryEntry
from services.domain.access import Scope
from services.domain.errors import TwinError, bad_request, conflict
from services.domain.rollout.conditions import TargetCondition, compile_condition
from services.domain.twin.limits import Limits, check_section

CONFIGURATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_METRICS = 20
MAX_HISTORY = 200
"""History entries kept per configuration (the oldest are dropped)."""


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
    scope: dict[str, str] = Field(default_factory=dict)
    """The tag scope of whoever created it: its target condition selects only twins within it."""

    @property
    def id(self) -> str:
        return self.spec.id

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
