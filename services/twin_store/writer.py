"""The twin-store's write path: commands are applied in micro-batches with one bulk read and one
bulk write, each twin conditional on the ETag it was read with (`StateRepository.update_many`);
then replies and events. The listing is kept around those writes (`TwinListing`: listed before a
twin is created, unlisted after it is deleted).

Commands on a twin whose write lost a race are re-applied on a fresh read (never last-write-wins);
the others stand. Replies and events are published only after the write, so a crash in between is
repaired by redelivery: the clientToken replay path answers again without applying twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from services.contracts.events import DELTA_REQUESTED_TOPIC, TWIN_CHANGED_TOPIC, DeltaRequested, TwinChanged
from services.contracts.topics import TopicProfile
from services.domain.twin.commands import Command, Context, Effects, apply_command
from services.domain.twin.document import TwinDocument
from services.domain.twin.limits import Limits
from services.domain.twin.ratelimit import TokenBucket
from services.platform import tracing
from services.platform.device_broker import DevicePublisher, publish_in_chunks
from services.platform.sidecar import Sidecar, Stored
from services.platform.state import Put, StateRepository
from services.twin_store.listing import TwinListing
from services.twin_store.metrics import ACCEPT_SECONDS, BATCH_SIZE, COMMANDS, CONFLICT_RETRIES, REJECTS

log = structlog.get_logger()
MAX_PUBLISHING_BATCHES = 4
"""Batches whose replies may be in flight while later batches are written (backpressure)."""


@dataclass(slots=True)
class _Pending:
    command: Command
    done: asyncio.Future[Effects]
    queued_at: float = 0.0
    trace: str | None = None
    """The submitter's span (`traceparent`), carried on in the events the command causes."""


class TwinWriter:
    """Serialises commands into batches; `submit` returns once the command's effects are durable
    and published."""

    def __init__(
        self,
        state: StateRepository,
        sidecar: Sidecar,
        devices: DevicePublisher,
        profile: TopicProfile,
        limits: Limits,
        batch_max: int,
        batch_wait_ms: float,
        publish_concurrency: int,
    ) -> None:
        self._sidecar = sidecar
        self._devices = devices
        self._state = state
        self._listing = TwinListing(self._state)
        self._profile = profile
        self._limits = limits
        self._batch_max = batch_max
        self._batch_wait = batch_wait_ms / 1000
        self._publish_chunk = publish_concurrency
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._buckets: dict[str, TokenBucket] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="twin-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, command: Command) -> Effects:
        done: asyncio.Future[Effects] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(command, done, time.monotonic(), tracing.traceparent()))
        return await done

    async def _run(self) -> None:
        publishing: set[asyncio.Task[None]] = set()
        while True:
            batch = [await self._queue.get()]
            # Waiting to fill a batch pays only under load: an idle writer (nothing still being
            # published) writes what is queued at once, so a lone request does not wait for company.
            deadline = time.monotonic() + (self._batch_wait if publishing else 0.0)
            while len(batch) < self._batch_max:
                # What is queued is taken at once (`wait_for` with no time left gives up on a
                # non-empty queue on Python 3.11: batches then held only what came within the wait).
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            # Writes run one batch after another (later commands see earlier writes); a batch's
            # replies and events are published while the next batch is read and written.
            effects = await self._write_batch(batch)
            if effects is None:
                continue
            while len(publishing) >= MAX_PUBLISHING_BATCHES:
                await asyncio.wait(publishing, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._publish_batch(batch, effects))
            publishing.add(task)
            task.add_done_callback(publishing.discard)

    async def _write_batch(self, batch: list[_Pending]) -> list[Effects] | None:
        BATCH_SIZE.observe(len(batch))
        try:
            return await self._write(batch)
        except Exception as error:  # noqa: BLE001 - every waiter must hear about the failure
            _fail(batch, error)
            return None

    async def _publish_batch(self, batch: list[_Pending], effects: list[Effects]) -> None:
        try:
            await self._publish(effects, [pending.trace for pending in batch])
        except Exception as error:  # noqa: BLE001 - the waiters' messages are redelivered
            _fail(batch, error)
            return
        now = time.monotonic()
        for pending, effect in zip(batch, effects, strict=True):
            COMMANDS.labels(type(pending.command).__name__, "error" if effect.error else "ok").inc()
            ACCEPT_SECONDS.observe(now - pending.queued_at)
            if effect.error is not None:
                REJECTS.labels(str(int(effect.error.code))).inc()
            if not pending.done.done():
                pending.done.set_result(effect)

    async def _write(self, batch: Sequence[_Pending]) -> list[Effects]:
        """Apply the batch and make it durable: the commands of each twin are applied to the twin
        as read, and again on a fresh read if its write lost a race."""
        commands = [pending.command for pending in batch]
        effects: list[Effects | None] = [None] * len(batch)
        by_key: dict[str, list[int]] = {}
        for index, command in enumerate(commands):
            by_key.setdefault(command.address.key, []).append(index)
        buckets: dict[str, TokenBucket] = {}
        deleted: set[str] = set()
        attempts = 0

        async def step(stored: Mapping[str, Stored]) -> dict[str, Put]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                CONFLICT_RETRIES.inc()
            before = {key: _document(s) for key, s in stored.items()}
            docs = dict(before)
            # Only these twins' buckets are copied: they are committed once their writes landed.
            ctx = Context(
                self._profile, self._limits, time.time(), {k: self._buckets[k] for k in stored if k in self._buckets}
            )
            for key in stored:
                for index in by_key[key]:
                    effects[index] = apply_command(docs, commands[index], ctx)
            buckets.update(ctx.buckets)
            changed = {k: d for k, d in docs.items() if d is not None and d is not before[k]}
            flips = _existence_flips(before, changed)
            deleted.difference_update(stored)
            deleted.update(k for k, present in flips.items() if not present)
            await self._listing.add([k for k, present in flips.items() if present])
            return {k: Put(d.model_dump(mode="json")) for k, d in changed.items()}

        await self._state.update_many(list(by_key), step)
        await self._listing.remove(sorted(deleted))
        self._buckets.update(buckets)
        return [e for e in effects if e is not None]

    async def _publish(self, effects: Sequence[Effects], traces: Sequence[str | None]) -> None:
        """Device replies (each in its request's encoding) and both event bulks go out concurrently;
        raises if any failed. `twin.changed` carries the trace of the request that caused it."""
        replies = [reply for e in effects for reply in e.replies]
        events = [ev for e in effects for ev in e.events]
        changed = [
            (ev.model_copy(update={"traceparent": trace}) if trace else ev).model_dump_json()
            for e, trace in zip(effects, traces, strict=True)
            for ev in e.events
            if isinstance(ev, TwinChanged)
        ]
        requested = [ev.model_dump_json() for ev in events if isinstance(ev, DeltaRequested)]
        await asyncio.gather(
            publish_in_chunks(self._devices, replies, self._publish_chunk),
            self._sidecar.publish_events(TWIN_CHANGED_TOPIC, changed),
            self._sidecar.publish_events(DELTA_REQUESTED_TOPIC, requested),
        )


def _fail(batch: Sequence[_Pending], error: Exception) -> None:
    log.warning("batch failed", size=len(batch), error=str(error))
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(error)


def _existence_flips(before: dict[str, TwinDocument | None], changed: dict[str, TwinDocument]) -> dict[str, bool]:
    """Twins this batch created (True) or deleted (False)."""
    flips = {}
    for key, doc in changed.items():
        old = before.get(key)
        was = old is not None and old.exists
        if was != doc.exists:
            flips[key] = doc.exists
    return flips


def _document(stored: Stored) -> TwinDocument | None:
    return TwinDocument.model_validate(stored.value) if stored.value is not None else None
