from __future__ import annotations

from typing import Any

import pytest

from services.domain.errors import ErrorCode, TwinError
from services.domain.twin.document import RECENT_TOKENS, TwinDocument
from services.domain.twin.limits import Limits
from services.domain.twin.update import (
    apply_delete,
    apply_update,
    create_twin,
    parse_update,
    patch_desired,
    patch_tags,
)

LIMITS = Limits()


def update(doc: TwinDocument | None, payload: dict[str, Any], now: int = 1000, limits: Limits = LIMITS) -> Any:
    return apply_update(doc, "dev1", "", parse_update(payload, limits), now, limits)


def code_of(fn: Any, *args: Any) -> int:
    with pytest.raises(TwinError) as info:
        fn(*args)
    return int(info.value.code)


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ([], 400, "JSON object"),
        ({}, 400, "missing required field: state"),
        ({"state": 5}, 400, "object or null"),
        ({"state": {}}, 400, "desired and/or reported"),
        ({"state": {"delta": {}}}, 400, "not delta"),
        ({"state": {"desired": [1]}}, 400, "state.desired"),
        ({"state": {"reported": {"a": [1, None]}}}, 400, "may not contain null"),
        ({"state": {"reported": {"": 1}}}, 400, "keys must be"),
        ({"state": {"reported": {}}, "version": -1}, 400, "version"),
        ({"state": {"reported": {}}, "version": True}, 400, "version"),
        ({"state": {"reported": {}}, "clientToken": "x" * 65}, 400, "64 bytes"),
        ({"state": {"reported": {}}, "clientToken": 5}, 400, "clientToken"),
        ({"state": {"reported": {}}, "extra": 1}, 400, "unexpected field(s): extra"),
    ],
)
def test_bad_requests_are_400_with_a_message(payload: Any, code: int, fragment: str) -> None:
    with pytest.raises(TwinError) as info:
        parse_update(payload, LIMITS)
    assert int(info.value.code) == code
    assert fragment in info.value.message


def test_depth_limit() -> None:
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(7):
        nested = {"n": nested}
    parse_update({"state": {"reported": nested}}, LIMITS)  # 8 levels: fine
    assert code_of(parse_update, {"state": {"reported": {"n": nested}}}, LIMITS) == 400


def test_first_update_creates_twin_with_version_1_and_metadata() -> None:
    outcome = update(None, {"state": {"reported": {"temp": 21, "fw": {"v": "1.0"}}}, "clientToken": "t1"})
    doc = outcome.current
    assert outcome.previous is None
    assert doc.version == 1 and doc.timestamp == 1000
    assert doc.reported == {"temp": 21, "fw": {"v": "1.0"}}
    assert doc.reported_metadata == {"temp": {"timestamp": 1000}, "fw": {"v": {"timestamp": 1000}}}
    assert outcome.accepted == {
        "state": {"reported": {"temp": 21, "fw": {"v": "1.0"}}},
        "metadata": {"reported": {"temp": {"timestamp": 1000}, "fw": {"v": {"timestamp": 1000}}}},
        "version": 1,
        "timestamp": 1000,
        "clientToken": "t1",
    }


def test_partial_update_merges_and_versions_grow() -> None:
    doc = update(None, {"state": {"reported": {"a": 1, "b": 2}}}).current
    doc = update(doc, {"state": {"reported": {"b": None, "c": 3}, "desired": {"a": 5}}}, now=2000).current
    assert doc.reported == {"a": 1, "c": 3}
    assert doc.desired == {"a": 5}
    assert doc.delta() == {"a": 5}
    assert doc.version == 2
    assert doc.reported_metadata == {"a": {"timestamp": 1000}, "c": {"timestamp": 2000}}


def test_null_section_deletes_it_and_null_state_clears_but_keeps_twin() -> None:
    doc = update(None, {"state": {"reported": {"a": 1}, "desired": {"a": 2}}}).current
    cleared = update(doc, {"state": {"desired": None}})
    assert cleared.current.desired == {} and cleared.current.reported == {"a": 1}
    assert cleared.accepted["state"] == {"desired": None}
    emptied = update(cleared.current, {"state": None})
    assert emptied.current.exists and emptied.current.version == 3
    assert emptied.current.desired == {} and emptied.current.reported == {}
    assert emptied.accepted["state"] is None


def test_version_lock_conflict_changes_nothing() -> None:
    doc = update(None, {"state": {"reported": {"a": 1}}}).current
    assert code_of(update, doc, {"state": {"reported": {"a": 2}}, "version": 7}) == ErrorCode.CONFLICT
    assert doc.reported == {"a": 1}
    assert update(doc, {"state": {"reported": {"a": 2}}, "version": 1}).current.version == 2


def test_size_limit_counts_merged_state() -> None:
    limits = Limits(max_state_bytes=100)
    doc = update(None, {"state": {"reported": {"a": "x" * 40}}}, limits=limits).current
    with pytest.raises(TwinError) as info:
        update(doc, {"state": {"desired": {"b": "y" * 40}}}, limits=limits)
    assert info.value.code == ErrorCode.TOO_LARGE and "at most 100 bytes" in info.value.message
    # deleting makes room again
    assert update(doc, {"state": {"reported": {"a": None}, "desired": {"b": "y" * 40}}}, limits=limits)


def test_redelivered_client_token_is_not_applied_twice() -> None:
    doc = update(None, {"state": {"reported": {"n": 1}}, "clientToken": "c1"}).current
    again = update(doc, {"state": {"reported": {"n": 1}}, "clientToken": "c1"}, now=5000)
    assert again.replayed and again.current is doc
    assert again.accepted["version"] == 1 and again.accepted["clientToken"] == "c1"


def test_token_memory_is_bounded() -> None:
    doc = None
    for i in range(RECENT_TOKENS + 5):
        doc = update(doc, {"state": {"reported": {"n": i}}, "clientToken": f"t{i}"}).current
    assert doc is not None and len(doc.recent_tokens) == RECENT_TOKENS
    assert doc.version_for_token("t0") is None and doc.version_for_token(f"t{RECENT_TOKENS + 4}") == doc.version


def test_delete_leaves_tombstone_and_versions_continue() -> None:
    doc = update(None, {"state": {"reported": {"a": 1}}}).current
    tombstone, ack = apply_delete(doc, None, "tok", 2000)
    assert not tombstone.exists and tombstone.version == 2
    assert ack == {"version": 2, "timestamp": 2000, "clientToken": "tok"}
    assert code_of(apply_delete, tombstone, None, None, 3000) == ErrorCode.NOT_FOUND
    reborn = update(tombstone, {"state": {"reported": {"b": 1}}})
    assert reborn.current.version == 3 and reborn.previous is None and reborn.current.reported == {"b": 1}


def test_desired_patch_and_tags() -> None:
    outcome = patch_desired(None, "dev1", "", {"fan": "on"}, None, 10, LIMITS)
    assert outcome.current.desired == {"fan": "on"}
    assert code_of(patch_desired, outcome.current, "dev1", "", {"a": 1}, 5, 11, LIMITS) == ErrorCode.CONFLICT
    tagged = patch_tags(outcome.current, {"site": "berlin"}, 1, 12)
    assert tagged.tags == {"site": "berlin"} and tagged.version == 2
    assert code_of(patch_tags, tagged, {"nested": {"x": 1}}, None, 13) == ErrorCode.BAD_REQUEST
    assert code_of(patch_tags, None, {"a": 1}, None, 13) == ErrorCode.NOT_FOUND


def test_create_twin() -> None:
    created = create_twin(None, "dev1", "", 5)
    assert created.exists and created.version == 1
    assert code_of(create_twin, created, "dev1", "", 6) == ErrorCode.CONFLICT


def test_state_view_and_delta_message() -> None:
    doc = update(None, {"state": {"desired": {"a": 1, "b": 2}, "reported": {"a": 1}}}).current
    view = doc.state_view()
    assert view["state"] == {"desired": {"a": 1, "b": 2}, "reported": {"a": 1}, "delta": {"b": 2}}
    assert doc.delta_message("tok") == {
        "state": {"b": 2},
        "metadata": {"b": {"timestamp": 1000}},
        "version": 1,
        "timestamp": 1000,
        "clientToken": "tok",
    }


def test_tag_names_values_and_count_are_bounded() -> None:
    from services.domain.twin.update import MAX_TAGS, create_twin, patch_tags

    twin = create_twin(None, "d", "", 1)
    for patch, fragment in (
        ({"": "x"}, "tag names are 1..128 bytes"),
        ({"k" * 129: "x"}, "tag names are 1..128 bytes"),
        ({"k": "v" * 257}, "at most 256"),
        ({f"t{i}": i for i in range(MAX_TAGS + 1)}, f"at most {MAX_TAGS} tags"),
        ({"k": {"nested": 1}}, "must be a string"),
    ):
        with pytest.raises(TwinError) as refused:
            patch_tags(twin, patch, None, 2)
        assert int(refused.value.code) == 400 and fragment in refused.value.message
    assert patch_tags(twin, {"region": "eu"}, None, 2).tags == {"region": "eu"}
