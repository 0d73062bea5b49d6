from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.json_values import json_equal
from services.domain.twin.delta import compute_delta
from services.domain.twin.merge import merge_metadata, merge_patch, metadata_for
from tests.unit.strategies import keys, patches, scalars, sections


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": None}, {}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}, {"a": {"c": 2}}),
        ({"a": {"b": 1}}, {"a": {"b": None}}, {"a": {}}),  # deleting the last child leaves {}
        ({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}),  # arrays are values
        ({"a": 1}, {"a": {"b": 2}}, {"a": {"b": 2}}),
        ({"a": {"b": 2}}, {"a": 3}, {"a": 3}),
        ({"a": 1}, {"b": {}}, {"a": 1, "b": {}}),  # an empty object is a value
        ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": 1}}),  # ... merged into an object, it changes nothing
        ({"a": 1}, {"a": {}}, {"a": {}}),
        ({}, {"a": {"b": None}}, {"a": {}}),
        ({"a": {"x": {"y": 1}}}, {"a": {"x": {"z": 2}}}, {"a": {"x": {"y": 1, "z": 2}}}),
        ({}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}}),
    ],
)
def test_merge_patch(target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == expected
    assert repr(target) == before  # inputs untouched


@pytest.mark.parametrize(
    ("desired", "reported", "expected"),
    [
        ({}, {}, {}),
        ({"a": 1}, {}, {"a": 1}),
        ({"a": 1}, {"a": 1}, {}),
        ({}, {"a": 1}, {}),  # reported-only keys never appear
        ({"a": 1}, {"a": 2, "b": 3}, {"a": 1}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 2}}),
        ({"a": {"b": 1}}, {"a": 5}, {"a": {"b": 1}}),
        ({"a": [1, 2]}, {"a": [1, 2]}, {}),
        ({"a": [1, 2]}, {"a": [2, 1]}, {"a": [1, 2]}),
        ({"a": True}, {"a": 1}, {"a": True}),  # JSON true is not 1
        ({"a": 1}, {"a": 1.0}, {}),
    ],
)
def test_compute_delta(desired: dict[str, Any], reported: dict[str, Any], expected: dict[str, Any]) -> None:
    assert compute_delta(desired, reported) == expected


@given(sections)
def test_delta_of_document_with_itself_is_empty(doc: dict[str, Any]) -> None:
    assert compute_delta(doc, doc) == {}


@given(sections, sections)
def test_applying_delta_to_reported_empties_delta(desired: dict[str, Any], reported: dict[str, Any]) -> None:
    delta = compute_delta(desired, reported)
    assert compute_delta(desired, merge_patch(reported, delta)) == {}


@given(sections, sections)
def test_delta_never_lists_reported_only_keys(desired: dict[str, Any], reported: dict[str, Any]) -> None:
    assert set(compute_delta(desired, reported)) <= set(desired)


@given(sections, patches, patches)
def test_merge_is_associative_on_disjoint_keys(base: dict[str, Any], p1: dict[str, Any], p2: dict[str, Any]) -> None:
    p2 = {k: v for k, v in p2.items() if k not in p1}
    sequential = merge_patch(merge_patch(base, p1), p2)
    combined = merge_patch(base, merge_patch_raw(p1, p2))
    assert json_equal(sequential, combined)


def merge_patch_raw(p1: dict[str, Any], p2: dict[str, Any]) -> dict[str, Any]:
    """Union of two patches with disjoint keys (nulls kept: they are instructions)."""
    return {**p1, **p2}


@given(sections, patches)
def test_merge_is_idempotent(base: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(base, patch)
    assert json_equal(merge_patch(once, patch), once)


@given(sections, patches, st.integers(1, 10**9))
def test_metadata_mirrors_state_shape(base: dict[str, Any], patch: dict[str, Any], now: int) -> None:
    meta = merge_metadata({}, base, base, now - 1) if base else {}
    merged = merge_patch(base, patch)
    new_meta = merge_metadata(meta, patch, merged, now)
    assert _shape(merged) == _meta_shape(new_meta)


def _shape(value: Any) -> Any:
    return {k: _shape(v) for k, v in value.items()} if isinstance(value, dict) else "leaf"


def _meta_shape(meta: Any) -> Any:
    if set(meta) == {"timestamp"} and isinstance(meta["timestamp"], int):
        return "leaf"
    return {k: _meta_shape(v) for k, v in meta.items()}


def test_metadata_stamps_only_touched_leaves() -> None:
    meta = merge_metadata({}, {"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}, 100)
    merged = merge_patch({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}})
    meta = merge_metadata(meta, {"b": {"d": 3}}, merged, 200)
    assert meta == {"a": {"timestamp": 100}, "b": {"c": {"timestamp": 100}, "d": {"timestamp": 200}}}
    assert metadata_for({"b": {"d": 3}, "x": None}, meta) == {"b": {"d": {"timestamp": 200}}, "x": None}


def test_metadata_for_a_key_named_timestamp() -> None:
    state = {"timestamp": {"x": 1}}
    meta = merge_metadata({}, state, state, 5)
    assert meta == {"timestamp": {"x": {"timestamp": 5}}}
    assert metadata_for(state, meta) == meta


@given(keys, scalars)
def test_json_equal_is_reflexive(key: str, value: Any) -> None:
    assert json_equal({key: value}, {key: value})


@pytest.mark.parametrize(
    ("desired", "reported", "expected"),
    [
        ({"d": {}}, {}, {"d": {}}),  # an empty object desired is a value the device lacks
        ({"d": {}}, {"d": {}}, {}),
        ({"d": {}}, {"d": {"x": 1}}, {}),  # nothing desired inside d differs
        ({"d": {}}, {"d": 3}, {"d": {}}),
    ],
)
def test_delta_of_empty_objects(desired: dict[str, Any], reported: dict[str, Any], expected: dict[str, Any]) -> None:
    assert compute_delta(desired, reported) == expected


@given(sections, keys)
def test_an_empty_object_in_a_patch_is_kept(base: dict[str, Any], key: str) -> None:
    merged = merge_patch(base, {key: {}})
    assert isinstance(merged[key], dict)
    assert merged[key] == (base[key] if isinstance(base.get(key), dict) else {})


@given(sections, keys, keys)
def test_deleting_the_last_child_leaves_the_parent_empty(base: dict[str, Any], parent: str, child: str) -> None:
    merged = merge_patch(merge_patch(base, {parent: None}), {parent: {child: 1}})
    assert merge_patch(merged, {parent: {child: None}}) == {**merged, parent: {}}


def test_metadata_of_an_empty_object() -> None:
    meta = merge_metadata({}, {"d": {}, "a": 1}, {"d": {}, "a": 1}, 7)
    assert meta == {"d": {}, "a": {"timestamp": 7}}
    emptied = merge_patch({"d": {"x": 1}}, {"d": {"x": None}})
    assert merge_metadata({"d": {"x": {"timestamp": 1}}}, {"d": {"x": None}}, emptied, 9) == {"d": {}}
