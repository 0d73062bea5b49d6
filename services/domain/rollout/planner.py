"""The rollout planner: from a configuration and its counts, the next step of its rollout.

Level-triggered, like a Kubernetes controller: nothing here remembers what it did; each call looks
at where the rollout stands (stage, counts) and says what to do now — admit more twins to the
current stage, halt it, move to the next one, or finish. Calling it again after a crash, or twice
in a row, decides the same.

The pace is decided here too: each configuration carries an `Allowance` (a token bucket refilled at
its `max_per_minute`, or at an exponential ramp's rate, which grows with the twins succeeded) from
one step to the next, and a step admits no more than it holds — nor more than the twins still
waiting, less those admitted by earlier steps whose writes are under way.

Stages are cumulative shares of the twins targeted now (less quarantined cohorts). A stage moves on
once its share is admitted and none of its twins is still pending or to be retried — and, with a
health gate, once its updated twins proved no less healthy than the hold-out over the soak time.
Failures are judged per stage (the twins admitted in it): more than the threshold's count, or more
than its percent of the stage's size, halts the rollout (pause or abort) before the next stage
starts — even mid-stage, as soon as it is certain. A cohort the failures concentrate in is
quarantined first, so the rest goes on. Nothing is admitted before the start time, and after the
end time the rollout completes once what it admitted settled.

Each step says when time alone could change its answer (`wake_at`: the pace refills, a soak ends,
the start or end time comes), so a dry run can skip the rounds in between and decide the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from services.contracts.rollout import (
    Cohort,
    ConfigurationState,
    HaltAction,
    HealthComparison,
    Hold,
    RolloutPolicy,
)
from services.domain.rollout.cohorts import concentrated
from services.domain.rollout.configuration import MAX_HEALTH_CHECKS, Configuration
from services.domain.rollout.health import HealthVerdict, soak_ends
from services.domain.rollout.membership import ConfigurationStats

UNCAPPED_RAMP = 1e9
"""A ramp without `maxPerMinute` stops growing here (a billion twins a minute)."""


@dataclass(frozen=True, slots=True)
class Allowance:
    """A pace of `per_minute` twins, as a token bucket the shell carries between steps."""

    tokens: float
    updated: float

    def refill(self, now: float, per_minute: float | None) -> Allowance:
        """Tokens earned since the last refill, at most a second's worth (and at least one) banked."""
        if per_minute is None:
            return Allowance(math.inf, now)
        burst = max(1.0, per_minute / 60.0)
        tokens = self.tokens if self.tokens != math.inf else burst
        return Allowance(min(burst, tokens + max(0.0, now - self.updated) * per_minute / 60.0), now)

    def spend(self, n: int) -> Allowance:
        return Allowance(self.tokens - n, self.updated)

    def ready_at(self, per_minute: float | None) -> float | None:
        """When the next whole token is there (None: unpaced)."""
        if per_minute is None or self.tokens == math.inf:
            return None
        missing = math.floor(self.tokens) + 1 - self.tokens
        return self.updated + missing * 60.0 / per_minute

    @property
    def whole(self) -> int:
        return int(self.tokens) if self.tokens != math.inf else 1 << 62

    @staticmethod
    def fresh(now: float) -> Allowance:
        """A configuration's first allowance: one twin at once, then the pace."""
        return Allowance(1.0, now)


def rate_per_minute(policy: RolloutPolicy, succeeded: int) -> float | None:
    """The pace now: flat `max_per_minute`, or a ramp's base times its factor once per `every`
    twins succeeded (capped by `max_per_minute`); None: unpaced."""
    ramp = policy.ramp
    if ramp is None:
        return None if policy.max_per_minute is None else float(policy.max_per_minute)
    steps = succeeded // ramp.every
    cap = float(policy.max_per_minute) if policy.max_per_minute is not None else UNCAPPED_RAMP
    if steps * math.log(ramp.factor) >= math.log(cap / ramp.base_per_minute):
        return cap  # at or past the cap (and no overflow from factor ** steps)
    return min(cap, ramp.base_per_minute * ramp.factor**steps)


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
    wanted: int = 0
    """How many the stage still wants admitted, before the pace (0: it wants none)."""
    wake_at: float | None = None
    """When time alone may change this step's answer (None: only new facts)."""

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


def soak_due(configuration: Configuration, now: float, observing_since: float) -> bool:
    """Whether the current stage's health soak has run its full length (a verdict is wanted)."""
    gate = configuration.spec.rollout.health
    since = configuration.soak_since
    return gate is not None and since is not None and now >= soak_ends(since, observing_since, gate.soak_seconds)


def format_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def next_step(
    configuration: Configuration,
    stats: ConfigurationStats,
    allowance: Allowance,
    now: float,
    in_flight: int = 0,
    health: HealthVerdict | None = None,
    observing_since: float = 0.0,
) -> Step:
    """What the rollout of `configuration` does next. `allowance` is the pace as the previous step
    left it (refilled here); `in_flight` twins were admitted by earlier steps and are still being
    written (they count as admitted, and are not chosen again). `health` is the current stage's
    health verdict once its soak is due (`soak_due`); events before `observing_since` are unknown."""
    policy = configuration.spec.rollout
    rate = rate_per_minute(policy, stats.total().succeeded)
    allowance = allowance.refill(now, rate)
    state = configuration.state
    if state not in (ConfigurationState.ACTIVE, ConfigurationState.COMPLETED):
        return Step(configuration, allowance)
    targets = stage_targets(configuration, stats.targeted)
    last = len(targets) - 1
    stage = min(configuration.stage, last)
    schedule = policy.schedule
    ended = schedule is not None and schedule.end_at is not None and now >= schedule.end_at

    def changed(note: str, **changes: object) -> Step:
        return Step(configuration.with_history(int(now), note, **changes), allowance, notes=[note])

    def admitting(gap: int, into: int) -> Step:
        wanted = max(0, min(gap - in_flight, stats.waiting - in_flight))
        admit = min(wanted, allowance.whole)
        wake = allowance.ready_at(rate) if admit < wanted else None
        return Step(configuration, allowance.spend(admit), admit=admit, stage=into, wanted=wanted, wake_at=wake)

    if schedule is not None and schedule.start_at is not None and now < schedule.start_at:
        if configuration.hold is not Hold.START:
            return changed(f"waits for its start time, {format_time(schedule.start_at)}", hold=Hold.START)
        return Step(configuration, allowance, wake_at=float(schedule.start_at))
    if configuration.hold is Hold.START:
        return changed("start time reached: stage 1 admitting", hold=Hold.NONE)

    if state is ConfigurationState.COMPLETED:  # keeps admitting twins that start matching later
        if ended:
            return Step(configuration, allowance)
        step = admitting(targets[last] - stats.total().admitted, last)
        return _until(step, schedule.end_at if schedule is not None else None)

    if policy.cohorts is not None:
        found = concentrated(policy.cohorts, stats.cohorts)
        if found:
            hit = found[0]
            cohort = Cohort(
                key=hit.key, value=hit.value, failed=hit.cohort.hits, admitted=hit.cohort.total, at=int(now)
            )
            return changed(hit.note(), quarantined=[*configuration.quarantined, cohort])

    reason = halt_reason(configuration, stats, targets)
    if reason is not None:
        threshold = configuration.spec.rollout.failure_threshold
        abort = threshold is not None and threshold.action is HaltAction.ABORT
        rollback = abort and configuration.spec.rollout.rollback_content is not None
        note = reason + ("; aborted" + ("; rolling back" if rollback else "") if abort else "; paused")
        return changed(
            note,
            state=ConfigurationState.ABORTED if abort else ConfigurationState.PAUSED,
            reason=reason,
            rollback=rollback,
        )

    if ended:
        if configuration.hold is not Hold.ENDED:
            return changed(f"end time reached: {stats.waiting} twins not reached; no more admissions", hold=Hold.ENDED)
        if stats.settling:
            return Step(configuration, allowance)
        total = stats.total()
        note = (
            f"rollout ended at its end time: {total.succeeded}/{total.admitted} succeeded, {total.failed} failed, "
            f"{stats.waiting} not reached"
        )
        return changed(note, state=ConfigurationState.COMPLETED)

    admitted = stats.total(stage).admitted
    if admitted < targets[stage]:
        return _until(admitting(targets[stage] - admitted, stage), schedule.end_at if schedule else None)
    settling = stats.total(stage)
    if stats.targeted == 0 or settling.pending or settling.retrying:
        return _until(Step(configuration, allowance), schedule.end_at if schedule else None)

    done = stats.stage(stage)
    summary = f"stage {stage + 1} done: {done.succeeded}/{done.admitted} succeeded, {done.failed} failed"
    checks = configuration.health_checks
    gate = policy.health
    if gate is not None and stage != last and stage not in configuration.accepted_stages:
        if configuration.soak_since is None:
            return changed(f"{summary}; soaking {gate.soak_seconds}s before its health comparison", soak_since=int(now))
        ends = soak_ends(configuration.soak_since, observing_since, gate.soak_seconds)
        if now < ends or health is None:
            return Step(configuration, allowance, wake_at=ends)
        check = HealthComparison(
            stage=stage,
            at=int(now),
            updated=health.updated.total,
            updated_unhealthy=health.updated.hits,
            holdout=health.holdout.total,
            holdout_unhealthy=health.holdout.hits,
            passed=health.passed,
            message=health.message,
        )
        checks = [*checks, check][-MAX_HEALTH_CHECKS:]
        if not health.passed:
            return changed(
                f"{health.message}; paused",
                state=ConfigurationState.PAUSED,
                reason=health.message,
                health_checks=checks,
            )
        summary = f"{summary}; {health.message}"
    if stage == last:
        total = stats.total()
        note = f"{summary}; rollout completed: {total.succeeded}/{total.admitted} succeeded, {total.failed} failed"
        return changed(note, state=ConfigurationState.COMPLETED, soak_since=None, health_checks=checks)
    note = f"{summary}; stage {stage + 2} started: {targets[stage + 1]} of {stats.targeted} twins"
    return changed(note, stage=stage + 1, soak_since=None, health_checks=checks)


def _until(step: Step, end_at: int | None) -> Step:
    """`step`, woken at the end time too (when admissions stop)."""
    if end_at is None:
        return step
    wake = end_at if step.wake_at is None else min(step.wake_at, end_at)
    return Step(step.configuration, step.allowance, step.admit, step.stage, step.notes, step.wanted, wake)
