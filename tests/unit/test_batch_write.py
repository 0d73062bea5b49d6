"""Batch writes (the rollout app's path into twins): one version per change, none for a no-op,
refusals as 400/404/409/413, marks never reach the device's view."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.document import TwinDocument
from services.domain.errors import ErrorCode, TwinError
from services.domain.limits import Limits
from services.domain.update import BatchWrite, apply_batch_write

LIMITS = Limits()
MARK = {"cfg": {"status": "applied", "keys": ["config"], "stage": 0, "at": 1}}


def twin(**fields: object) -> TwinDocument:
    return TwinDocument(device_id="d", version=3, **fields)


def test_desired_and_marks_land_in_one_version() -> None:
    outcome = apply_batch_write(
        twin(), "d", BatchWrite(desired={"config": {"rate": 5}}, configurations=MARK), 10, LIMITS
    )
    assert outcome.current.version == 4
    assert outcome.current.desired == {"config": {"rate": 5}}
    assert outcome.current.configurations == MARK
    assert "configurations" not in outcome.current.snapshot()
    assert outcome.current.desired_metadata["config"]["rate"] == {"timestamp": 10}


def test_a_write_that_changes_nothing_keeps_the_version() -> None:
    current = twin(desired={"config": 1}, configurations=MARK)
    outcome = apply_batch_write(current, "d", BatchWrite(desired={"config": 1}, configurations=MARK), 10, LIMITS)
    assert outcome.unchanged and outcome.current is current


def test_create_makes_the_twin_above_a_tombstone() -> None:
    tombstone = TwinDocument(device_id="d", version=7, deleted=True)
    outcome = apply_batch_write(tombstone, "d", BatchWrite(create=True, tags={"fleet": "a"}), 10, LIMITS)
    assert outcome.created and outcome.current.version == 8 and outcome.current.tags == {"fleet": "a"}


@pytest.mark.parametrize(
    ("doc", "write", "code"),
    [
        (None, BatchWrite(desired={"a": 1}), ErrorCode.NOT_FOUND),
        (twin(), BatchWrite(desired={"a": 1}, expected_version=2), ErrorCode.CONFLICT),
        (twin(), BatchWrite(tags={"a": [1]}), ErrorCode.BAD_REQUEST),
        (twin(), BatchWrite(configurations={"cfg": 1}), ErrorCode.BAD_REQUEST),
        (twin(), BatchWrite(desired={"a": "x" * 20_000}), ErrorCode.TOO_LARGE),
    ],
)
def test_refusals(doc: TwinDocument | None, write: BatchWrite, code: ErrorCode) -> None:
    with pytest.raises(TwinError) as refused:
        apply_batch_write(doc, "d", write, 10, LIMITS)
    assert refused.value.code is code


@given(st.dictionaries(st.sampled_from("abc"), st.one_of(st.integers(), st.none(), st.text(max_size=3))))
def test_repeating_a_write_never_bumps_the_version_twice(patch: dict[str, object]) -> None:
    write = BatchWrite(desired=patch, configurations=MARK)
    first = apply_batch_write(twin(desired={"a": 1}), "d", write, 10, LIMITS).current
    second = apply_batch_write(first, "d", write, 11, LIMITS)
    assert second.unchanged and second.current.version == first.version
