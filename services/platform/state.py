"""One state repository for every app: read with the ETag → a pure step → a write conditional on
that ETag → on a lost race, a fresh read and the step again, under one retry policy. Never
last-write-wins. Also the one "document per item plus an index of ids" collection.

Writes use first-write concurrency, so a key read as absent is only created, never overwritten.
A bulk write may land in part (stores do not roll back), and a write whose answer never came (a
timeout) may have landed, so updates stamp each write with a write id and, after a failure,
re-read to learn which of their writes landed — a step is never applied twice; the stamp is
stripped again on every read, so no stored model ever sees it.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.domain.json_values import JsonObject
from services.platform.names import STATE_STORE
from services.platform.sidecar import Sidecar, SidecarTimeout, Stored, Write, WriteFailed

R = TypeVar("R")
WRITE_ID = "_writeId"
"""The key updates stamp their writes with (reserved: no stored document may use it)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a conditional write is tried on a fresh read, and how long to wait in between:
    exponential backoff with full jitter, so writers that collided do not collide again in step."""

    attempts: int = 16
    base_delay: float = 0.002
    max_delay: float = 0.2

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2**attempt)))


PROBE_KEY = "readiness~probe"
"""Read (never written) by the readiness check."""
CONFLICTS = RetryPolicy()
"""The one retry policy of every read-modify-write in the suite."""


class StoreBusy(Exception):
    """Every attempt of an update lost its race (or the store kept refusing); the caller retries
    later (a redelivered message, the next round)."""


@dataclass(frozen=True, slots=True)
class Put:
    """What a step wants written under a key (conditional on the ETag it was read with)."""

    value: JsonObject
    ttl_seconds: int | None = None
    """> 0: the store drops the key after that long; -1: removes a TTL; None: leaves it as it is."""


Step = Callable[[JsonObject | None], tuple[Put | None, R]]
"""A pure step: the stored value (None: absent) → what to write (None: nothing) and a result."""
BulkStep = Callable[[Mapping[str, Stored]], Awaitable[Mapping[str, Put]]]
"""A step over several keys: the stored values → the writes (keys left out need none)."""


def _clean(stored: Stored) -> Stored:
    if stored.value is not None and WRITE_ID in stored.value:
        value = dict(stored.value)
        del value[WRITE_ID]
        return Stored(stored.key, value, stored.etag)
    return stored


class StateRepository:
    """The state store as every app uses it (one per process, over its sidecar)."""

    def __init__(self, sidecar: Sidecar, policy: RetryPolicy = CONFLICTS, store: str = STATE_STORE) -> None:
        self.sidecar = sidecar
        self.policy = policy
        self.store = store
        """The Dapr state component (`twin-state`; `twin-auth` for what every app reads alike)."""

    async def ping(self) -> None:
        """Raise unless the store answers a read (readiness)."""
        await self.sidecar.get(PROBE_KEY, self.store)

    async def get(self, key: str) -> Stored:
        return _clean(await self.sidecar.get(key, self.store))

    async def get_many(self, keys: Sequence[str]) -> dict[str, Stored]:
        return {key: _clean(stored) for key, stored in (await self.sidecar.get_many(keys, self.store)).items()}

    async def create(self, key: str, value: JsonObject, ttl_seconds: int | None = None) -> bool:
        """Write `value` under `key` only if the key is absent; False when it exists."""
        try:
            await self.sidecar.write_each([Write(key, value, None, ttl_seconds)], self.store)
        except WriteFailed:
            if (await self.get(key)).value is not None:
                return False
            raise
        return True

    async def write(self, key: str, value: JsonObject, etag: str | None, ttl_seconds: int | None = None) -> None:
        """One conditional write on the ETag the caller read; raises `WriteFailed` on a lost race
        (for callers whose retry is a redelivery, not a loop)."""
        await self.sidecar.write_each([Write(key, value, etag, ttl_seconds)], self.store)

    async def delete(self, key: str) -> None:
        await self.sidecar.delete(key, self.store)

    async def update(self, key: str, step: Step[R]) -> R:
        """Read `key`, run `step`, write what it asks conditionally; on a lost race read and step
        again, at most `policy.attempts` times (then `StoreBusy`). Returns the landed step's result.
        Exceptions from `step` (a refusal) propagate and nothing is written."""
        for attempt in range(self.policy.attempts):
            stored = await self.get(key)
            put, result = step(stored.value)
            if put is None:
                return result
            write_id = uuid.uuid4().hex
            try:
                await self.write(key, {**put.value, WRITE_ID: write_id}, stored.etag, put.ttl_seconds)
            except (WriteFailed, SidecarTimeout):
                if ((await self.sidecar.get(key, self.store)).value or {}).get(WRITE_ID) == write_id:
                    return result  # it landed after all
                await asyncio.sleep(self.policy.delay(attempt))
                continue
            return result
        raise StoreBusy(f"{key}: no write landed in {self.policy.attempts} attempts")

    async def update_many(self, keys: Collection[str], step: BulkStep) -> None:
        """`update` for several keys in one bulk round trip each way: `step` gets every key's
        stored value and returns the writes; keys whose write lost a race are read and stepped
        again (only those: `step` is then called with just them), until none is left."""
        pending = list(dict.fromkeys(keys))
        for attempt in range(self.policy.attempts):
            stored = await self.get_many(pending)
            puts = await step(stored)
            if not puts:
                return
            write_id = uuid.uuid4().hex
            writes = [
                Write(key, {**put.value, WRITE_ID: write_id}, stored[key].etag, put.ttl_seconds)
                for key, put in puts.items()
            ]
            try:
                await self.sidecar.write_each(writes, self.store)
                return
            except (WriteFailed, SidecarTimeout):
                again = await self.sidecar.get_many(list(puts), self.store)
                pending = [k for k in puts if (again[k].value or {}).get(WRITE_ID) != write_id]
            if not pending:
                return
            await asyncio.sleep(self.policy.delay(attempt))
        raise StoreBusy(
            f"{len(pending)} key(s) such as {pending[0]}: no write landed in {self.policy.attempts} attempts"
        )


class IdIndex:
    """A sorted list of ids kept in one document, each edit a repository update."""

    def __init__(self, repository: StateRepository, key: str) -> None:
        self._repository = repository
        self.key = key

    async def ids(self) -> list[str]:
        return list(((await self._repository.get(self.key)).value or {}).get("ids", []))

    async def add(self, item_id: str) -> None:
        await self._repository.update(self.key, lambda value: _edit(value, item_id, present=True))

    async def remove(self, item_id: str) -> None:
        await self._repository.update(self.key, lambda value: _edit(value, item_id, present=False))


def _edit(value: JsonObject | None, item_id: str, *, present: bool) -> tuple[Put | None, None]:
    ids: list[str] = list((value or {}).get("ids", []))
    at = bisect.bisect_left(ids, item_id)
    found = at < len(ids) and ids[at] == item_id
    if found == present:
        return None, None
    if present:
        ids.insert(at, item_id)
    else:
        ids.pop(at)
    return Put({"ids": ids}), None


class DocumentCollection:
    """One document per item plus an index of their ids, for listing. An item is written before
    its index entry and its entry removed before the item, so an index entry never points at
    nothing for long (a crash in between leaves an entry whose item reads as absent, which `all`
    skips)."""

    def __init__(self, repository: StateRepository, index_key: str, item_key: Callable[[str], str]) -> None:
        self.repository = repository
        self.index = IdIndex(repository, index_key)
        self._item_key = item_key

    def key(self, item_id: str) -> str:
        return self._item_key(item_id)

    async def get(self, item_id: str) -> Stored:
        return await self.repository.get(self.key(item_id))

    async def all(self) -> dict[str, Stored]:
        """Every listed item that exists, by id, in id order."""
        ids = await self.index.ids()
        stored = await self.repository.get_many([self.key(i) for i in ids])
        return {i: s for i in ids if (s := stored[self.key(i)]).value is not None}

    async def create(self, item_id: str, value: JsonObject) -> bool:
        """Store a new item and list it; False (nothing written) when one with that id exists."""
        if not await self.repository.create(self.key(item_id), value):
            return False
        await self.index.add(item_id)
        return True

    async def save(self, item_id: str, value: JsonObject, etag: str | None) -> str | None:
        """Replace an item conditionally on the ETag it was read with (`WriteFailed` if someone
        wrote it meanwhile); returns the new ETag."""
        await self.repository.write(self.key(item_id), value, etag)
        return (await self.get(item_id)).etag

    async def update(self, item_id: str, step: Step[R]) -> R:
        return await self.repository.update(self.key(item_id), step)

    async def delete(self, item_id: str) -> None:
        await self.index.remove(item_id)
        await self.repository.delete(self.key(item_id))
