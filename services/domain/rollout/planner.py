"""The rollout planner: from a configuration and its counts, the next step of its rollout.

Level-triggered, like a Kubernetes controller: nothing here remembers what it did; each call looks
at where the rollout stands (stage, counts) and says what to do now — admit more twins to the
current stage, halt it, move to the next one, or finish. Calling it again after a crash, or twice
in a row, decides the same.

The pace is decided here too: each configuration carries an `Allowance` (a token bucket refilled at
its `max_per_minute`) from one step to the next, and a step admits no more than it holds — nor more
than the twins still waiting, less those admitted by earlier steps whose writes are under way.

Stages are cumulative shares of the twins targeted now. A stage moves on once its share is admitted
and none of its twins is still pending. Failures are judged per stage (the twins admitted in it):
more than the threshold's count, or more than its percent of the stage's size, halts the rollout
(pause or abort) before the next stage starts — even mid-stage, as soon as it is certain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.contracts.rollout import ConfigurationState, HaltAction
from services.domain.rollout.configuration import Configuration
from services.domain.rollout.membership import ConfigurationStats


@dataclass(frozen=True, slots=True)
class Allowance:
    """A pace of `per_minute` twins, as a token bucket the shell carries between steps."""

    tokens: float
    updated: float

    def refill(self, now: float, per_minute: int | None) -> Allowance:
        """Tokens earned since the last refill, at most a second's worth (and at least one) banked."""
        if per_minute is None:
            return Allowance(math.inf, now)
        burst = max(1.0, per_minute / 60.0)
        return Allowance(min(burst, self.tokens + max(0.0, now - self.updated) * per_minute / 60.0), now)

    def spend(self, n: int) -> Allowance:
        return Allowance(self.tokens - n, self.updated)

    @property
    def whole(self) -> int:
        return int(self.tokens) if self.tokens != math.inf else 1 << 62

    @staticmethod
    def fresh(now: float) -> Allowance:
        """A configuration's first allowance: one twin at once, then the pace."""
        return Allowance(1.0, now)


@dataclass(frozen=True, slots=True)
class Step:
    configuration: Configuration
    """The configuration after this step (the same object when nothing changed)."""
    allowance: Allowance
    """The pace's token bucket after this step (carried into the next one)."""
    admit: int = 0
    """How many more waiting twins to admit now."""
    stage: int = 0
    """The stage they are admitted to."""
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.notes)


def stage_targets(configuration: Configuration, targeted: int) -> list[int]:
    """Cumulative number of twins each stage covers, given `targeted` twins now."""
    targets: list[int] = []
    for stage in configuration.spec.rollout.stages:
        targets.append(max(stage.cumulative_target(targeted), targets[-1] if targets else 0))
    return targets


def halt_reason(configuration: Configuration, stats: ConfigurationStats, targets: list[int]) -> str | None:
    """The first stage so far whose failures exceed the threshold (and no operator accepted)."""
    threshold = configuration.spec.rollout.failure_threshold
    if threshold is None:
        return None
    for index in range(configuration.stage + 1):
        if index in configuration.accepted_stages:
            continue
        failed = stats.stage(index).failed
        size = max(1, targets[index] - (targets[index - 1] if index else 0), stats.stage(index).admitted)
        if threshold.count is not None and failed > threshold.count:
            return f"stage {index + 1} halted: {failed}/{size} failed > {threshold.count}"
        if threshold.percent is not None and failed * 100 > threshold.percent * size:
            return f"stage {index + 1} halted: {failed}/{size} failed > {threshold.percent:g}%"
    return None


def next_step(
    configuration: Configuration, stats: ConfigurationStats, allowance: Allowance, now: float, in_flight: int = 0
) -> Step:
    """What the rollout of `configuration` does next. `allowance` is the pace as the previous step
    left it (refilled here); `in_flight` twins were admitted by earlier steps and are still being
    written (they count as admitted, and are not chosen again)."""
    allowance = allowance.refill(now, configuration.spec.rollout.max_per_minute)
    state = configuration.state
    if state not in (ConfigurationState.ACTIVE, ConfigurationState.COMPLETED):
        return Step(configuration, allowance)
    targets = stage_targets(configuration, stats.targeted)
    last = len(targets) - 1
    stage = min(configuration.stage, last)

    def admitting(gap: int, into: int) -> Step:
        admit = max(0, min(gap - in_flight, stats.waiting - in_flight, allowance.whole))
        return Step(configuration, allowance.spend(admit), admit=admit, stage=into)

    if state is ConfigurationState.COMPLETED:  # keeps admitting twins that start matching later
        return admitting(targets[last] - stats.total().admitted, last)

    reason = halt_reason(configuration, stats, targets)
    if reason is not None:
        threshold = configuration.spec.rollout.failure_threshold
        abort = threshold is not None and threshold.action is HaltAction.ABORT
        rollback = abort and configuration.spec.rollout.rollback_content is not None
        note = reason + ("; aborted" + ("; rolling back" if rollback else "") if abort else "; paused")
        halted = configuration.with_history(
            int(now),
            note,
            state=ConfigurationState.ABORTED if abort else ConfigurationState.PAUSED,
            reason=reason,
            rollback=rollback,
        )
        return Step(halted, allowance, notes=[note])

    admitted = stats.total(stage).admitted
    if admitted < targets[stage]:
        return admitting(targets[stage] - admitted, stage)
    if stats.targeted == 0 or stats.total(stage).pending:
        return Step(configuration, allowance)  # nothing targeted yet, or the stage is still settling
    done = stats.stage(stage)
    summary = f"stage {stage + 1} done: {done.succeeded}/{done.admitted} succeeded, {done.failed} failed"
    if stage == last:
        total = stats.total()
        note = f"{summary}; rollout completed: {total.succeeded}/{total.admitted} succeeded, {total.failed} failed"
        completed = configuration.with_history(int(now), note, state=ConfigurationState.COMPLETED)
        return Step(completed, allowance, notes=[note])
    note = f"{summary}; stage {stage + 2} started: {targets[stage + 1]} of {stats.targeted} twins"
    advanced = configuration.with_history(int(now), note, stage=stage + 1)
    return Step(advanced, allowance, notes=[note])
