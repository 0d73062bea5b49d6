"""The twin-store's write path: commands are applied in micro-batches with one bulk read, one
conditional transactional write (twins and their listing index together), then replies and events.

A batch that loses an ETag race is re-read and re-applied (never last-write-wins). Replies and
events are published only after the write, so a crash in between is repaired by redelivery: the
clientToken replay path answers again without applying twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from services.contracts.events import DELTA_REQUESTED_TOPIC, TWIN_CHANGED_TOPIC, DeltaRequested
from services.contracts.topics import TopicProfile
from services.domain.twin.commands import Command, Context, Effects, apply_command
from services.domain.twin.document import TwinDocument
from services.domain.twin.index import shard_key, shard_of, with_member
from services.domain.twin.limits import Limits
from services.domain.twin.ratelimit import TokenBucket
from services.platform.sidecar import Sidecar, Stored, Write, WriteFailed, gather_bounded
from services.twin_store.metrics import BATCH_SIZE, COMMANDS, CONFLICT_RETRIES

log = structlog.get_logger()
MAX_ATTEMPTS = 8
MAX_PUBLISHING_BATCHES = 4
"""Batches whose replies may be in flight while later batches are written (backpressure)."""


@dataclass(slots=True)
class _Pending:
    command: Command
    done: asyncio.Future[Effects]


class TwinWriter:
    """Serialises commands into batches; `submit` returns once the command's effects are durable
    and published."""

    def __init__(
        self,
        sidecar: Sidecar,
        profile: TopicProfile,
        limits: Limits,
        batch_max: int,
        batch_wait_ms: float,
        publish_concurrency: int,
    ) -> None:
        self._sidecar = sidecar
        self._profile = profile
        self._limits = limits
        self._batch_max = batch_max
        self._batch_wait = batch_wait_ms / 1000
        self._publish_limit = asyncio.Semaphore(publish_concurrency)
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
        await self._queue.put(_Pending(command, done))
        return await done

    async def _run(self) -> None:
        publishing: set[asyncio.Task[None]] = set()
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self._batch_wait
            while len(batch) < self._batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(remaining, 0)))
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
            await self._publish(effects)
        except Exception as error:  # noqa: BLE001 - the waiters' messages are redelivered
            _fail(batch, error)
            return
        for pending, effect in zip(batch, effects, strict=True):
            COMMANDS.labels(type(pending.command).__name__, "error" if effect.error else "ok").inc()
            if not pending.done.done():
                pending.done.set_result(effect)

    async def _write(self, batch: Sequence[_Pending]) -> list[Effects]:
        """Apply the batch and make it durable. Each twin is written conditionally on the ETag it
        was read with; commands on twins whose write lost a race are re-applied on a fresh read,
        the others stand (their writes landed, and are recognised by this attempt's write id)."""
        done: list[Effects | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        for attempt in range(MAX_ATTEMPTS):
            commands = [batch[i].command for i in pending]
            keys = list(dict.fromkeys(c.address.key for c in commands))
            stored = await self._sidecar.get_many(keys)
            before = {k: _document(s) for k, s in stored.items()}
            docs = dict(before)
            # Only this batch's buckets are copied: they are committed for the commands that land.
            buckets = {k: self._buckets[k] for k in keys if k in self._buckets}
            ctx = Context(self._profile, self._limits, time.time(), buckets)
            effects = [apply_command(docs, c, ctx) for c in commands]
            write_id = uuid.uuid4().hex
            changed = {
                k: d.model_copy(update={"write_id": write_id})
                for k, d in docs.items()
                if d is not None and d is not before[k]
            }
            flips = _existence_flips(before, changed)
            # Index entries are added before and removed after the twin writes: a crash in between
            # leaves at worst a listed key without a live twin, which listing skips.
            await self._update_index({k: True for k, present in flips.items() if present})
            landed = await self._write_twins(stored, changed, write_id)
            await self._update_index({k: False for k, present in flips.items() if not present and k in landed})
            for index, command, effect in zip(pending, commands, effects, strict=True):
                key = command.address.key
                if key not in changed or key in landed:
                    done[index] = effect
                    if key in ctx.buckets:
                        self._buckets[key] = ctx.buckets[key]
            pending = [i for i in pending if done[i] is None]
            if not pending:
                return [e for e in done if e is not None]
            CONFLICT_RETRIES.inc()
            await asyncio.sleep(0.002 * (attempt + 1))
        raise RuntimeError(f"gave up after {MAX_ATTEMPTS} conflicting writes")

    async def _write_twins(
        self, stored: dict[str, Stored], changed: dict[str, TwinDocument], write_id: str
    ) -> set[str]:
        """Keys whose conditional write landed."""
        writes = [Write(k, d.model_dump(mode="json"), stored[k].etag) for k, d in changed.items()]
        try:
            await self._sidecar.write_each(writes)
            return set(changed)
        except WriteFailed:
            again = await self._sidecar.get_many(list(changed))
            return {k for k, s in again.items() if s.value is not None and s.value.get("write_id") == write_id}

    async def _update_index(self, flips: dict[str, bool]) -> None:
        """Add (True) or remove (False) twin keys in the listing shards, retrying lost races."""
        by_shard: dict[str, dict[str, bool]] = {}
        for key, present in flips.items():
            by_shard.setdefault(shard_key(shard_of(key)), {})[key] = present
        for _ in range(MAX_ATTEMPTS):
            if not by_shard:
                return
            shards = await self._sidecar.get_many(sorted(by_shard))
            write_id = uuid.uuid4().hex
            writes = []
            for skey, members_flips in by_shard.items():
                members: list[str] = (shards[skey].value or {}).get("twins", [])
                for key, present in members_flips.items():
                    members = with_member(members, key, present)
                writes.append(Write(skey, {"twins": members, "write_id": write_id}, shards[skey].etag))
            try:
                await self._sidecar.write_each(writes)
                return
            except WriteFailed:
                again = await self._sidecar.get_many(sorted(by_shard))
                by_shard = {k: f for k, f in by_shard.items() if (again[k].value or {}).get("write_id") != write_id}
        raise RuntimeError("could not update the twin index")

    async def _publish(self, effects: Sequence[Effects]) -> None:
        """Device replies (each in its request's encoding) and both event bulks go out concurrently;
        raises if any failed."""
        replies = [reply for e in effects for reply in e.replies]
        events = [ev for e in effects for ev in e.events]
        changed = [ev.model_dump_json() for ev in events if not isinstance(ev, DeltaRequested)]
        requested = [ev.model_dump_json() for ev in events if isinstance(ev, DeltaRequested)]
        results, *_ = await asyncio.gather(
            gather_bounded(self._publish_limit, [self._sidecar.publish_device(t, p, w) for t, p, w in replies]),
            self._sidecar.publish_events(TWIN_CHANGED_TOPIC, changed),
            self._sidecar.publish_events(DELTA_REQUESTED_TOPIC, requested),
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} device replies not published: {failures[0]}")


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
