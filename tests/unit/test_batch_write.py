"""Batch writes (the rollout app's path into twins): one version per change, none for a no-op,
refusals as 400/404/409/413, marks never reach the device's view; the command around it, the
events it emits and what the delta app makes of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contracts.events import TwinChanged
from services.contracts.topics import DEFAULT, TwinAddress
from services.domain.errors import ErrorCode, TwinError
from services.domain.twin.commands import BatchWriteCommand, Context, DesiredPatch, apply_command
from services.domain.twin.document import TwinDocument
from services.domain.twin.fanout import plan_fanout
from services.domain.twin.limits import Limits
from services.domain.twin.ratelimit import TokenBucket
from services.domain.twin.update import BatchWrite, apply_batch_write, apply_delete
from tests.unit.strategies import keys, patches, scalars

LIMITS = Limits()
MARK = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": 1}}


def twin(**fields: object) -> TwinDocument:
    return TwinDocument(device_id="d", version=3, **fields)  # type: ignore[arg-type]


def test_desired_and_marks_land_in_one_version() -> None:
    outcome = apply_batch_write(
        twin(), "d", BatchWrite(desired={"config": {"rate": 5}}, configurations=MARK), 10, LIMITS
    )
    assert outcome.current.version == 4
    assert outcome.current.desired == {"config": {"rate": 5}}
    assert outcome.current.configurations == MARK
    assert "configurations" not in outcome.current.snapshot()
    assert outcome.current.desired_metadata["config"]["rate"] == {"timestamp": 10}
    assert outcome.desired_changed and not outcome.created and not outcome.unchanged


def test_a_write_that_changes_nothing_keeps_the_version() -> None:
    current = twin(desired={"config": 1}, configurations=MARK)
    outcome = apply_batch_write(current, "d", BatchWrite(desired={"config": 1}, configurations=MARK), 10, LIMITS)
    assert outcome.unchanged and outcome.current is current


def test_create_makes_the_twin_above_a_tombstone() -> None:
    tombstone = TwinDocument(device_id="d", version=7, deleted=True)
    outcome = apply_batch_write(tombstone, "d", BatchWrite(create=True, tags={"fleet": "a"}), 10, LIMITS)
    assert outcome.created and outcome.current.version == 8 and outcome.current.tags == {"fleet": "a"}
    assert outcome.previous is None and outcome.current.exists


@pytest.mark.parametrize(
    ("doc", "write", "expected"),
    [
        pytest.param(
            None,
            BatchWrite(create=True),
            {"version": 1, "created": True, "desired_changed": False},
            id="create-empty",
        ),
        pytest.param(
            None,
            BatchWrite(create=True, desired={"a": 1}, tags={"t": "x"}, configurations=MARK),
            {"version": 1, "created": True, "desired_changed": True, "desired": {"a": 1}, "tags": {"t": "x"}},
            id="create-with-everything",
        ),
        pytest.param(
            twin(desired={"a": 1}),
            BatchWrite(create=True, tags={"t": 1}),
            {"version": 4, "created": False, "desired_changed": False, "tags": {"t": 1}},
            id="create-on-an-existing-twin-patches-it",
        ),
        pytest.param(
            twin(desired={"a": 1, "b": 2}),
            BatchWrite(desired={"a": None}),
            {"version": 4, "desired_changed": True, "desired": {"b": 2}},
            id="null-deletes-a-desired-key",
        ),
        pytest.param(
            twin(tags={"t": 1, "u": 2}),
            BatchWrite(tags={"t": None}),
            {"version": 4, "desired_changed": False, "tags": {"u": 2}},
            id="null-deletes-a-tag",
        ),
        pytest.param(
            twin(configurations={**MARK, "old": {"status": "applied"}}),
            BatchWrite(configurations={"old": None}),
            {"version": 4, "desired_changed": False, "configurations": MARK},
            id="null-removes-a-mark",
        ),
        pytest.param(
            twin(configurations={"cfg": {"status": "error", "reason": "x"}}),
            BatchWrite(configurations={"cfg": {"status": "applied", "reason": None}}),
            {"version": 4, "configurations": {"cfg": {"status": "applied"}}},
            id="marks-merge-as-json-merge-patch",
        ),
        pytest.param(
            twin(desired={"on": 1}),
            BatchWrite(desired={"on": True}),
            {"version": 4, "desired_changed": True, "desired": {"on": True}},
            id="true-is-not-1",
        ),
        pytest.param(
            twin(desired={"a": 1}, configurations=MARK),
            BatchWrite(create=True, desired={"a": 1}, configurations=MARK, expected_version=3),
            {"version": 3, "unchanged": True},
            id="no-op-with-a-matching-version",
        ),
    ],
)
def test_writes(doc: TwinDocument | None, write: BatchWrite, expected: dict[str, Any]) -> None:
    outcome = apply_batch_write(doc, "d", write, 10, LIMITS)
    assert outcome.current.version == expected["version"]
    assert outcome.created is expected.get("created", False)
    assert outcome.unchanged is expected.get("unchanged", False)
    if "desired_changed" in expected:
        assert outcome.desired_changed is expected["desired_changed"]
    for name in ("desired", "tags", "configurations"):
        if name in expected:
            assert getattr(outcome.current, name) == expected[name]


def test_marks_alone_leave_desired_metadata_as_it_was() -> None:
    current = twin(desired={"a": 1}, desired_metadata={"a": {"timestamp": 5}})
    outcome = apply_batch_write(current, "d", BatchWrite(desired={"a": 1}, configurations=MARK), 10, LIMITS)
    assert not outcome.desired_changed and outcome.current.version == 4
    assert outcome.current.desired_metadata == {"a": {"timestamp": 5}}


@pytest.mark.parametrize(
    ("doc", "write", "code", "message"),
    [
        (None, BatchWrite(desired={"a": 1}), ErrorCode.NOT_FOUND, "no twin exists for d"),
        (
            TwinDocument(device_id="d", version=4, deleted=True),
            BatchWrite(configurations=MARK),
            ErrorCode.NOT_FOUND,
            "no twin",
        ),
        (
            twin(),
            BatchWrite(desired={"a": 1}, expected_version=2),
            ErrorCode.CONFLICT,
            "request expects version 2, twin is at 3",
        ),
        (None, BatchWrite(create=True, expected_version=5), ErrorCode.CONFLICT, "version conflict"),
        (twin(), BatchWrite(tags={"a": [1]}), ErrorCode.BAD_REQUEST, "tag 'a'"),
        (twin(), BatchWrite(configurations={"cfg": 1}), ErrorCode.BAD_REQUEST, "configurations.cfg"),
        (twin(), BatchWrite(configurations={"cfg": {"": 1}}), ErrorCode.BAD_REQUEST, "keys must be"),
        (twin(), BatchWrite(desired={"a": [None]}), ErrorCode.BAD_REQUEST, "null"),
        (twin(), BatchWrite(desired={"a": "x" * 20_000}), ErrorCode.TOO_LARGE, "8192"),
        (
            twin(reported={"r": "x" * 8000}),
            BatchWrite(desired={"a": "x" * 300}),
            ErrorCode.TOO_LARGE,
            "desired+reported",
        ),
    ],
)
def test_refusals(doc: TwinDocument | None, write: BatchWrite, code: ErrorCode, message: str) -> None:
    with pytest.raises(TwinError) as refused:
        apply_batch_write(doc, "d", write, 10, LIMITS)
    assert refused.value.code is code and message in refused.value.message


def test_marks_are_never_shown_to_the_device_and_go_with_a_delete() -> None:
    marked = twin(desired={"a": 1}, tags={"t": 1}, configurations=MARK)
    assert "configurations" not in str(marked.state_view()) and "cfg" not in str(marked.snapshot())
    tombstone, _ = apply_delete(marked, None, None, 10)
    assert tombstone.configurations == {} and tombstone.tags == {}
    again = apply_batch_write(tombstone, "d", BatchWrite(create=True), 11, LIMITS).current
    assert again.configurations == {} and again.version == 5


def test_documents_stored_before_marks_existed_still_load() -> None:
    stored = twin(desired={"a": 1}).model_dump(mode="json")
    del stored["configurations"]
    assert TwinDocument.model_validate(stored).configurations == {}


optional_patches = st.one_of(st.none(), patches)
marks = st.one_of(st.none(), st.dictionaries(keys, st.one_of(st.none(), st.dictionaries(keys, scalars, max_size=3))))
tag_patches = st.one_of(st.none(), st.dictionaries(keys, st.one_of(st.none(), scalars), max_size=3))


@given(optional_patches, tag_patches, marks, st.booleans())
def test_repeating_a_write_never_bumps_the_version_twice(
    desired: dict[str, Any] | None, tags: dict[str, Any] | None, configurations: dict[str, Any] | None, create: bool
) -> None:
    write = BatchWrite(create, desired, tags, configurations)
    start = twin(desired={"a": 1}, tags={"b": "x"}, configurations=MARK)
    first = apply_batch_write(start, "d", write, 10, LIMITS)
    second = apply_batch_write(first.current, "d", write, 11, LIMITS)
    assert second.unchanged and second.current is first.current
    assert first.current.version == (3 if first.unchanged else 4)


# --- the twin-store command ----------------------------------------------------------------


def run(docs: dict[str, TwinDocument | None], write: BatchWrite, buckets: dict[str, TokenBucket] | None = None):  # type: ignore[no-untyped-def]
    ctx = Context(DEFAULT, LIMITS, 100.0, buckets if buckets is not None else {})
    return apply_command(docs, BatchWriteCommand(TwinAddress("d"), write), ctx)


def test_the_command_emits_the_current_tags_and_marks() -> None:
    docs: dict[str, TwinDocument | None] = {"d": twin(desired={"a": 1}, tags={"t": 1})}
    effects = run(docs, BatchWrite(configurations=MARK))
    (event,) = effects.events
    assert isinstance(event, TwinChanged) and event.cause == "configuration"
    assert event.tags == {"t": 1} and event.configurations == MARK and event.version == 4
    assert docs["d"] is effects.document and not effects.unchanged and not effects.created
    effects = run(docs, BatchWrite(desired={"a": True}))
    assert [e.cause for e in effects.events if isinstance(e, TwinChanged)] == ["desired"]


def test_a_no_op_command_writes_and_emits_nothing() -> None:
    current = twin(configurations=MARK)
    docs: dict[str, TwinDocument | None] = {"d": current}
    effects = run(docs, BatchWrite(configurations=MARK))
    assert effects.unchanged and effects.events == [] and docs["d"] is current


def test_a_refused_command_keeps_the_twin_and_tells_its_version() -> None:
    current = twin()
    docs: dict[str, TwinDocument | None] = {"d": current}
    effects = run(docs, BatchWrite(desired={"a": 1}, expected_version=1))
    assert effects.error is not None and effects.error.code is ErrorCode.CONFLICT
    assert effects.document is current and docs["d"] is current and effects.events == []
    missing = run({}, BatchWrite(desired={"a": 1}))
    assert missing.error is not None and missing.document is None


def test_batch_writes_take_no_rate_tokens() -> None:
    empty = {"d": TokenBucket(tokens=0.0, updated=100.0)}
    docs: dict[str, TwinDocument | None] = {"d": twin()}
    assert run(docs, BatchWrite(desired={"a": 1}), empty).error is None
    refused = apply_command(docs, DesiredPatch(TwinAddress("d"), {"a": 2}), Context(DEFAULT, LIMITS, 100.0, empty))
    assert refused.error is not None and refused.error.code is ErrorCode.TOO_MANY_REQUESTS


def test_events_from_before_tags_and_marks_still_parse() -> None:
    old = '{"schema_version":1,"device_id":"d","version":2,"timestamp":1,"cause":"desired","current":null}'
    event = TwinChanged.model_validate_json(old)
    assert event.tags == {} and event.configurations == {}


# --- what the delta app sends ----------------------------------------------------------------


def changed(doc: TwinDocument, previous: TwinDocument | None, cause: str) -> TwinChanged:
    return TwinChanged(
        device_id="d",
        version=doc.version,
        timestamp=doc.timestamp,
        cause=cause,  # type: ignore[arg-type]
        previous=previous.snapshot() if previous is not None else None,
        current=doc.snapshot(),
    )


def test_a_change_of_marks_alone_sends_the_device_nothing() -> None:
    before = twin(desired={"a": 1})
    marked = apply_batch_write(before, "d", BatchWrite(configurations=MARK), 10, LIMITS).current
    out, sent = plan_fanout([changed(marked, before, "configuration")], {TwinAddress("d"): 3})
    assert out == [] and sent == {TwinAddress("d"): 3}


def test_desired_after_marks_sends_one_delta_and_one_documents() -> None:
    before = twin(desired={"a": 1})
    marked = apply_batch_write(before, "d", BatchWrite(configurations=MARK), 10, LIMITS).current
    wanted = apply_batch_write(marked, "d", BatchWrite(desired={"a": 2}), 11, LIMITS).current
    events = [changed(marked, before, "configuration"), changed(wanted, marked, "desired")]
    (out,), _ = plan_fanout(events, {TwinAddress("d"): 3})
    assert out.delta is not None and out.delta["state"] == {"a": 2} and out.delta["version"] == 5
    assert out.documents is not None and out.documents["current"]["version"] == 5
