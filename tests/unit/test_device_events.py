"""Device event batches: parsing, in-order de-duplicating acceptance, and the events app's shell
(the conditional cursor write, holding what it took, before the sinks) against an in-memory
store."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.device_events import MAX_BATCH_EVENTS, DeviceEvent, EventBatch
from services.contracts.events import DeviceEventRecorded
from services.contracts.wire import WireEncoding, encode_payload
from services.domain.device.events import Accepted, EventCursor, Waiting, accept_batch, parse_batch
from services.domain.errors import ErrorCode, TwinError
from services.events.ingest import EventIngest, KeyedLocks, Outcome, cursor_key
from services.events.sinks import batch_lines, batch_object_name
from services.platform.sidecar import Stored, Write, WriteFailed

NEVER = float("inf")


def event(seq: int, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": 1_700_000_000.0 + seq, "type": "reading", "data": data}


def batch(first: int, last: int, skipped_through: int = 0) -> EventBatch:
    return EventBatch(
        events=[DeviceEvent.model_validate(event(s, n=s)) for s in range(first, last + 1)],
        skipped_through=skipped_through,
    )


# -- parse_batch -------------------------------------------------------------------------------


def test_parse_batch_takes_a_valid_batch() -> None:
    parsed = parse_batch({"events": [event(3, t=21.5), event(4)], "skipped_through": 2})
    assert (parsed.first, parsed.last, parsed.skipped_through) == (3, 4, 2)
    assert parsed.events[0].data == {"t": 21.5}
    assert parse_batch({"events": [{"seq": 1, "ts": 5, "type": "boot"}]}).events[0].data == {}


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ({}, "events"),
        ({"events": []}, "events"),
        ({"events": [event(1), event(3)]}, "consecutive"),
        ({"events": [event(2), event(1)]}, "consecutive"),
        ({"events": [event(5)], "skipped_through": 5}, "skipped_through"),
        ({"events": [event(5)], "skipped_through": -1}, "skipped_through"),
        ({"events": [event(1)], "extra": 1}, "extra"),
        ({"events": [{**event(1), "device": "x"}]}, "device"),
        ({"events": [event(0)]}, "seq"),
        ({"events": [{**event(1), "type": ""}]}, "type"),
        ({"events": [{**event(1), "type": "t" * 65}]}, "type"),
        ({"events": [{**event(1), "data": [1, 2]}]}, "data"),
        ({"events": [{"seq": 1, "type": "x"}]}, "ts"),
        ({"events": [event(s) for s in range(1, MAX_BATCH_EVENTS + 2)]}, "events"),
        ([event(1)], "payload"),
        ("events", "payload"),
        (None, "payload"),
    ],
)
def test_parse_batch_rejects_malformed_batches_with_a_400_naming_the_problem(payload: Any, names: str) -> None:
    with pytest.raises(TwinError) as error:
        parse_batch(payload)
    assert error.value.code == ErrorCode.BAD_REQUEST
    assert names in error.value.message


# -- accept_batch: table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cursor", "incoming", "now", "fresh", "after"),
    [
        (EventCursor(), batch(1, 3), 0, [1, 2, 3], EventCursor(4)),
        (EventCursor(4), batch(1, 3), 0, [], EventCursor(4)),  # re-sent batch
        (EventCursor(4), batch(2, 6), 0, [4, 5, 6], EventCursor(7)),  # grown re-send
        (EventCursor(4), batch(4, 4), 0, [4], EventCursor(5)),
        (EventCursor(1), batch(11, 12, skipped_through=10), 0, [11, 12], EventCursor(13, lost=10)),
        (EventCursor(5, lost=2), batch(11, 11, skipped_through=10), 0, [11], EventCursor(12, lost=8)),
        (EventCursor(21), batch(21, 22, skipped_through=15), 0, [21, 22], EventCursor(23)),  # skip already taken
        (EventCursor(1, gap_since=100.0), batch(5, 6), 130.0, [5, 6], EventCursor(7, lost=4)),  # gap timed out
        (EventCursor(1, gap_since=100.0), batch(1, 2), 101.0, [1, 2], EventCursor(3)),  # gap filled: wait ends
    ],
)
def test_accept_batch_takes_only_new_events(
    cursor: EventCursor, incoming: EventBatch, now: float, fresh: list[int], after: EventCursor
) -> None:
    result = accept_batch(cursor, incoming, now, gap_timeout=30)
    assert isinstance(result, Accepted)
    assert [e.seq for e in result.fresh] == fresh
    assert result.cursor == replace(after, pending=tuple(result.fresh))  # held until handed over


@pytest.mark.parametrize(
    ("cursor", "incoming", "now", "missing_from", "gap_since"),
    [
        (EventCursor(), batch(5, 6), 100.0, 1, 100.0),  # the wait starts
        (EventCursor(1, gap_since=100.0), batch(5, 6), 129.0, 1, 100.0),  # and keeps its start
        (EventCursor(), batch(21, 22, skipped_through=10), 100.0, 11, 100.0),  # skip, then a gap
    ],
)
def test_accept_batch_waits_for_a_missing_earlier_batch(
    cursor: EventCursor, incoming: EventBatch, now: float, missing_from: int, gap_since: float
) -> None:
    result = accept_batch(cursor, incoming, now, gap_timeout=30)
    assert isinstance(result, Waiting)
    assert result.missing_from == missing_from
    assert result.cursor == EventCursor(cursor.next_seq, cursor.lost, gap_since)


def test_cursor_round_trips_through_json() -> None:
    for cursor in (EventCursor(17, 3, 12.5), EventCursor(18, 3, None, tuple(batch(15, 17).events))):
        assert EventCursor.from_json(json.loads(json.dumps(cursor.to_json()))) == cursor
    assert "pending" not in EventCursor(17).to_json()  # a settled cursor stays as small as before
    assert EventCursor.from_json(None) == EventCursor()


# -- accept_batch: properties ------------------------------------------------------------------


def deliver_all(deliveries: Sequence[EventBatch], clock_step: float = 0.0, gap_timeout: float = NEVER) -> Any:
    """Feed batches as daprd would: a waiting batch goes to the back of the queue and comes again
    (redelivery). Returns the taken sequence numbers, in the order taken, and the final cursor."""
    queue = deque(deliveries)
    cursor = EventCursor()
    taken: list[int] = []
    now = 0.0
    for _ in range(100_000):
        if not queue:
            return taken, cursor
        incoming = queue.popleft()
        now += clock_step
        result = accept_batch(cursor, incoming, now, gap_timeout)
        cursor = result.cursor.handed_over()
        if isinstance(result, Waiting):
            queue.append(incoming)
        else:
            taken += [e.seq for e in result.fresh]
    raise AssertionError("deliveries never settled")


@st.composite
def covering_batches(draw: st.DrawFn) -> tuple[int, list[EventBatch]]:
    """Batches (possibly overlapping, as a device's grown re-sends are) covering events 1..n."""
    n = draw(st.integers(1, 60))
    batches = []
    first = 1
    while first <= n:
        last = draw(st.integers(first, min(n, first + 9)))
        start = draw(st.integers(max(1, first - 3), first))  # overlap with what came before
        batches.append(batch(start, last))
        first = last + 1
    return n, batches


@st.composite
def deliveries_of(draw: st.DrawFn, batches: list[EventBatch]) -> list[EventBatch]:
    """Every batch at least once, some more often, in any order."""
    extra = draw(st.lists(st.sampled_from(batches), max_size=len(batches)))
    return draw(st.permutations([*batches, *extra]))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_order_with_duplicates_yields_every_event_exactly_once_in_order(data: st.DataObject) -> None:
    n, batches = data.draw(covering_batches())
    deliveries = data.draw(deliveries_of(batches))
    taken, cursor = deliver_all(deliveries)
    assert taken == list(range(1, n + 1))
    assert cursor == EventCursor(n + 1)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_overflow_skips_count_the_dropped_events_as_lost(data: st.DataObject) -> None:
    """A device that dropped some events unsent says so in later batches; delivered in order (with
    re-sends), everything sent is taken once and everything dropped is counted lost."""
    n = data.draw(st.integers(2, 60))
    dropped = set(data.draw(st.lists(st.integers(1, n - 1), unique=True, max_size=n // 2)))
    sent = [s for s in range(1, n + 1) if s not in dropped]
    batches, run = [], [sent[0]]
    for seq in sent[1:]:
        if seq == run[-1] + 1 and len(run) < 5 and data.draw(st.booleans()):
            run.append(seq)
        else:
            batches.append(batch(run[0], run[-1], max((d for d in dropped if d < run[0]), default=0)))
            run = [seq]
    batches.append(batch(run[0], run[-1], max((d for d in dropped if d < run[0]), default=0)))
    deliveries = [b for b in batches for _ in range(data.draw(st.integers(1, 2)))]
    taken, cursor = deliver_all(deliveries)
    assert taken == sent
    assert cursor.lost == len(dropped) and cursor.next_seq == n + 1


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_batch_that_never_comes_is_given_up_after_the_gap_timeout(data: st.DataObject) -> None:
    _, batches = data.draw(covering_batches().filter(lambda nb: len(nb[1]) >= 2))
    never = data.draw(st.sampled_from(batches))
    deliveries = data.draw(deliveries_of([b for b in batches if b is not never]))
    taken, cursor = deliver_all(deliveries, clock_step=1.0, gap_timeout=10.0)
    # Every event up to the last one delivered is taken once, in order, or counted lost.
    others = {e.seq for b in deliveries for e in b.events}
    assert taken == sorted(set(taken)) and set(taken) <= others
    assert cursor.next_seq == max(others) + 1
    assert len(taken) + cursor.lost == cursor.next_seq - 1
    assert cursor.lost >= len(set(range(1, cursor.next_seq)) - others)


def test_gap_timeout_takes_the_later_batch_and_counts_the_missing_as_lost() -> None:
    waiting = accept_batch(EventCursor(), batch(11, 15), now=100.0, gap_timeout=30)
    assert isinstance(waiting, Waiting)
    still = accept_batch(waiting.cursor, batch(11, 15), now=129.9, gap_timeout=30)
    assert isinstance(still, Waiting)
    taken = accept_batch(still.cursor, batch(11, 15), now=130.0, gap_timeout=30)
    assert isinstance(taken, Accepted)
    assert [e.seq for e in taken.fresh] == [11, 12, 13, 14, 15]
    assert taken.cursor.handed_over() == EventCursor(16, lost=10)
    late = accept_batch(taken.cursor.handed_over(), batch(1, 10), now=131.0, gap_timeout=30)
    assert isinstance(late, Accepted) and late.fresh == [] and late.cursor == taken.cursor.handed_over()


# -- what the sinks get --------------------------------------------------------------------------


def test_recorded_events_carry_the_device_and_the_event() -> None:
    recorded = DeviceEventRecorded.of("dev-1", batch(7, 7).events[0])
    assert recorded.model_dump() == {
        "schema_version": 1,
        "device_id": "dev-1",
        "seq": 7,
        "ts": 1_700_000_007.0,
        "type": "reading",
        "data": {"n": 7},
    }
    assert DeviceEventRecorded.model_validate_json(recorded.model_dump_json()) == recorded


def test_batch_objects_are_named_by_range_and_rewritten_with_the_same_bytes() -> None:
    events = batch(12, 14).events
    assert batch_object_name("dev-1", events) == "dev-1/000000000012-000000000014.json"
    assert batch_object_name("..", events).startswith("%2E./")
    assert batch_object_name(".a", events).startswith("%2Ea/")
    lines = batch_lines("dev-1", events)
    assert lines == batch_lines("dev-1", batch(12, 14).events)
    assert [json.loads(line)["seq"] for line in lines.splitlines()] == [12, 13, 14]


# -- the events app's shell, on an in-memory store -----------------------------------------------


class MemoryStore:
    """The sidecar's state calls with ETags and first-write semantics."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[dict[str, Any], str]] = {}
        self.writes = 0
        self.race: dict[str, Any] | None = None
        """A value another writer stores just before our next write (an ETag race)."""
        self.acks: list[tuple[str, int]] = []

    async def publish_device(self, topic: str, payload: dict[str, Any], encoding: WireEncoding) -> None:
        self.acks.append((topic, payload["next_seq"]))

    async def get(self, key: str, store: str = "") -> Stored:
        value, etag = self.items.get(key, (None, None))  # type: ignore[arg-type]
        return Stored(key, value, etag)

    async def write_each(self, writes: Sequence[Write], store: str = "") -> None:
        for write in writes:
            if self.race is not None:
                self.items[write.key] = (self.race, f"race-{self.writes}")
                self.race = None
            current = self.items.get(write.key)
            if (current[1] if current else None) != write.etag:
                raise WriteFailed(write.key)
            self.writes += 1
            self.items[write.key] = (write.value, str(self.writes))


class MemorySink:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, list[int]]] = []
        self.fail = False
        self.fail_after_storing = False
        """Store the events, then fail to answer (a sidecar dying after the binding wrote)."""

    async def deliver(self, device_id: str, events: Sequence[DeviceEvent]) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("sink down")
        self.delivered.append((device_id, [e.seq for e in events]))
        if self.fail_after_storing:
            raise RuntimeError("sink stored, then went down")


def payload(first: int, last: int, encoding: WireEncoding = WireEncoding.JSON, skipped_through: int = 0) -> bytes:
    return encode_payload(batch(first, last, skipped_through).model_dump(), encoding)


def ingest(store: MemoryStore, sink: MemorySink, now: list[float] | None = None) -> EventIngest:
    clock = now or [0.0]
    return EventIngest(store, [sink], gap_timeout=30, clock=lambda: clock[0])  # type: ignore[arg-type]


async def test_ingest_takes_batches_in_order_whatever_the_order_they_come_in() -> None:
    store, sink = MemoryStore(), MemorySink()
    app = ingest(store, sink)
    assert await app.handle("d", payload(4, 6, WireEncoding.CBOR)) is Outcome.RETRY
    assert store.items[cursor_key("d")][0] == {"next_seq": 1, "lost": 0, "gap_since": 0.0}
    assert await app.handle("d", payload(1, 3)) is Outcome.SUCCESS
    assert await app.handle("d", payload(1, 3)) is Outcome.SUCCESS  # a re-send: nothing new
    assert await app.handle("d", payload(4, 6, WireEncoding.CBOR)) is Outcome.SUCCESS
    assert sink.delivered == [("d", [1, 2, 3]), ("d", [4, 5, 6])]
    assert await app.cursor("d") == EventCursor(7)
    assert await app.cursor("other") is None
    # every taken batch (re-sends too) is acknowledged with how far the cloud got; waiting ones not
    assert store.acks == [("d/events/ack", 4), ("d/events/ack", 4), ("d/events/ack", 7)]


async def test_ingest_drops_malformed_batches_and_writes_nothing() -> None:
    store, sink = MemoryStore(), MemorySink()
    app = ingest(store, sink)
    for bad in (b"{not json", b'{"events": []}', b"\xa1\x01\x02", json.dumps([event(1)]).encode()):
        assert await app.handle("d", bad) is Outcome.DROP
    assert store.items == {} and sink.delivered == []


async def test_a_failing_sink_leaves_the_taken_events_pending_for_the_next_delivery() -> None:
    store, sink = MemoryStore(), MemorySink()
    app = ingest(store, sink)
    sink.fail = True
    assert await app.handle("d", payload(1, 2)) is Outcome.RETRY
    assert await app.cursor("d") == EventCursor(3, pending=tuple(batch(1, 2).events))
    assert store.acks == []  # the device keeps them: it sends them again
    sink.fail = False
    assert await app.handle("d", payload(1, 2)) is Outcome.SUCCESS
    assert sink.delivered == [("d", [1, 2])] and await app.cursor("d") == EventCursor(3)
    assert store.acks == [("d/events/ack", 3)]


async def test_a_take_stopped_halfway_is_redone_under_the_same_range_whatever_batch_comes_next() -> None:
    """The sinks stored events 3-5 (taken from a re-sent 1-5) but never answered; the device then
    sends 3-8. Each event must reach the sinks under one range only, or a sink named by range (one
    object per range) holds 3-5 twice."""
    store, sink = MemoryStore(), MemorySink()
    app = ingest(store, sink)
    assert await app.handle("d", payload(1, 2)) is Outcome.SUCCESS
    sink.fail_after_storing = True
    assert await app.handle("d", payload(1, 5)) is Outcome.RETRY
    sink.fail_after_storing = False
    assert await app.handle("d", payload(3, 8)) is Outcome.SUCCESS
    assert sink.delivered == [("d", [1, 2]), ("d", [3, 4, 5]), ("d", [3, 4, 5]), ("d", [6, 7, 8])]
    ranges = {tuple(seqs) for _, seqs in sink.delivered}
    assert sorted(s for seqs in ranges for s in seqs) == list(range(1, 9))
    assert await app.cursor("d") == EventCursor(9)
    assert store.acks == [("d/events/ack", 3), ("d/events/ack", 9)]


async def test_a_lost_cursor_race_is_retried_and_the_retry_de_duplicates() -> None:
    store, sink = MemoryStore(), MemorySink()
    app = ingest(store, sink)
    store.race = EventCursor(3).to_json()  # another replica took the same batch meanwhile
    assert await app.handle("d", payload(1, 2)) is Outcome.RETRY
    assert await app.cursor("d") == EventCursor(3)  # never overwritten
    assert await app.handle("d", payload(1, 2)) is Outcome.SUCCESS
    assert await app.cursor("d") == EventCursor(3)


async def test_concurrent_overlapping_batches_of_one_device_reach_the_sink_once() -> None:
    store, sink = MemoryStore(), MemorySink()
    app = ingest(store, sink)
    outcomes = await asyncio.gather(app.handle("d", payload(1, 2)), app.handle("d", payload(1, 5)))
    assert set(outcomes) == {Outcome.SUCCESS}
    assert sorted(s for _, seqs in sink.delivered for s in seqs) == [1, 2, 3, 4, 5]


async def test_overlapping_batches_on_two_replicas_reach_the_sinks_under_one_range_each() -> None:
    store, sink = MemoryStore(), MemorySink()
    one, two = ingest(store, sink), ingest(store, sink)  # two replicas: no lock in common
    outcomes = await asyncio.gather(one.handle("d", payload(1, 2)), two.handle("d", payload(1, 5)))
    assert sorted(outcomes) == [Outcome.RETRY, Outcome.SUCCESS]  # one write landed, before any sink
    for _ in range(2):  # the loser's redelivery
        await one.handle("d", payload(1, 2))
        await two.handle("d", payload(1, 5))
    ranges = {tuple(seqs) for _, seqs in sink.delivered}  # a range handed over again is the same object
    assert sorted(s for seqs in ranges for s in seqs) == [1, 2, 3, 4, 5]
    assert await one.cursor("d") == EventCursor(6)


async def test_overflow_and_gap_timeout_are_counted_lost() -> None:
    store, sink = MemoryStore(), MemorySink()
    now = [100.0]
    app = ingest(store, sink, now)
    assert await app.handle("d", payload(11, 12, skipped_through=10)) is Outcome.SUCCESS
    assert await app.handle("d", payload(20, 21)) is Outcome.RETRY
    now[0] = 200.0
    assert await app.handle("d", payload(20, 21)) is Outcome.SUCCESS
    assert await app.cursor("d") == EventCursor(22, lost=10 + 7)
    assert sink.delivered == [("d", [11, 12]), ("d", [20, 21])]


async def test_keyed_locks_serialise_one_key_and_forget_idle_keys() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def work(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(work("a", "1"), work("a", "2"), work("b", "3"))
    assert order.index("1-") < order.index("2+")
    assert locks._locks == {}
