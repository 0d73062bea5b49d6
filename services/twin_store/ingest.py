"""The twin-store's write path: commands are applied in micro-batches with one bulk read, one
conditional transactional write (twins and their listing index together), then replies and events.

A batch that loses an ETag race is re-read and re-applied (never last-write-wins). Replies and
events are published only after the write, so a crash in between is repaired by redelivery: the
clientToken replay path answers again without applying twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from services.domain.document import TwinDocument
from services.domain.events import DELTA_REQUESTED_TOPIC, TWIN_CHANGED_TOPIC, DeltaRequested
from services.domain.limits import Limits
from services.domain.ratelimit import TokenBucket
from services.domain.topics import TopicProfile
from services.domain.twin_index import shard_key, shard_of, with_member
from services.platform.sidecar import ETagMismatch, Sidecar, Stored, Write, gather_bounded
from services.twin_store.commands import Command, Context, Effects, apply_command
from services.twin_store.metrics import BATCH_SIZE, COMMANDS, CONFLICT_RETRIES

log = structlog.get_logger()
MAX_ATTEMPTS = 8


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
            # Batches run one after another: later commands see earlier ones' writes.
            await self._apply_batch(batch)

    async def _apply_batch(self, batch: list[_Pending]) -> None:
        BATCH_SIZE.observe(len(batch))
        try:
            effects = await self._write(batch)
            await self._publish(effects)
        except Exception as error:  # noqa: BLE001 - every waiter must hear about the failure
            log.warning("batch failed", size=len(batch), error=str(error))
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(error)
            return
        for pending, effect in zip(batch, effects, strict=True):
            COMMANDS.labels(type(pending.command).__name__, "error" if effect.error else "ok").inc()
            if not pending.done.done():
                pending.done.set_result(effect)

    async def _write(self, batch: Sequence[_Pending]) -> list[Effects]:
        keys = list(dict.fromkeys(p.command.address.key for p in batch))
        for attempt in range(MAX_ATTEMPTS):
            stored = await self._sidecar.get_many(keys)
            before = {k: _document(s) for k, s in stored.items()}
            docs = dict(before)
            buckets = dict(self._buckets)
            ctx = Context(self._profile, self._limits, time.time(), buckets)
            effects = [apply_command(docs, p.command, ctx) for p in batch]
            writes = [
                Write(k, doc.model_dump(mode="json"), stored[k].etag)
                for k, doc in docs.items()
                if doc is not None and doc is not before[k]
            ]
            writes += await self._index_writes(before, docs)
            try:
                await self._sidecar.write_all(writes)
            except ETagMismatch:
                CONFLICT_RETRIES.inc()
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            self._buckets = buckets
            return effects
        raise RuntimeError(f"gave up after {MAX_ATTEMPTS} conflicting writes")

    async def _index_writes(
        self, before: dict[str, TwinDocument | None], after: dict[str, TwinDocument | None]
    ) -> list[Write]:
        """Listing-index updates for twins this batch created or deleted."""
        flips: dict[str, bool] = {}
        for key, doc in after.items():
            was = before[key] is not None and before[key].exists  # type: ignore[union-attr]
            now = doc is not None and doc.exists
            if was != now:
                flips[key] = now
        if not flips:
            return []
        shard_keys = sorted({shard_key(shard_of(k)) for k in flips})
        shards = await self._sidecar.get_many(shard_keys)
        writes = []
        for skey in shard_keys:
            members: list[str] = (shards[skey].value or {}).get("twins", [])
            for key, present in flips.items():
                if shard_key(shard_of(key)) == skey:
                    members = with_member(members, key, present)
            writes.append(Write(skey, {"twins": members}, shards[skey].etag))
        return writes

    async def _publish(self, effects: Sequence[Effects]) -> None:
        replies = [reply for e in effects for reply in e.replies]
        results = await gather_bounded(self._publish_limit, [self._sidecar.publish_device(t, p) for t, p in replies])
        changed = [ev.model_dump_json() for e in effects for ev in e.events if not isinstance(ev, DeltaRequested)]
        requested = [ev.model_dump_json() for e in effects for ev in e.events if isinstance(ev, DeltaRequested)]
        await self._sidecar.publish_events(TWIN_CHANGED_TOPIC, changed)
        await self._sidecar.publish_events(DELTA_REQUESTED_TOPIC, requested)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} device replies not published: {failures[0]}")


def _document(stored: Stored) -> TwinDocument | None:
    return TwinDocument.model_validate(stored.value) if stored.value is not None else None
