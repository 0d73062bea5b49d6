"""The outbox's bookkeeping: bounded, oldest dropped first, the gap announced to the cloud."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.device_agent.outbox import OutboxMeta, plan_append


def test_appends_until_full_then_drops_the_oldest() -> None:
    meta = OutboxMeta()
    for _ in range(3):
        meta, drop = plan_append(meta, limit=3)
        assert drop is None
    assert meta == OutboxMeta(next_seq=4, head=1)
    meta, drop = plan_append(meta, limit=3)
    assert drop == 1
    assert meta == OutboxMeta(next_seq=5, head=2, skipped_through=1, dropped=1)


@given(st.integers(1, 20), st.integers(0, 100))
def test_never_holds_more_than_the_limit_and_counts_every_drop(limit: int, events: int) -> None:
    meta = OutboxMeta()
    for _ in range(events):
        meta, _ = plan_append(meta, limit)
        assert meta.size <= limit
    assert meta.dropped == max(0, events - limit)
    assert meta.skipped_through == meta.head - 1 or meta.dropped == 0
