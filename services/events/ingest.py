"""The events app's shell around `accept_batch`: per device, read the cursor, take the batch in
order, write the cursor conditionally on its ETag, then hand the taken events to the sinks.

A taken batch is acknowledged to the device (`{id}/events/ack`), which keeps its events until
then. The cursor is advanced first, holding the events it took as `pending`, and only then are
those events handed to the sinks: a crash in between leaves them in the cursor, and the next
delivery (the device sends again until acknowledged) hands them over again before anything new —
the same events under the same name, which the sinks take once, whatever range the device's
re-sent batch covers. The cursor is never written last-write-wins: a lost race answers RETRY and
the redelivery re-reads and de-duplicates. Batches of one device are taken one at a time here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from enum import StrEnum

import structlog

from services.contracts.device_events import DeviceEvent, EventBatch, EventsAck
from services.contracts.topics import DeviceChannels
from services.contracts.wire import WireEncoding, decode_payload
from services.domain.device.events import Accepted, EventCursor, Waiting, accept_batch, parse_batch
from services.domain.errors import TwinError
from services.events.metrics import BATCHES, CURSOR_CONFLICTS, EVENTS_ACCEPTED, EVENTS_LOST
from services.events.sinks import EventSink
from services.platform.sidecar import Sidecar, WriteFailed
from services.platform.state import StateRepository

log = structlog.get_logger()


class Outcome(StrEnum):
    """What the app answers daprd for one delivered message."""

    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    DROP = "DROP"


def cursor_key(device_id: str) -> str:
    return f"events~{device_id}"


class KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class EventIngest:
    def __init__(
        self,
        sidecar: Sidecar,
        sinks: Sequence[EventSink],
        gap_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sidecar = sidecar
        self._state = StateRepository(sidecar)
        self._sinks = list(sinks)
        self._gap_timeout = gap_timeout
        self._clock = clock
        self._locks = KeyedLocks()

    async def handle(self, device_id: str, payload: bytes) -> Outcome:
        """Take one delivered batch: DROP when malformed, RETRY while an earlier batch is missing
        or anything failed, SUCCESS once its events are in the sinks and the cursor."""
        try:
            document, encoding = decode_payload(payload)
            batch = parse_batch(document)
        except TwinError as error:
            BATCHES.labels("dropped").inc()
            log.warning("malformed event batch dropped", device_id=device_id, error=error.message)
            return Outcome.DROP
        async with self._locks.hold(device_id):
            try:
                outcome, next_seq = await self._take(device_id, batch)
                if outcome is Outcome.SUCCESS:
                    await self._acknowledge(device_id, next_seq, encoding)
                return outcome
            except Exception as error:  # noqa: BLE001 - daprd redelivers; the cursor de-duplicates
                log.warning(
                    "event batch failed", device_id=device_id, first=batch.first, last=batch.last, error=str(error)
                )
                return Outcome.RETRY

    async def _acknowledge(self, device_id: str, next_seq: int, encoding: WireEncoding) -> None:
        """Tell the device how far its events are taken: it purges them only then, so a batch the
        broker acknowledged but that never reached us (a sidecar dying with it in flight) is sent
        again instead of being lost."""
        await self._sidecar.publish_device(
            DeviceChannels(device_id).events_ack, EventsAck(next_seq=next_seq).model_dump(), encoding
        )

    async def cursor(self, device_id: str) -> EventCursor | None:
        """The device's cursor, or None when it never sent a batch."""
        stored = await self._state.get(cursor_key(device_id))
        return EventCursor.from_json(stored.value) if stored.value is not None else None

    async def _take(self, device_id: str, batch: EventBatch) -> tuple[Outcome, int]:
        key = cursor_key(device_id)
        stored = await self._state.get(key)
        cursor = EventCursor.from_json(stored.value)
        where = {"device_id": device_id, "first": batch.first, "last": batch.last}
        base = cursor
        if cursor.pending:  # an earlier take stopped before the sinks answered: finish it first
            await self._hand_over(device_id, cursor.pending)
            log.info("pending events handed over again", pending_first=cursor.pending[0].seq, **where)
            base = cursor.handed_over()
        result = accept_batch(base, batch, self._clock(), self._gap_timeout)
        if isinstance(result, Waiting):
            if result.cursor != cursor:  # the wait starts now: remember since when (best effort)
                with suppress(WriteFailed):
                    await self._state.write(key, result.cursor.to_json(), stored.etag)
            BATCHES.labels("waiting").inc()
            log.info("event batch waits for an earlier one", missing_from=result.missing_from, **where)
            return Outcome.RETRY, cursor.next_seq
        target = result.cursor if _moved(base, result.cursor) else base
        if target != cursor:
            try:
                await self._state.write(key, target.to_json(), stored.etag)
            except WriteFailed:
                CURSOR_CONFLICTS.inc()
                log.info("event cursor changed meanwhile; batch retried", **where)
                return Outcome.RETRY, cursor.next_seq
        if result.fresh:
            await self._hand_over(device_id, result.fresh)
            await self._settle(key, result.cursor)
        _count(base, batch, result)
        if result.fresh:
            log.info(
                "event batch accepted",
                fresh_first=result.fresh[0].seq,
                fresh_last=result.fresh[-1].seq,
                lost=result.cursor.lost - base.lost,
                **where,
            )
        else:
            log.info("duplicate event batch", next_seq=cursor.next_seq, **where)
        return Outcome.SUCCESS, target.next_seq

    async def _hand_over(self, device_id: str, events: Sequence[DeviceEvent]) -> None:
        await asyncio.gather(*(sink.deliver(device_id, events) for sink in self._sinks))

    async def _settle(self, key: str, taken: EventCursor) -> None:
        """The sinks hold `taken.pending`: drop them from the cursor unless it moved meanwhile (a
        cursor left pending only makes the next take hand them over once more)."""
        stored = await self._state.get(key)
        if EventCursor.from_json(stored.value) == taken:
            with suppress(WriteFailed):
                await self._state.write(key, taken.handed_over().to_json(), stored.etag)


def _moved(before: EventCursor, after: EventCursor) -> bool:
    """Whether the cursor advanced. A duplicate batch leaves it (and a running gap wait) alone."""
    return (after.next_seq, after.lost) != (before.next_seq, before.lost)


def _count(before: EventCursor, batch: EventBatch, result: Accepted) -> None:
    BATCHES.labels("accepted" if result.fresh else "duplicate").inc()
    EVENTS_ACCEPTED.inc(len(result.fresh))
    lost = result.cursor.lost - before.lost
    overflow = min(lost, max(0, batch.skipped_through + 1 - before.next_seq))
    if overflow:
        EVENTS_LOST.labels("device_overflow").inc(overflow)
    if lost - overflow:
        EVENTS_LOST.labels("gap_timeout").inc(lost - overflow)
