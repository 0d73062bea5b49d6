"""The dry run against a real run on the same inputs: the preview (simulated twins, rounds skipped
while nothing can change) admits exactly the twins, stages and times that rounds of the reconciler's
decision over real twin documents do (plan_twin writes applied, devices reporting success), under
stages, paces, ramps, start and end times, maintenance windows in several zones and install times."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.rollout import (
    ConfigurationSpec,
    ConfigurationState,
    Ramp,
    RolloutPolicy,
    Schedule,
    Stage,
    Window,
)
from services.domain.rollout.admissions import decide
from services.domain.rollout.configuration import CompiledConfiguration, activate, new_configuration
from services.domain.rollout.health import EventLog
from services.domain.rollout.membership import Membership
from services.domain.rollout.planner import Allowance
from services.domain.rollout.preview import project, simulated_twins
from services.domain.rollout.twin_plan import contest, plan_twin
from tests.unit.rollout_twins import Twin, config

START = 1_717_243_200  # 2024-06-01 12:00 UTC
TICK = 60.0
HORIZON = 86_400
ZONES = ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/New_York"]
CONTENT = {"config": {"rate": 5}}


def real_run(compiled: CompiledConfiguration, twins: dict[str, Twin], assume: float) -> tuple[dict[str, Any], Any]:
    """Rounds every TICK seconds of what the reconciler does: decide, write what it admits (the
    twin documents take the planner's writes), and devices report success `assume` seconds later."""
    cid = compiled.id
    configurations = {cid: compiled}
    membership = Membership()
    for device_id, twin in twins.items():
        membership.put(device_id, twin.facts(configurations), configurations, START)
    allowance = Allowance.fresh(START)
    admissions: dict[str, tuple[int, float]] = {}
    succeeds: dict[str, float] = {}
    completed = None
    index = 0
    while START + index * TICK <= START + HORIZON:
        now = START + index * TICK
        for device_id, at in list(succeeds.items()):
            if at <= now:
                twin = twins[device_id]
                twin.reported = CONTENT
                membership.put(device_id, twin.facts(configurations), configurations, int(now))
                del succeeds[device_id]
        decision = decide(compiled, membership, EventLog(0), allowance, now, (), START)
        allowance = decision.allowance
        if decision.changed:
            compiled = CompiledConfiguration(decision.configuration)
            configurations = {cid: compiled}
            if compiled.configuration.state is ConfigurationState.COMPLETED:
                completed = now
                break
            if compiled.configuration.state is not ConfigurationState.ACTIVE:
                break
            continue
        for device_id in decision.admit:
            twin = twins[device_id]
            write = plan_twin(twin.facts(configurations), configurations, {cid: decision.stage}, int(now))
            assert write is not None and write.admitted == {cid: decision.stage}
            twin.apply(write)
            membership.put(device_id, twin.facts(configurations), configurations, int(now))
            admissions[device_id] = (decision.stage, now)
            succeeds[device_id] = now + assume
        index += 1
    return admissions, completed


windows = st.lists(
    st.builds(
        lambda h, m, length: Window(start=f"{h:02}:{m:02}", end=f"{(h + length) % 24:02}:{m:02}"),
        st.integers(0, 23),
        st.sampled_from([0, 30]),
        st.integers(1, 6),
    ),
    max_size=2,
)


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[CompiledConfiguration, dict[str, Twin], float]:
    count = draw(st.integers(1, 30))
    stages = draw(
        st.sampled_from(
            [
                [Stage(percent=100)],
                [Stage(count=2), Stage(percent=100)],
                [Stage(percent=10), Stage(percent=50), Stage(percent=100)],
            ]
        )
    )
    pace = draw(st.sampled_from([None, 2, 10, 120]))
    ramp = draw(
        st.none()
        | st.builds(
            lambda b, f, e: Ramp(base_per_minute=b, factor=f, every=e),
            st.integers(1, 6),
            st.sampled_from([1.5, 2.0]),
            st.integers(1, 5),
        )
    )
    chosen = draw(windows)
    start_in = draw(st.sampled_from([None, 0, 1800, 7 * 3600]))
    end_in = draw(st.sampled_from([None, 6 * 3600, 20 * 3600]))
    schedule = None
    if chosen or start_in is not None or end_in is not None:
        schedule = Schedule(
            windows=chosen,
            timezone_tag="tz",
            install_seconds=draw(st.sampled_from([0, 600, 1800])),
            start_at=None if start_in is None else START + start_in,
            end_at=None if end_in is None else START + (start_in or 0) + end_in,
        )
    spec = ConfigurationSpec(
        id="cfg",
        target_condition='tags.ring == "a"',
        content=CONTENT,
        rollout=RolloutPolicy(stages=stages, max_per_minute=pace, ramp=ramp, schedule=schedule),
    )
    compiled = CompiledConfiguration(activate(new_configuration(spec, START), START))
    twins = {}
    for i in range(count + draw(st.integers(0, 5))):
        tags = {"ring": "a" if i < count else "b", "tz": draw(st.sampled_from(ZONES))}
        twins[f"d{i:03}"] = Twin(f"d{i:03}", tags)
    return compiled, twins, float(draw(st.sampled_from([0, 45, 900, 4 * 3600])))


@settings(max_examples=50)
@given(rollouts())
def test_a_preview_admits_what_the_real_run_admits(
    rollout: tuple[CompiledConfiguration, dict[str, Twin], float],
) -> None:
    compiled, twins, assume = rollout
    configurations = {compiled.id: compiled}
    facts = {d: t.facts(configurations) for d, t in twins.items()}
    projected = project(compiled, simulated_twins(facts, compiled.id), START, assume=assume, tick=TICK, horizon=HORIZON)
    admissions, completed = real_run(compiled, twins, assume)
    assert projected.admissions == admissions
    assert projected.completes_at == completed
    assert projected.rounds <= HORIZON / TICK + 100  # rounds were skipped, never added


def test_a_preview_skips_the_hours_between_windows() -> None:
    schedule = Schedule(windows=[Window(start="02:00", end="03:00")])
    compiled = config("cfg", CONTENT, max_per_minute=6, schedule=schedule, target='tags.ring == "a"')
    activated = CompiledConfiguration(activate(compiled.configuration.model_copy(update={"state": "draft"}), START))
    twins = {f"d{i}": Twin(f"d{i}", {"ring": "a"}) for i in range(10)}
    facts = {d: t.facts({"cfg": activated}) for d, t in twins.items()}
    projection = project(activated, simulated_twins(facts, "cfg"), START, assume=30, tick=0.5, horizon=3 * 86_400)
    admitted_at = sorted(at for _, at in projection.admissions.values())
    assert len(admitted_at) == 10 and admitted_at[0] == START + 14 * 3600  # 02:00 the next morning
    assert admitted_at[-1] - admitted_at[0] < 3600  # six a minute: all within the window
    assert projection.completes_at is not None and projection.rounds < 2000  # not 2.6 days of 0.5 s rounds
    assert any(m.startswith("maintenance window closed") for _, m in projection.history)


def test_contest_says_which_keys_a_twin_would_win_or_lose() -> None:
    high = config("high", {"config": 1}, priority=10)
    candidate = config("new", {"config": 2, "mode": "eco"}, priority=1)
    twin = Twin()
    twin.converge({"high": high}, {"high": 0})
    facts = twin.facts({"high": high, "new": candidate})
    assert contest(facts, {"high": high, "new": candidate}, "new") == (["mode"], {"config": "high"})
