"""The device core: which deltas and documents a device takes, what it applies and reports."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.domain.device.core import (
    FAILED,
    UNSUPPORTED,
    Applied,
    DeviceView,
    Failed,
    apply_in_memory,
    diff_patch,
    plan_apply,
    report_for,
    take_delta,
    take_document,
    took_report,
)
from services.domain.json_values import json_equal
from services.domain.twin.delta import compute_delta
from services.domain.twin.merge import merge_patch
from tests.unit.strategies import sections


def test_deltas_not_newer_than_what_the_device_knows_are_discarded() -> None:
    view = DeviceView(desired={"config": {"rate": 5}}, version=7)
    assert take_delta(view, {"state": {"config": {"rate": 1}}, "version": 7}) is None
    assert take_delta(view, {"state": {"config": {"rate": 1}}, "version": 3}) is None
    newer = take_delta(view, {"state": {"config": {"mode": "eco"}}, "version": 8})
    assert newer is not None
    assert newer.desired == {"config": {"rate": 5, "mode": "eco"}} and newer.version == 8


def test_documents_replace_the_view_unless_older() -> None:
    view = DeviceView(desired={"a": 1}, version=5)
    doc = {"state": {"desired": {"b": 2}, "reported": {"b": 1}}, "version": 5}
    assert take_document(view, doc) == DeviceView({"b": 2}, {"b": 1}, 5)
    assert take_document(view, {**doc, "version": 4}) is None


def test_plan_skips_keys_already_in_effect_and_names_unsupported_ones() -> None:
    view = DeviceView(desired={"config": {"rate": 5}, "fan": "on", "lights": "off"})
    plan = plan_apply(view, {"config": {"rate": 5}, "fan": "off"}, supported={"config", "fan"})
    assert plan.apply == {"fan": "on"}
    assert plan.unsupported == ["lights"]


def test_report_shows_values_failures_and_unsupported_keys() -> None:
    view = DeviceView(
        desired={"config": {"rate": 5}, "fan": "on", "lights": "off"},
        reported={"config": {"rate": 1, "old": True}, "fan": "off", "uptime": 9},
    )
    current = {"config": {"rate": 1, "old": True}, "fan": "off"}
    outcomes = {"config": Applied({"rate": 5}), "fan": Failed("relay stuck")}
    patch = report_for(view, current, outcomes, ["lights"])
    assert patch == {
        "config": {"rate": 5, "old": None},
        "fan": {"status": FAILED, "reason": "relay stuck"},
        "lights": {"status": UNSUPPORTED, "reason": "this device has no handler for 'lights'"},
    }
    reported = took_report(view, patch).reported
    assert reported["config"] == {"rate": 5} and reported["uptime"] == 9  # unmanaged keys untouched


def test_nothing_to_report_when_the_twin_already_shows_it() -> None:
    view = DeviceView(desired={"fan": "on"}, reported={"fan": "on"})
    assert report_for(view, {"fan": "on"}, {}, []) == {}


@given(sections, sections)
def test_diff_patch_turns_old_into_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert json_equal(merge_patch(old, diff_patch(old, new)), new)


@given(sections, sections, st.integers(0, 100))
def test_a_device_applying_everything_converges_in_one_round(
    desired: dict[str, Any], state: dict[str, Any], version: int
) -> None:
    """Apply the plan, report, and the twin's delta is empty (nothing left to do)."""
    view = take_document(DeviceView(), {"state": {"desired": desired, "reported": state}, "version": version})
    assert view is not None
    plan = plan_apply(view, state, supported=desired.keys() | state.keys())
    new_state, outcomes = apply_in_memory(state, plan)
    after = took_report(view, report_for(view, new_state, outcomes, plan.unsupported))
    assert compute_delta(after.desired, after.reported) == {}
    assert plan_apply(after, new_state, supported=desired.keys()).apply == {}
