"""The rollout planner's new rules: an exponential ramp, start and end times, maintenance-window holds,
health-gated promotion against a hold-out (and its comparison under noise), cohort quarantine."""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.rollout import (
    CohortPolicy,
    ConfigurationSpec,
    ConfigurationState,
    FailureThreshold,
    HealthGate,
    Hold,
    Ramp,
    RolloutPolicy,
    Schedule,
    Stage,
    Window,
)
from services.domain.rollout.admissions import decide
from services.domain.rollout.cohorts import CohortCounts, cohort_value, concentrated
from services.domain.rollout.configuration import (
    CompiledConfiguration,
    Configuration,
    activate,
    new_configuration,
    resume,
)
from services.domain.rollout.health import EventLog, Rate, judge, worse
from services.domain.rollout.membership import ConfigurationStats, Membership, StageCounts
from services.domain.rollout.planner import Allowance, next_step, rate_per_minute
from services.domain.rollout.twin_plan import evaluate_twin

NOW = 1_717_200_000  # 2024-06-01 00:00 UTC


def active(**policy: Any) -> Configuration:
    stages = policy.pop("stages", [Stage(percent=100)])
    spec = ConfigurationSpec(
        id="cfg", target_condition="true", content={"config": 1}, rollout=RolloutPolicy(stages=stages, **policy)
    )
    return activate(new_configuration(spec, NOW), NOW)


def stats(targeted: int, **stages: StageCounts) -> ConfigurationStats:
    per_stage = {int(k.removeprefix("s")): v for k, v in stages.items()}
    admitted = sum(c.admitted for c in per_stage.values())
    return ConfigurationStats(targeted=targeted, waiting=targeted - admitted, stages=per_stage, metrics={})


# -- ramp -------------------------------------------------------------------------------------------
@given(st.integers(1, 100), st.floats(1.1, 5), st.integers(1, 50), st.integers(0, 10_000), st.integers(1, 10_000))
def test_a_ramp_grows_by_its_factor_per_successes_and_never_passes_the_cap(
    base: int, factor: float, every: int, succeeded: int, cap: int
) -> None:
    policy = RolloutPolicy(ramp=Ramp(base_per_minute=base, factor=factor, every=every), max_per_minute=cap)
    rate = rate_per_minute(policy, succeeded)
    assert rate is not None and rate <= cap + 1e-6
    steps = succeeded // every
    if steps * math.log(factor) < math.log(cap / base):
        assert math.isclose(rate, base * factor**steps)
    else:
        assert rate == cap
    assert rate_per_minute(policy, succeeded + every) >= rate  # type: ignore[operator]


def test_the_ramp_sets_the_pace_of_admissions() -> None:
    ramped = active(ramp=Ramp(base_per_minute=60, factor=2, every=10))
    slow = next_step(ramped, stats(1000), Allowance(0.0, NOW - 1), NOW)
    assert slow.admit == 1  # 60/min: one a second
    done = stats(1000, s0=StageCounts(admitted=40, succeeded=40))  # 2**4 = 16 times faster
    fast = next_step(ramped, done, Allowance(0.0, NOW - 1), NOW)
    assert fast.admit == 16


# -- start and end ----------------------------------------------------------------------------------
def test_nothing_is_admitted_before_the_start_time_and_the_history_says_when() -> None:
    scheduled = active(schedule=Schedule(start_at=NOW + 3600))
    step = next_step(scheduled, stats(10), Allowance.fresh(NOW), NOW)
    assert step.changed and step.notes == ["waits for its start time, 2024-06-01 01:00:00 UTC"]
    waiting = step.configuration
    assert waiting.hold is Hold.START
    quiet = next_step(waiting, stats(10), Allowance.fresh(NOW), NOW + 60)
    assert (quiet.admit, quiet.changed, quiet.wake_at) == (0, False, NOW + 3600)
    started = next_step(waiting, stats(10), Allowance.fresh(NOW), NOW + 3600)
    assert started.notes == ["start time reached: stage 1 admitting"] and started.configuration.hold is Hold.NONE


def test_the_end_time_stops_admissions_and_completes_once_settled() -> None:
    boxed = active(schedule=Schedule(end_at=NOW + 60))
    counts = stats(10, s0=StageCounts(admitted=4, pending=1, succeeded=3))
    assert next_step(boxed, counts, Allowance.fresh(NOW), NOW).wake_at == NOW + 60
    ended = next_step(boxed, counts, Allowance.fresh(NOW), NOW + 60)
    assert ended.notes == ["end time reached: 6 twins not reached; no more admissions"]
    assert not next_step(ended.configuration, counts, Allowance.fresh(NOW), NOW + 61).changed  # one is pending
    settled = stats(10, s0=StageCounts(admitted=4, succeeded=4))
    done = next_step(ended.configuration, settled, Allowance.fresh(NOW), NOW + 62)
    assert done.configuration.state is ConfigurationState.COMPLETED
    assert done.notes == ["rollout ended at its end time: 4/4 succeeded, 0 failed, 6 not reached"]


# -- windows ----------------------------------------------------------------------------------------
def fleet(configuration: Configuration, tags: dict[str, dict[str, Any]]) -> tuple[CompiledConfiguration, Membership]:
    compiled = CompiledConfiguration(configuration)
    members = Membership()
    for device_id, device_tags in tags.items():
        facts = evaluate_twin(device_id, 1, device_tags, {}, {}, {}, [compiled])
        members.put(device_id, facts, {compiled.id: compiled}, NOW)
    return compiled, members


def test_a_closing_window_holds_the_rollout_and_says_when_the_next_opens() -> None:
    window = Schedule(windows=[Window(start="01:00", end="03:00")], timezone_tag="tz", install_seconds=600)
    compiled, members = fleet(
        active(schedule=window), {"berlin": {"tz": "Europe/Berlin"}, "tokyo": {"tz": "Asia/Tokyo"}}
    )
    # 00:30 UTC: 02:30 in Berlin (open, 30 min left), 09:30 in Tokyo (closed)
    first = decide(compiled, members, EventLog(0), Allowance.fresh(NOW), NOW + 1800)
    assert first.admit == ["berlin"] and first.outside_window == 1
    # 00:55 UTC: Berlin's window closes in 5 minutes, less than an install: nothing admissible
    late = decide(compiled, members, EventLog(0), Allowance(5.0, NOW), NOW + 3300)
    assert late.changed and late.configuration.hold is Hold.WINDOW
    assert late.notes == ["maintenance window closed: 2 twins wait for the next one (opens 2024-06-01 16:00:00 UTC)"]
    held = CompiledConfiguration(late.configuration)
    quiet = decide(held, members, EventLog(0), Allowance(5.0, NOW), NOW + 3400)
    assert not quiet.changed and quiet.wake_at == NOW + 16 * 3600  # 01:00 in Tokyo
    opened = decide(held, members, EventLog(0), Allowance(5.0, NOW), NOW + 16 * 3600)
    assert opened.notes == ["maintenance window open: admitting again"]
    again = decide(
        CompiledConfiguration(opened.configuration), members, EventLog(0), Allowance(5.0, NOW), NOW + 16 * 3600
    )
    assert again.admit == ["tokyo"]


# -- health -----------------------------------------------------------------------------------------
@settings(max_examples=60)
@given(st.floats(0.0, 0.5), st.integers(20, 400), st.integers(20, 400), st.integers(0, 2**32 - 1))
def test_two_groups_equally_healthy_rarely_hold_a_stage(rate: float, n_updated: int, n_holdout: int, seed: int) -> None:
    rng = random.Random(seed)
    holds = 0
    trials = 200
    for _ in range(trials):
        a = Rate(sum(rng.random() < rate for _ in range(n_updated)), n_updated)
        b = Rate(sum(rng.random() < rate for _ in range(n_holdout)), n_holdout)
        holds += worse(a, b)
    assert holds <= trials * 0.12  # a one-sided 95% test: about 5%, never many more


@given(st.integers(0, 100), st.integers(1, 100), st.integers(0, 100), st.integers(1, 100), st.floats(0, 20))
def test_more_unhealthy_updated_twins_never_turn_a_hold_into_a_pass(
    hits: int, total: int, other_hits: int, other_total: int, margin: float
) -> None:
    a, b = Rate(min(hits, total), total), Rate(min(other_hits, other_total), other_total)
    if worse(a, b, margin) and a.hits < a.total:
        assert worse(Rate(a.hits + 1, a.total), b, margin)
    if not worse(a, b, margin) and b.hits < b.total:
        assert not worse(a, Rate(b.hits + 1, b.total), margin)


def test_a_real_difference_holds_and_the_message_says_by_how_much() -> None:
    verdict = judge(1, "error rate", Rate(9, 220), Rate(2, 220), 0.0)
    assert not verdict.passed
    assert verdict.message == "stage 2 held: error rate 4.1% (9/220) vs 0.9% (2/220) in hold-out"
    assert judge(0, "unhealthy", Rate(1, 12), Rate(0, 12), 0.0).passed  # one unlucky twin is noise
    assert judge(0, "unhealthy", Rate(30, 100), Rate(20, 100), 15.0).passed  # within the margin


def gated(events: list[str] | None = None, unhealthy: str | None = None) -> Configuration:
    gate = HealthGate(unhealthy=unhealthy, events=events or [], soak_seconds=60)
    return active(stages=[Stage(percent=50), Stage(percent=100)], health=gate)


def test_a_settled_stage_soaks_then_is_promoted_or_held_on_its_health() -> None:
    configuration = gated(unhealthy="reported.errors > 0")
    compiled = CompiledConfiguration(configuration)
    members = Membership()
    for i in range(40):
        updated = i < 20
        marks = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": NOW}} if updated else {}
        reported = {"config": 1} if updated else {}
        reported["errors"] = int(updated and i < 8)  # 8 of 20 updated report errors, none of the hold-out
        members.put(
            f"d{i:02}", evaluate_twin(f"d{i:02}", 1, {}, {}, reported, marks, [compiled]), {"cfg": compiled}, NOW
        )
    soaking = decide(compiled, members, EventLog(0), Allowance.fresh(NOW), NOW + 10)
    assert soaking.notes == ["stage 1 done: 20/20 succeeded, 0 failed; soaking 60s before its health comparison"]
    compiled = CompiledConfiguration(soaking.configuration)
    assert decide(compiled, members, EventLog(0), Allowance.fresh(NOW), NOW + 30).wake_at == NOW + 70
    # the app restarted at NOW + 40: the soak runs on until it has watched 60s
    assert not decide(compiled, members, EventLog(0), Allowance.fresh(NOW), NOW + 71, observing_since=NOW + 40).changed
    held = decide(compiled, members, EventLog(0), Allowance.fresh(NOW), NOW + 100, observing_since=NOW + 40)
    assert held.configuration.state is ConfigurationState.PAUSED
    assert held.configuration.reason == "stage 1 held: unhealthy 40.0% (8/20) vs 0.0% (0/20) in hold-out"
    assert held.configuration.health_checks[-1].passed is False
    # the operator accepts it as it is: promoted without another comparison
    resumed = CompiledConfiguration(resume(held.configuration, NOW + 200))
    promoted = decide(resumed, members, EventLog(0), Allowance.fresh(NOW), NOW + 201)
    assert promoted.configuration.stage == 1 and promoted.configuration.soak_since is None


def test_error_events_during_the_soak_make_a_twin_unhealthy() -> None:
    compiled = CompiledConfiguration(gated(events=["error"]).model_copy(update={"soak_since": NOW}))
    members = Membership()
    for i in range(60):
        marks = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": NOW}} if i < 30 else {}
        members.put(
            f"d{i:02}", evaluate_twin(f"d{i:02}", 1, {}, {}, {"config": 1}, marks, [compiled]), {"cfg": compiled}, NOW
        )
    events = EventLog(3600)
    events.add("d00", 1, "error", NOW - 10)  # before the soak: not counted
    for i in range(1, 15):
        events.add(f"d{i:02}", 1, "error", NOW + 5)
        events.add(f"d{i:02}", 1, "error", NOW + 6)  # redelivered: counts once
    events.add("d40", 3, "error", NOW + 7)
    events.add("d41", 4, "restart", NOW + 7)  # another type
    held = decide(compiled, members, events, Allowance.fresh(NOW), NOW + 61)
    assert held.configuration.reason == "stage 1 held: unhealthy 46.7% (14/30) vs 3.3% (1/30) in hold-out"


# -- cohorts ----------------------------------------------------------------------------------------
POLICY = CohortPolicy(keys=["tags.hw"], min_failures=3)


def test_failures_concentrated_in_one_cohort_quarantine_it_and_the_rest_goes_on() -> None:
    counts = {("tags.hw", "B"): CohortCounts(6, 5), ("tags.hw", "A"): CohortCounts(30, 1)}
    found = concentrated(POLICY, counts)
    assert [(c.key, c.value) for c in found] == [("tags.hw", "B")]
    assert found[0].note() == "cohort tags.hw=B quarantined: 5/6 failed vs 1/30 elsewhere; the rest goes on"
    configuration = active(cohorts=POLICY, failure_threshold=FailureThreshold(percent=10), stages=[Stage(percent=100)])
    counted = ConfigurationStats(
        targeted=60,
        waiting=24,
        stages={0: StageCounts(admitted=36, failed=6, succeeded=30)},
        metrics={},
        cohorts=counts,
    )
    step = next_step(configuration, counted, Allowance.fresh(NOW), NOW)
    assert step.configuration.state is ConfigurationState.ACTIVE  # quarantined, not halted
    assert [c.label() for c in step.configuration.quarantined] == ["tags.hw=B"]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(1, 60), st.floats(0, 1)), min_size=1, max_size=5), st.integers(0, 2**32 - 1))
def test_cohorts_failing_alike_are_rarely_singled_out(sizes: list[tuple[int, float]], seed: int) -> None:
    rng = random.Random(seed)
    rate = sizes[0][1] * 0.3
    counts = {}
    for index, (size, _) in enumerate(sizes):
        counts[("tags.hw", f"v{index}")] = CohortCounts(size, sum(rng.random() < rate for _ in range(size)))
    found = concentrated(POLICY, counts)
    assert len(found) <= 1  # at most one value can hold 80% of the failures
    for c in found:
        group = counts[(c.key, c.value)]
        assert group.failed >= POLICY.min_failures and group.admitted < sum(g.admitted for g in counts.values())


@given(st.dictionaries(st.sampled_from("ABCDE"), st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1))
def test_cohort_detection_does_not_depend_on_the_order_of_the_counts(groups: dict[str, tuple[int, int]]) -> None:
    counts = {("tags.hw", v): CohortCounts(max(a, f), f) for v, (a, f) in groups.items()}
    reordered = dict(reversed(list(counts.items())))
    assert concentrated(POLICY, counts) == concentrated(POLICY, reordered)


def test_cohort_values_are_read_from_tags_and_reported_state() -> None:
    twin = {"tags": {"hw": "B"}, "reported": {"software": {"version": "1.2"}, "n": 3}, "desired": {}}
    assert cohort_value(twin, "tags.hw") == "B"
    assert cohort_value(twin, "reported.software.version") == "1.2"
    assert cohort_value(twin, "reported.n") == "3"
    assert cohort_value(twin, "tags.region") == "(none)"


def test_a_quarantined_cohort_is_not_admitted_and_its_failures_halt_nothing() -> None:
    configuration = active(cohorts=POLICY, failure_threshold=FailureThreshold(count=0))
    quarantined = configuration.model_copy(update={"quarantined": [*configuration.quarantined, _cohort("B")]})
    compiled = CompiledConfiguration(quarantined)
    members = Membership()
    failed = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": NOW, "cohort": {"tags.hw": "B"}}}
    members.put(
        "b1",
        evaluate_twin("b1", 1, {"hw": "B"}, {}, {"config": {"status": "FAILED"}}, failed, [compiled]),
        {"cfg": compiled},
        NOW,
    )
    members.put("b2", evaluate_twin("b2", 1, {"hw": "B"}, {}, {}, {}, [compiled]), {"cfg": compiled}, NOW)
    members.put("a1", evaluate_twin("a1", 1, {"hw": "A"}, {}, {}, {}, [compiled]), {"cfg": compiled}, NOW)
    counts = members.stats("cfg")
    assert (counts.targeted, counts.waiting, counts.quarantined, counts.total().failed) == (1, 1, 2, 0)
    decision = decide(compiled, members, EventLog(0), Allowance.fresh(NOW), NOW)
    assert decision.admit == ["a1"] and not decision.changed


def _cohort(value: str) -> Any:
    from services.contracts.rollout import Cohort

    return Cohort(key="tags.hw", value=value, failed=5, admitted=6, at=NOW)
