"""One rollout round for one configuration, pure: the planner's step, and which waiting twins it
admits — the first in the rollout order among those whose maintenance window is open now with room
for the install. The reconciler runs `decide` every round and writes what it says; a dry run
(`preview.project`) runs the very same function over simulated time, so the two cannot disagree.

A rollout that wants to admit but finds every waiting twin outside its window holds (`Hold.WINDOW`,
"maintenance window closed: …" in the history) until a window opens again ("… open: admitting").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from services.contracts.rollout import ConfigurationState, Hold
from services.domain.rollout.configuration import CompiledConfiguration, Configuration
from services.domain.rollout.health import EventLog, HealthVerdict, Rate, judge
from services.domain.rollout.membership import Membership
from services.domain.rollout.planner import Allowance, format_time, next_step, soak_due
from services.domain.rollout.schedule import Admission, admission
from services.domain.rollout.twin_plan import Outcome


@dataclass(frozen=True, slots=True)
class Decision:
    configuration: Configuration
    """The configuration after this round (the same object when nothing changed)."""
    allowance: Allowance
    admit: list[str] = field(default_factory=list)
    """Waiting twins to admit now, in the rollout's order."""
    stage: int = 0
    notes: list[str] = field(default_factory=list)
    wake_at: float | None = None
    """When time alone may change the decision (None: only new facts)."""
    outside_window: int = 0
    """Waiting twins not admissible now (outside their window, or before the start time)."""

    @property
    def changed(self) -> bool:
        return bool(self.notes)


def decide(
    compiled: CompiledConfiguration,
    membership: Membership,
    events: EventLog,
    allowance: Allowance,
    now: float,
    in_flight: Collection[str] = (),
    observing_since: float = 0.0,
) -> Decision:
    """What one configuration's rollout does this round. `in_flight` twins were admitted by earlier
    rounds and are still being written; device events before `observing_since` are unknown."""
    configuration = compiled.configuration
    health = None
    if configuration.state is ConfigurationState.ACTIVE and soak_due(configuration, now, observing_since):
        health = health_verdict(compiled, membership, events, now, observing_since)
    stats = membership.stats(compiled.id)
    step = next_step(configuration, stats, allowance, now, len(in_flight), health, observing_since)
    if step.changed:
        return Decision(step.configuration, step.allowance, stage=step.stage, notes=step.notes)
    schedule = configuration.spec.rollout.schedule
    zones = membership.waiting_zones(compiled.id) if schedule is not None else {}
    states: dict[str, Admission] = {z: admission(schedule, z, now) for z in zones}
    outside = sum(n for z, n in zones.items() if not states[z].now)
    if step.wanted == 0:
        return Decision(configuration, step.allowance, stage=step.stage, wake_at=step.wake_at, outside_window=outside)
    if schedule is not None and schedule.windows and not any(s.now for s in states.values()):
        # refund: nothing admissible, so the pace's tokens are not spent
        kept = step.allowance.spend(-step.admit)
        opens = min((s.next_at for s in states.values() if s.next_at is not None), default=None)
        if configuration.hold is not Hold.WINDOW:
            when = f"opens {format_time(opens)}" if opens is not None else "none opens before the end time"
            note = f"maintenance window closed: {outside} twins wait for the next one ({when})"
            return Decision(configuration.with_history(int(now), note, hold=Hold.WINDOW), kept, notes=[note])
        # nothing can be admitted before a window opens, whatever the pace: wake then (or at the end)
        end_at = schedule.end_at
        wake = _earliest(opens, float(end_at) if end_at is not None and end_at > now else None)
        return Decision(configuration, kept, stage=step.stage, wake_at=wake, outside_window=outside)
    if configuration.hold is Hold.WINDOW:
        note = "maintenance window open: admitting again"
        kept = step.allowance.spend(-step.admit)
        return Decision(configuration.with_history(int(now), note, hold=Hold.NONE), kept, notes=[note])
    admissible = None if schedule is None else (lambda zone: states[zone].now)
    chosen = membership.candidates(compiled.id, step.admit, in_flight, admissible)
    wake = step.wake_at
    if schedule is not None:
        # an open window stops taking twins when the install no longer fits; a closed one opens
        for state in states.values():
            edge = state.closes_at - schedule.install_seconds if state.now and state.closes_at else state.next_at
            wake = _earliest(wake, edge if edge is not None and edge > now else None)
    return Decision(
        configuration,
        step.allowance.spend(len(chosen) - step.admit),
        chosen,
        step.stage,
        wake_at=wake,
        outside_window=outside,
    )


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def health_verdict(
    compiled: CompiledConfiguration, membership: Membership, events: EventLog, now: float, observing_since: float
) -> HealthVerdict:
    """The current stage's health: twins updated so far (succeeded, this stage and before) against
    the hold-out (targeted, not yet admitted), over the soak window; quarantined cohorts aside."""
    configuration = compiled.configuration
    gate = configuration.spec.rollout.health
    assert gate is not None and configuration.soak_since is not None
    since = max(configuration.soak_since, observing_since)
    counts = {True: [0, 0], False: [0, 0]}  # updated? -> [unhealthy, total]
    for device_id, placement in membership.members(compiled.id):
        if placement.quarantined:
            continue
        if placement.outcome is Outcome.SUCCEEDED and placement.stage <= configuration.stage:
            group = counts[True]
        elif placement.outcome is Outcome.WAITING:
            group = counts[False]
        else:
            continue
        hit = membership.facts[device_id].hits[compiled.id]
        unhealthy = hit.unhealthy or (bool(gate.events) and events.count(device_id, gate.events, since) > 0)
        group[0] += int(unhealthy)
        group[1] += 1
    updated, holdout = Rate(*counts[True]), Rate(*counts[False])
    return judge(configuration.stage, gate.label, updated, holdout, gate.margin_percent)
