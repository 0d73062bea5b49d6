"""One twin under configurations: priority and tie rules, joining and leaving, rollback, outcomes,
and that planning is idempotent (a twin written by its own plan needs nothing more)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.rollout import ConfigurationState
from services.domain.rollout.configuration import CompiledConfiguration
from services.domain.rollout.twin_plan import Mark, MarkStatus, Outcome, conforms, plan_twin
from tests.unit.rollout_twins import NOW, Twin, config


def by_id(*configurations: CompiledConfiguration) -> dict[str, CompiledConfiguration]:
    return {c.id: c for c in configurations}


def test_a_targeted_admitted_twin_gets_the_content_and_a_mark_in_one_write() -> None:
    configs = by_id(config("a", {"config": {"rate": 5}}))
    twin = Twin()
    assert twin.converge(configs, {"a": 0}) == 1
    assert twin.desired == {"config": {"rate": 5}}
    assert twin.configurations["a"] == {"status": "applied", "keys": ["config"], "stage": 0, "at": NOW}


def test_not_admitted_or_not_targeted_means_no_write() -> None:
    configs = by_id(config("a", {"config": 1}, target='tags.region == "eu"'))
    assert plan_twin(Twin(tags={"region": "eu"}).facts(configs), configs, {}, NOW) is None
    assert plan_twin(Twin(tags={"region": "us"}).facts(configs), configs, {"a": 0}, NOW) is None


def test_highest_priority_wins_a_key_and_the_loser_keeps_its_other_keys() -> None:
    configs = by_id(
        config("low", {"config": "low", "extra": 1}, priority=1),
        config("high", {"config": "high"}, priority=5),
    )
    twin = Twin()
    twin.converge(configs, {"low": 0, "high": 0})
    assert twin.desired == {"config": "high", "extra": 1}
    assert twin.configurations["low"]["keys"] == ["extra"]
    assert twin.configurations["high"]["keys"] == ["config"]


def test_a_priority_tie_goes_to_the_newest_configuration() -> None:
    configs = by_id(config("old", {"config": "old"}, created=10), config("new", {"config": "new"}, created=20))
    twin = Twin()
    twin.converge(configs, {"old": 0, "new": 0})
    assert twin.desired == {"config": "new"}
    assert twin.configurations["old"]["status"] == "superseded"


def test_a_twin_that_stops_matching_gets_the_next_priority_content() -> None:
    configs = by_id(
        config("eu", {"config": "eu"}, target='tags.region == "eu"', priority=5),
        config("all", {"config": "all"}, priority=1),
    )
    twin = Twin(tags={"region": "eu"})
    twin.converge(configs, {"eu": 0, "all": 0})
    assert twin.desired == {"config": "eu"}
    twin.tags = {"region": "us"}
    assert twin.converge(configs, {}) == 1
    assert twin.desired == {"config": "all"}
    assert "eu" not in twin.configurations
    assert twin.configurations["all"]["status"] == "applied"


def test_a_twin_that_stops_matching_the_only_configuration_has_its_keys_removed() -> None:
    configs = by_id(config("eu", {"config": "eu", "other": 1}, target='tags.region == "eu"'))
    twin = Twin(tags={"region": "eu"})
    twin.desired = {"unmanaged": True}
    twin.converge(configs, {"eu": 0})
    twin.tags = {"region": "us"}
    twin.converge(configs, {})
    assert twin.desired == {"unmanaged": True}
    assert twin.configurations == {}


def test_a_twin_that_matches_again_must_be_admitted_again() -> None:
    configs = by_id(config("eu", {"config": "eu"}, target='tags.region == "eu"'))
    twin = Twin(tags={"region": "eu"})
    twin.converge(configs, {"eu": 0})
    twin.tags = {"region": "us"}
    twin.converge(configs, {})
    twin.tags = {"region": "eu"}
    assert plan_twin(twin.facts(configs), configs, {}, NOW) is None
    twin.converge(configs, {"eu": 2})
    assert twin.configurations["eu"]["stage"] == 2


def test_an_aborted_configuration_rolls_back_once_and_yields_its_keys() -> None:
    active = config("fw", {"firmware": "2.0"}, rollback={"firmware": "1.0"})
    twin = Twin()
    twin.converge(by_id(active), {"fw": 0})
    aborted = config("fw", {"firmware": "2.0"}, rollback={"firmware": "1.0"}, state=ConfigurationState.ABORTED)
    assert twin.converge(by_id(aborted), {}) == 1
    assert twin.desired == {"firmware": "1.0"}
    assert twin.configurations["fw"]["status"] == "rolled_back"


def test_an_aborted_configuration_without_rollback_leaves_its_keys_until_another_takes_them() -> None:
    twin = Twin()
    twin.converge(by_id(config("a", {"config": "a"}, priority=9)), {"a": 0})
    aborted = config("a", {"config": "a"}, priority=9, state=ConfigurationState.ABORTED)
    assert twin.converge(by_id(aborted), {}) == 0
    lower = config("b", {"config": "b"}, priority=1)
    twin.converge(by_id(aborted, lower), {"b": 0})
    assert twin.desired == {"config": "b"}


def test_draft_configurations_do_nothing() -> None:
    configs = by_id(config("a", {"config": 1}, state=ConfigurationState.DRAFT))
    assert plan_twin(Twin().facts(configs), configs, {"a": 0}, NOW) is None


def test_outcomes_follow_the_reported_state_and_the_timeout() -> None:
    configs = by_id(config("a", {"config": {"rate": 5}}, timeout=60))
    twin = Twin()
    twin.converge(configs, {"a": 0})
    c = configs["a"]
    assert twin.facts(configs).outcome(c, NOW)[0] is Outcome.PENDING
    assert twin.facts(configs).outcome(c, NOW + 60)[:3] == (Outcome.FAILED, 0, "no success within 60s")
    twin.reported = {"config": {"rate": 5, "unit": "s"}}
    assert twin.facts(configs).outcome(c, NOW + 60)[0] is Outcome.SUCCEEDED
    twin.reported = {"config": {"status": "FAILED", "reason": "no"}}
    assert twin.facts(configs).outcome(c, NOW)[0] is Outcome.FAILED
    untargeted = by_id(config("a", {"config": 1}, target="false"))
    assert Twin().facts(untargeted).outcome(untargeted["a"], NOW) is None
    assert Twin().facts(configs).outcome(c, NOW)[:3] == (Outcome.WAITING, -1, "")


def test_a_custom_success_condition_replaces_conformance() -> None:
    configs = by_id(config("a", {"config": 1}, success='reported.health == "ok"'))
    twin = Twin()
    twin.converge(configs, {"a": 0})
    twin.reported = {"config": 1}
    assert twin.facts(configs).outcome(configs["a"], NOW)[0] is Outcome.PENDING
    twin.reported = {"health": "ok"}
    assert twin.facts(configs).outcome(configs["a"], NOW)[0] is Outcome.SUCCEEDED


def test_conforms_is_json_equality_on_the_wanted_leaves() -> None:
    assert conforms({"a": 1, "b": 2}, {"a": 1})
    assert conforms({"a": 1.0}, {"a": 1})
    assert not conforms({"a": True}, {"a": 1})
    assert conforms({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2]}})
    assert not conforms({"a": 1}, {"a": None})
    assert conforms({}, {"a": None})


def test_malformed_marks_are_ignored() -> None:
    assert Mark.from_json({"status": "nonsense"}) is None
    assert Mark.from_json("x") is None
    assert Mark.from_json({"status": "applied", "keys": ["a"]}) == Mark(MarkStatus.APPLIED, ("a",))


# -- property: planning is idempotent and converges in one write ----------------------------------
KEYS = st.sampled_from(["config", "firmware", "rate", "mode"])
REGIONS = st.sampled_from(["eu", "us", "ap"])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[dict[str, CompiledConfiguration], list[dict[str, Any]], list[dict[str, int]]]:
    configurations = {}
    for index in range(draw(st.integers(1, 4))):
        cid = f"c{index}"
        keys = draw(st.lists(KEYS, min_size=1, max_size=3, unique=True))
        region = draw(REGIONS)
        state = draw(
            st.sampled_from([ConfigurationState.ACTIVE, ConfigurationState.PAUSED, ConfigurationState.ABORTED])
        )
        configurations[cid] = config(
            cid,
            {k: f"{cid}-{k}" for k in keys},
            target=f'tags.region == "{region}"',
            priority=draw(st.integers(0, 2)),
            created=draw(st.integers(0, 2)),
            state=state,
            rollback={keys[0]: "previous"} if draw(st.booleans()) else None,
        )
    tag_steps = draw(st.lists(st.fixed_dictionaries({"region": REGIONS}), min_size=1, max_size=4))
    admissions = draw(
        st.lists(st.dictionaries(st.sampled_from(sorted(configurations)), st.integers(0, 2)), min_size=1, max_size=4)
    )
    return configurations, tag_steps, admissions


@settings(max_examples=300)
@given(fleets())
def test_planning_converges_in_one_write_and_then_stays_quiet(
    fleet: tuple[dict[str, CompiledConfiguration], list[dict[str, Any]], list[dict[str, int]]],
) -> None:
    configurations, tag_steps, admissions = fleet
    twin = Twin()
    for tags, admit in zip(tag_steps, admissions, strict=False):
        twin.tags = tags
        assert twin.converge(configurations, admit) <= 1
        assert plan_twin(twin.facts(configurations), configurations, admit, NOW + 5) is None
        live = {cid: c for cid, c in configurations.items() if c.configuration.state.live}
        for key, value in twin.desired.items():
            owners = [cid for cid, m in twin.configurations.items() if cid in live and key in m.get("keys", [])]
            assert len(owners) <= 1, f"{key} owned by {owners}"
            if owners:
                assert value == live[owners[0]].configuration.spec.content[key]
