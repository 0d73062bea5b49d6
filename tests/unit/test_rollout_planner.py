"""The rollout planner and the membership it decides from: stages, pace, halts with their reasons,
completion, and counts kept incrementally."""

from __future__ import annotations

from typing import Any

import pytest

from services.contracts.rollout import (
    ConfigurationSpec,
    ConfigurationState,
    FailureThreshold,
    HaltAction,
    RolloutPolicy,
    Stage,
)
from services.domain.errors import ErrorCode, TwinError
from services.domain.rollout.configuration import (
    CompiledConfiguration,
    Configuration,
    activate,
    cancel,
    new_configuration,
    pause,
    replace_spec,
    resume,
    validate_spec,
)
from services.domain.rollout.membership import ConfigurationStats, Membership, StageCounts
from services.domain.rollout.planner import Allowance, next_step, stage_targets
from services.domain.rollout.progress import rollout_progress
from services.domain.rollout.twin_plan import Outcome, evaluate_twin
from services.domain.twin.limits import Limits

NOW = 1_700_000_000


def staged(
    *stages: Stage, threshold: FailureThreshold | None = None, rollback: dict[str, Any] | None = None
) -> Configuration:
    spec = ConfigurationSpec(
        id="cfg",
        target_condition="true",
        content={"config": 1},
        rollout=RolloutPolicy(stages=list(stages), failure_threshold=threshold, rollback_content=rollback),
    )
    return activate(new_configuration(spec, NOW), NOW)


def stats(targeted: int, **stages: StageCounts) -> ConfigurationStats:
    per_stage = {int(k.removeprefix("s")): v for k, v in stages.items()}
    admitted = sum(c.admitted for c in per_stage.values())
    return ConfigurationStats(targeted=targeted, waiting=targeted - admitted, stages=per_stage, metrics={})


THREE = (Stage(percent=1), Stage(percent=10), Stage(percent=100))
FREE = Allowance.fresh(NOW)
"""No pace is set: every allowance is unbounded."""


def test_stage_targets_are_cumulative_shares_of_the_targeted_twins() -> None:
    assert stage_targets(staged(*THREE), 1000) == [10, 100, 1000]
    assert stage_targets(staged(*THREE), 7) == [1, 1, 7]
    assert stage_targets(staged(Stage(count=5), Stage(percent=100)), 3) == [3, 3]


def test_a_stage_admits_its_share_then_waits_for_it_to_settle() -> None:
    configuration = staged(*THREE)
    step = next_step(configuration, stats(1000), FREE, now=NOW)
    assert (step.admit, step.stage, step.changed) == (10, 0, False)
    step = next_step(configuration, stats(1000, s0=StageCounts(admitted=10, pending=3, succeeded=7)), FREE, NOW)
    assert (step.admit, step.changed) == (0, False)


def test_the_pace_bounds_admissions() -> None:
    paced = staged(*THREE).model_copy(
        update={
            "spec": staged(*THREE).spec.model_copy(
                update={"rollout": RolloutPolicy(stages=list(THREE), max_per_minute=240)}
            )
        }
    )
    step = next_step(paced, stats(1000), Allowance(0.0, NOW - 1), now=NOW)
    assert step.admit == 4
    assert next_step(paced, stats(1000), step.allowance, now=NOW).admit == 0  # spent: wait for the pace
    assert next_step(paced, stats(1000), step.allowance, now=NOW + 0.5).admit == 2


def test_admissions_under_way_count_against_the_stage_and_the_waiting_twins() -> None:
    assert next_step(staged(*THREE), stats(1000), FREE, NOW, in_flight=6).admit == 4
    assert next_step(staged(*THREE), stats(1000), FREE, NOW, in_flight=10).admit == 0
    few = ConfigurationStats(targeted=1000, waiting=3, stages={}, metrics={})
    assert next_step(staged(*THREE), few, FREE, NOW, in_flight=1).admit == 2


def test_a_settled_stage_moves_on_and_says_so() -> None:
    step = next_step(staged(*THREE), stats(1000, s0=StageCounts(admitted=10, succeeded=10)), FREE, NOW)
    assert step.configuration.stage == 1
    assert step.notes == ["stage 1 done: 10/10 succeeded, 0 failed; stage 2 started: 100 of 1000 twins"]
    assert step.configuration.history[-1].message == step.notes[0]


def test_the_last_stage_completes_the_rollout() -> None:
    configuration = staged(Stage(percent=100))
    step = next_step(configuration, stats(4, s0=StageCounts(admitted=4, succeeded=3, failed=1)), FREE, NOW)
    assert step.configuration.state is ConfigurationState.COMPLETED
    assert "rollout completed: 3/4 succeeded, 1 failed" in step.notes[0]


def test_a_completed_rollout_admits_twins_that_start_matching_later() -> None:
    configuration = staged(Stage(percent=100)).model_copy(update={"state": ConfigurationState.COMPLETED})
    step = next_step(configuration, stats(6, s0=StageCounts(admitted=4, succeeded=4)), FREE, NOW)
    assert (step.admit, step.stage) == (2, 0)


def test_nothing_targeted_waits_instead_of_completing() -> None:
    assert not next_step(staged(*THREE), stats(0), FREE, NOW).changed


def test_failures_above_the_percent_threshold_pause_before_the_next_stage() -> None:
    configuration = staged(*THREE, threshold=FailureThreshold(percent=5)).model_copy(update={"stage": 1})
    counts = stats(1000, s0=StageCounts(admitted=10, succeeded=10), s1=StageCounts(admitted=90, failed=7, pending=20))
    step = next_step(configuration, counts, FREE, NOW)
    assert step.configuration.state is ConfigurationState.PAUSED
    assert step.configuration.reason == "stage 2 halted: 7/90 failed > 5%"
    assert step.admit == 0


def test_failures_at_the_threshold_do_not_halt() -> None:
    configuration = staged(*THREE, threshold=FailureThreshold(percent=10))
    counts = stats(1000, s0=StageCounts(admitted=10, succeeded=9, failed=1))
    assert next_step(configuration, counts, FREE, NOW).configuration.stage == 1


def test_a_count_threshold_can_abort_and_roll_back() -> None:
    configuration = staged(*THREE, threshold=FailureThreshold(count=2, action=HaltAction.ABORT), rollback={"config": 0})
    step = next_step(configuration, stats(1000, s0=StageCounts(admitted=10, failed=3, pending=7)), FREE, NOW)
    assert step.configuration.state is ConfigurationState.ABORTED
    assert step.configuration.rollback
    assert step.notes == ["stage 1 halted: 3/10 failed > 2; aborted; rolling back"]


def test_resuming_accepts_the_halted_stage() -> None:
    configuration = staged(*THREE, threshold=FailureThreshold(percent=5))
    counts = stats(1000, s0=StageCounts(admitted=10, failed=5, succeeded=5))
    halted = next_step(configuration, counts, FREE, NOW).configuration
    assert halted.state is ConfigurationState.PAUSED
    assert not next_step(halted, counts, FREE, NOW).changed  # paused: nothing happens
    resumed = resume(halted, NOW)
    step = next_step(resumed, counts, FREE, NOW)
    assert step.configuration.stage == 1 and step.configuration.state is ConfigurationState.ACTIVE


def test_lifecycle_transitions_refuse_what_makes_no_sense() -> None:
    draft = new_configuration(staged(*THREE).spec, NOW)
    with pytest.raises(TwinError) as refused:
        pause(draft, NOW)
    assert refused.value.code is ErrorCode.CONFLICT
    active = activate(draft, NOW)
    with pytest.raises(TwinError, match="immutable once active"):
        replace_spec(active, active.spec, NOW)
    with pytest.raises(TwinError):
        activate(active, NOW)
    aborted = cancel(active, NOW)
    assert aborted.state is ConfigurationState.ABORTED and not aborted.rollback
    with pytest.raises(TwinError):
        resume(aborted, NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "bad id"}, "configuration id"),
        ({"content": {}}, "content is empty"),
        ({"target_condition": "tags.region =="}, "target condition: syntax error at line 1"),
        ({"metrics": {"ok": "reported.x =="}}, "metric 'ok'"),
        ({"metrics": {"9bad": "true"}}, "metric name"),
        ({"rollout": RolloutPolicy(success_condition="(")}, "success condition"),
    ],
)
def test_invalid_specs_are_400_naming_the_problem(change: dict[str, Any], message: str) -> None:
    spec = staged(*THREE).spec.model_copy(update=change)
    with pytest.raises(TwinError) as refused:
        validate_spec(spec, Limits())
    assert refused.value.code is ErrorCode.BAD_REQUEST
    assert message in refused.value.message


def test_stages_must_grow() -> None:
    with pytest.raises(ValueError, match="cumulative"):
        RolloutPolicy(stages=[Stage(percent=50), Stage(percent=10)])
    with pytest.raises(ValueError, match="either"):
        Stage(percent=5, count=3)


def test_the_allowance_refills_at_the_pace() -> None:
    allowance = Allowance(1.0, 0.0)
    assert allowance.refill(0.0, None).whole > 10**9
    assert allowance.refill(0.5, 120).whole == 2  # one second's worth at most
    assert allowance.spend(1).refill(30.0, 1).whole == 0
    assert allowance.spend(1).refill(60.0, 1).whole == 1


def test_membership_counts_follow_each_twin() -> None:
    spec = ConfigurationSpec(
        id="cfg", target_condition='tags.region == "eu"', content={"config": 1}, metrics={"eu": "true"}
    )
    compiled = {"cfg": CompiledConfiguration(Configuration(spec=spec, state=ConfigurationState.ACTIVE))}
    members = Membership()

    def put(device: str, region: str, marks: dict[str, Any], reported: dict[str, Any] | None = None) -> None:
        facts = evaluate_twin(device, 1, {"region": region}, {}, reported or {}, marks, list(compiled.values()))
        members.put(device, facts, compiled, NOW)

    for i in range(5):
        put(f"d{i}", "eu", {})
    put("x", "us", {})
    assert members.stats("cfg").targeted == 5 and members.stats("cfg").waiting == 5
    assert members.stats("cfg").metrics == {"eu": 5}
    applied = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": NOW}}
    put("d0", "eu", applied, {"config": 1})
    put("d1", "eu", applied)
    counts = members.stats("cfg")
    assert counts.waiting == 3
    assert counts.stage(0) == StageCounts(admitted=2, succeeded=1, pending=1)
    put("d0", "us", applied)  # stops matching: leaves the counts at once
    assert members.stats("cfg").targeted == 4
    members.put("d1", None, compiled, NOW)
    assert members.stats("cfg").targeted == 3 and members.stats("cfg").stage(0) == StageCounts()
    assert members.candidates("cfg", 2) == members.candidates("cfg", 2)  # a stable order
    assert len(members.candidates("cfg", 10)) == 3


def test_membership_refresh_turns_timed_out_twins_into_failures() -> None:
    spec = ConfigurationSpec(
        id="cfg", target_condition="true", content={"config": 1}, rollout=RolloutPolicy(device_timeout_seconds=30)
    )
    compiled = {"cfg": CompiledConfiguration(Configuration(spec=spec, state=ConfigurationState.ACTIVE))}
    members = Membership()
    marks = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": NOW}}
    members.put("d", evaluate_twin("d", 1, {}, {}, {}, marks, list(compiled.values())), compiled, NOW)
    assert members.stats("cfg").stage(0).pending == 1
    members.refresh(compiled, NOW + 30)
    assert members.stats("cfg").stage(0).failed == 1
    assert dict(members.members("cfg"))["d"][:3] == (Outcome.FAILED, 0, "no success within 30s")


def test_stage_states_are_decided_in_the_core() -> None:
    configuration = staged(*THREE)
    counts = stats(1000, s0=StageCounts(admitted=10, succeeded=10), s1=StageCounts(admitted=40, pending=40))
    advanced = configuration.model_copy(update={"stage": 1})
    progress = rollout_progress(advanced, counts, complete=True)
    assert [s.state for s in progress.stages] == ["done", "active", "waiting"]
    assert [s.target for s in progress.stages] == [10, 90, 900]
    assert (progress.applied, progress.pending, progress.waiting) == (50, 40, 950)
    draft = new_configuration(configuration.spec, NOW)
    assert [s.state for s in rollout_progress(draft, counts, complete=False).stages] == ["waiting"] * 3
    done = advanced.model_copy(update={"state": ConfigurationState.COMPLETED})
    assert {s.state for s in rollout_progress(done, counts, complete=True).stages} == {"done"}
