"""A dry run: what activating a configuration would do, computed by the rollout's own pure functions.

`project` plays the rollout forward in simulated time from the twins as they are now: every round
it calls `admissions.decide` — the function the reconciler runs — admits what it says, and lets each
admitted twin succeed `assume` seconds after its write (writes are taken to land at once). Rounds
are `tick` seconds apart, as the reconciler's; when a decision says nothing can change before its
`wake_at` (and no twin finishes sooner), the rounds in between are skipped, so a week of windows
costs a handful of rounds and decides exactly what ticking through them would.

`contest` (in `twin_plan`) says which keys each selected twin would win or lose against the
configurations already in force.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from services.contracts.rollout import ConfigurationState
from services.domain.rollout.admissions import decide
from services.domain.rollout.configuration import CompiledConfiguration
from services.domain.rollout.health import EventLog
from services.domain.rollout.membership import Membership
from services.domain.rollout.planner import Allowance
from services.domain.rollout.twin_plan import Mark, MarkStatus, TwinFacts

MAX_ROUNDS = 2_000_000


@dataclass(slots=True)
class StageTimes:
    starts_at: float | None = None
    admitted_by: float | None = None
    done_at: float | None = None


@dataclass(slots=True)
class Projection:
    admissions: dict[str, tuple[int, float]] = field(default_factory=dict)
    """device → (stage, when it is admitted)."""
    stages: list[StageTimes] = field(default_factory=list)
    history: list[tuple[float, str]] = field(default_factory=list)
    completes_at: float | None = None
    rounds: int = 0


def simulated_twins(facts: Mapping[str, TwinFacts], candidate: str) -> dict[str, TwinFacts]:
    """The twins the candidate targets, with only its own evaluation (a dry run counts nothing else)."""
    return {
        d: TwinFacts(d, f.version, {}, {candidate: f.hits[candidate]})
        for d, f in facts.items()
        if candidate in f.hits and f.hits[candidate].targeted
    }


def project(
    compiled: CompiledConfiguration,
    twins: Mapping[str, TwinFacts],
    start: float,
    *,
    assume: float,
    tick: float,
    horizon: float,
    superseded: frozenset[str] = frozenset(),
) -> Projection:
    """Play the rollout of `compiled` (active from `start`) over `twins` (their facts for it, no
    marks yet) until it completes, halts, or `horizon` seconds passed. Twins in `superseded` would
    win no key (other configurations keep them all): admitted as superseded."""
    cid = compiled.id
    membership = Membership()
    configurations = {cid: compiled}
    for device_id, facts in twins.items():
        membership.put(device_id, facts, configurations, int(start))
    projection = Projection(stages=[StageTimes() for _ in compiled.configuration.spec.rollout.stages])
    events = EventLog(retention=0)
    allowance = Allowance.fresh(start)
    finishing: list[tuple[float, str]] = []
    keys = tuple(sorted(compiled.configuration.spec.content))
    round_index = 0  # rounds are `start + k * tick` exactly, as a reconciler ticking from `start`
    end = start + horizon
    for _ in range(MAX_ROUNDS):
        now = start + round_index * tick
        if now > end:
            break
        projection.rounds += 1
        while finishing and finishing[0][0] <= now:
            _, device_id = heapq.heappop(finishing)
            facts = membership.facts[device_id]
            hit = replace(facts.hits[cid], success=True)
            membership.put(device_id, replace(facts, hits={cid: hit}), configurations, int(now))
        decision = decide(compiled, membership, events, allowance, now, (), start)
        allowance = decision.allowance
        if decision.changed:
            before = compiled.configuration
            compiled = CompiledConfiguration(decision.configuration)
            configurations = {cid: compiled}
            projection.history.extend((now, note) for note in decision.notes)
            after = compiled.configuration
            if after.stage != before.stage:
                projection.stages[before.stage].done_at = now
            if after.quarantined != before.quarantined:
                membership.replace(compiled, int(now))
            if after.state is ConfigurationState.COMPLETED:
                projection.stages[after.stage].done_at = now
                projection.completes_at = now
                break
            if after.state is not ConfigurationState.ACTIVE:
                break
            continue  # decided again at once, as the reconciler does after storing a change
        for device_id in decision.admit:
            facts = membership.facts[device_id]
            status = MarkStatus.SUPERSEDED if device_id in superseded else MarkStatus.APPLIED
            mark = Mark(status, () if device_id in superseded else keys, decision.stage, int(now))
            membership.put(device_id, replace(facts, marks={cid: mark}), configurations, int(now))
            projection.admissions[device_id] = (decision.stage, now)
            times = projection.stages[decision.stage]
            times.starts_at = now if times.starts_at is None else times.starts_at
            times.admitted_by = now
            if status is MarkStatus.APPLIED:
                heapq.heappush(finishing, (now + assume, device_id))
        following = next_round(round_index, start, tick, bool(decision.admit), decision.wake_at, finishing)
        if following is None:
            break
        round_index = following
    return projection


def next_round(
    index: int, start: float, tick: float, admitted: bool, wake_at: float | None, finishing: list[tuple[float, str]]
) -> int | None:
    """The next round worth deciding (its index): the next one, or — when nothing was admitted —
    the first at or after the earliest of `wake_at` and the next twin finishing (None: never)."""
    if admitted:
        return index + 1
    soonest = min(wake_at if wake_at is not None else math.inf, finishing[0][0] if finishing else math.inf)
    if soonest == math.inf:
        return None
    return max(index + 1, math.ceil((soonest - start) / tick - 1e-9))
