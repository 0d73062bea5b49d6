"""The one state repository: read → pure step → conditional write → retry on a lost race, never
last-write-wins; bulk updates that land in part; the id index and the item collection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from services.platform.sidecar import Sidecar, SidecarTimeout, Stored, Write, WriteFailed
from services.platform.state import (
    WRITE_ID,
    DocumentCollection,
    IdIndex,
    Put,
    RetryPolicy,
    StateRepository,
    StoreBusy,
)

FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0)


class MemoryStore:
    """The sidecar's state calls: ETags, first-write, bulk writes that may land in part."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[dict[str, Any], str]] = {}
        self.version = 0
        self.writes = 0
        self.interfere: list[tuple[str, dict[str, Any]]] = []
        """Writes another writer lands just before our next write (one per write call)."""
        self.drop_after: int | None = None
        """A bulk write lands this many items, then fails (the store does not roll back)."""
        self.lose_answers = 0
        """Writes that land but whose answer never comes (the caller sees a timeout)."""

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.version += 1
        self.items[key] = (json.loads(json.dumps(value)), str(self.version))

    async def get(self, key: str, store: str = "") -> Stored:
        value, etag = self.items.get(key, (None, None))  # type: ignore[arg-type]
        return Stored(key, value, etag)

    async def get_many(self, keys: Sequence[str], store: str = "") -> dict[str, Stored]:
        return {key: await self.get(key) for key in keys}

    async def write_each(self, writes: Sequence[Write], store: str = "") -> None:
        if self.interfere:
            self.put(*self.interfere.pop(0))
        failed = False
        for index, write in enumerate(writes):
            if self.drop_after is not None and index >= self.drop_after:
                self.drop_after = None
                raise WriteFailed("store went away mid-bulk")
            current = self.items.get(write.key)
            if (current[1] if current else None) != write.etag:
                failed = True
                continue
            self.writes += 1
            self.put(write.key, write.value)
        if failed:
            raise WriteFailed("a write lost its race")
        if self.lose_answers:
            self.lose_answers -= 1
            raise SidecarTimeout("save_bulk_state did not answer")

    async def delete(self, key: str, store: str = "") -> None:
        self.items.pop(key, None)


def repository(store: MemoryStore) -> StateRepository:
    return StateRepository(store, FAST)  # type: ignore[arg-type]


def add(n: int) -> Any:
    def step(value: dict[str, Any] | None) -> tuple[Put | None, int]:
        count = (value or {}).get("n", 0) + n
        return Put({"n": count}), count

    return step


async def test_an_update_that_loses_its_race_is_stepped_again_on_the_fresh_value() -> None:
    store = MemoryStore()
    store.put("k", {"n": 1})
    store.interfere = [("k", {"n": 10})]
    assert await repository(store).update("k", add(1)) == 11
    assert (await repository(store).get("k")).value == {"n": 11}  # the other writer's 10 kept: not last-write-wins


async def test_an_absent_key_is_only_created_never_overwritten() -> None:
    store = MemoryStore()
    store.interfere = [("k", {"n": 5})]
    assert await repository(store).update("k", add(1)) == 6
    assert await repository(store).create("k", {"n": 0}) is False
    assert await repository(store).create("fresh", {"n": 0}) is True


async def test_an_update_gives_up_after_the_policy_s_attempts() -> None:
    store = MemoryStore()
    store.put("k", {"n": 1})
    store.interfere = [("k", {"n": i}) for i in range(10)]
    with pytest.raises(StoreBusy, match="4 attempts"):
        await repository(store).update("k", add(1))
    assert store.writes == 0


async def test_a_step_that_asks_for_nothing_writes_nothing_and_a_refusal_propagates() -> None:
    store = MemoryStore()
    store.put("k", {"n": 1})
    assert await repository(store).update("k", lambda value: (None, "same")) == "same"

    def refuse(value: dict[str, Any] | None) -> tuple[Put | None, None]:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await repository(store).update("k", refuse)
    assert store.writes == 0


async def test_a_bulk_update_redoes_only_the_keys_whose_writes_did_not_land() -> None:
    store = MemoryStore()
    for key in "abc":
        store.put(key, {"n": 0})
    store.drop_after = 1  # "a" lands, then the store fails: "b" and "c" did not
    seen: list[list[str]] = []

    async def step(stored: Mapping[str, Stored]) -> dict[str, Put]:
        seen.append(sorted(stored))
        return {key: Put({"n": (s.value or {})["n"] + 1}) for key, s in stored.items()}

    await repository(store).update_many(["a", "b", "c"], step)
    assert seen == [["a", "b", "c"], ["b", "c"]]
    assert all(value["n"] == 1 and WRITE_ID in value for value, _ in store.items.values())  # each once
    got = await repository(store).get_many(["a", "b", "c"])
    assert all(s.value == {"n": 1} for s in got.values())  # the write stamp never reaches a reader


async def test_a_bulk_update_with_nothing_to_write_is_one_read() -> None:
    store = MemoryStore()

    async def nothing(stored: Mapping[str, Stored]) -> dict[str, Put]:
        return {}

    await repository(store).update_many(["a"], nothing)
    assert store.writes == 0


async def test_the_id_index_stays_sorted_and_edits_are_idempotent() -> None:
    store = MemoryStore()
    index = IdIndex(repository(store), "ids")
    for item in ("b", "a", "c", "a"):
        await index.add(item)
    await index.remove("c")
    await index.remove("zz")
    assert await index.ids() == ["a", "b"]
    assert store.writes == 4  # no write for the repeated add or the unknown remove


async def test_a_collection_lists_only_items_that_exist() -> None:
    store = MemoryStore()
    items = DocumentCollection(repository(store), "index", lambda i: f"item~{i}")
    assert await items.create("x", {"v": 1}) and await items.create("y", {"v": 2})
    assert not await items.create("x", {"v": 9})
    del store.items["item~y"]  # a crash between an item's removal and its index entry's
    assert {k: s.value for k, s in (await items.all()).items()} == {"x": {"v": 1}}
    await items.delete("x")
    assert await items.index.ids() == ["y"] and (await items.get("x")).value is None


async def test_a_write_whose_answer_was_lost_but_landed_is_not_applied_again() -> None:
    store = MemoryStore()
    store.put("k", {"n": 1})
    store.lose_answers = 1
    assert await repository(store).update("k", add(1)) == 2
    assert (await repository(store).get("k")).value == {"n": 2} and store.writes == 1


async def test_a_sidecar_call_that_never_answers_times_out() -> None:
    """A read goes to daprd's HTTP API: a sidecar that takes the request and never answers it."""

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.Event().wait()

    class Client:
        async def close(self) -> None:
            pass

    server = await asyncio.start_server(stuck, "127.0.0.1", 0)
    sidecar = Sidecar("127.0.0.1:1", server.sockets[0].getsockname()[1], call_timeout=0.05)
    sidecar._client_ready = asyncio.get_running_loop().create_future()
    sidecar._client_ready.set_result(Client())  # type: ignore[arg-type]
    try:
        with pytest.raises(SidecarTimeout, match="get_bulk_state"):
            await sidecar.get("k")
    finally:
        await sidecar.close()
        server.close()
