"""The events outbox: every event is stored locally first, sent in order in batches, and purged
only once the cloud acknowledged taking its batch (`{id}/events/ack`, after the broker's PUBACK):
a batch lost between the broker and the cloud app (a sidecar dying with it in flight) is sent
again after `ack_timeout`, and the cloud de-duplicates. One batch is in flight at a time, so the
cloud sees them in order. While the cloud is unreachable it holds up to `limit`
events; beyond that the oldest is dropped and counted, and the cloud learns of the gap through the
batch's `skipped_through` (so it does not wait for events that will never come)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, replace

from services.contracts.device_events import DeviceEvent, EventBatch
from services.device_agent.link import AgentSidecar
from services.domain.json_values import JsonObject

META_KEY = "outbox~meta"


def event_key(seq: int) -> str:
    return f"outbox~{seq:012d}"


@dataclass(frozen=True, slots=True)
class OutboxMeta:
    next_seq: int = 1
    """The sequence number the next event gets."""
    head: int = 1
    """The oldest event not yet acknowledged."""
    skipped_through: int = 0
    dropped: int = 0

    @property
    def size(self) -> int:
        return self.next_seq - self.head


def plan_append(meta: OutboxMeta, limit: int) -> tuple[OutboxMeta, int | None]:
    """The outbox after one more event, and the sequence number to drop (oldest) when full."""
    if meta.size < limit:
        return replace(meta, next_seq=meta.next_seq + 1), None
    dropped = meta.head
    return (
        OutboxMeta(meta.next_seq + 1, meta.head + 1, dropped, meta.dropped + 1),
        dropped,
    )


class Outbox:
    def __init__(self, sidecar: AgentSidecar, topic: str, limit: int, batch: int, ack_timeout: float) -> None:
        self.sidecar = sidecar
        self.topic = topic
        self.limit = limit
        self.batch = batch
        self.ack_timeout = ack_timeout
        self._acked = asyncio.Event()
        self.resent_batches = 0
        self.meta = OutboxMeta()
        self._lock = asyncio.Lock()
        self._flushing = asyncio.Lock()
        self.sent_batches = 0

    async def load(self) -> None:
        stored = await self.sidecar.load(META_KEY)
        self.meta = OutboxMeta(**stored) if stored else OutboxMeta()

    async def append(self, type_: str, data: JsonObject, ts: float | None = None) -> int:
        """Store one event durably; returns its sequence number."""
        async with self._lock:
            meta, drop = plan_append(self.meta, self.limit)
            seq = self.meta.next_seq
            event = DeviceEvent(seq=seq, ts=ts if ts is not None else time.time(), type=type_, data=data)
            await self.sidecar.transact(
                {event_key(seq): event.model_dump(), META_KEY: asdict(meta)},
                [event_key(drop)] if drop is not None else [],
            )
            self.meta = meta
            return seq

    async def flush(self) -> int:
        """Send everything pending, in order, one batch at a time; returns how many events the
        cloud acknowledged. Raises `Unreachable` when the broker stops acknowledging (the rest
        stays for the next flush)."""
        acknowledged = 0
        async with self._flushing:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    return acknowledged
                self._acked.clear()
                await self.sidecar.send(self.topic, batch.model_dump())
                self.sent_batches += 1
                if await self._wait_for_ack(batch.last):
                    acknowledged += len(batch.events)
                else:
                    self.resent_batches += 1  # not taken in time: the next round sends it again

    async def _wait_for_ack(self, last: int) -> bool:
        deadline = asyncio.get_running_loop().time() + self.ack_timeout
        while self.meta.head <= last:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._acked.clear()
            if self.meta.head > last:
                break
            try:
                await asyncio.wait_for(self._acked.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def on_ack(self, next_seq: int) -> None:
        """The cloud has taken every event below `next_seq`: purge them."""
        async with self._lock:
            meta = self.meta
            upto = min(next_seq, meta.next_seq)
            if upto <= meta.head:
                return
            done = replace(meta, head=upto)
            await self.sidecar.transact({META_KEY: asdict(done)}, [event_key(s) for s in range(meta.head, upto)])
            self.meta = done
        self._acked.set()

    async def _next_batch(self) -> EventBatch | None:
        while True:
            async with self._lock:
                meta = self.meta
            if meta.size <= 0:
                return None
            seqs = range(meta.head, min(meta.next_seq, meta.head + self.batch))
            stored = await self.sidecar.load_many([event_key(s) for s in seqs])
            events: list[DeviceEvent] = []
            for seq in seqs:  # up to the first hole: an event dropped (outbox full) while we read
                value = stored.get(event_key(seq))
                if value is None:
                    break
                events.append(DeviceEvent.model_validate(value))
            if events:
                return EventBatch(events=events, skipped_through=meta.skipped_through)
