"""Command records, per-device indexes and due shards in the Dapr state store.

Every write is conditional on the ETag it was read with (first-write concurrency: a key read as
absent is only created), retried on a fresh read when it loses a race; never last-write-wins.
Final records get a state TTL (`retention` after completion), and so does an index with nothing
pending, so a device's command history disappears from the store on its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from services.domain.commands.due import DUE_SHARDS, DueShard, due_shard, due_shard_key
from services.domain.commands.index import CommandIndex, index_key
from services.domain.commands.record import DeviceCommand, record_key, retention_ttl
from services.platform.sidecar import Sidecar, Write, WriteFailed

ATTEMPTS = 16
"""Conditional writes tried per update before giving up (each on a fresh read)."""
_PERSIST = -1
"""`ttlInSeconds: -1` removes a TTL a key had (Dapr's documented value for "keep")."""


class StoreBusy(Exception):
    """An update kept losing ETag races (or the store kept failing); the caller retries later."""


def new_token() -> str:
    return uuid.uuid4().hex[:12]


class CommandStore:
    def __init__(
        self,
        sidecar: Sidecar,
        retention: float,
        max_listed: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sidecar = sidecar
        self._retention = retention
        self._max_listed = max_listed
        self._clock = clock

    # -- records ---------------------------------------------------------------------------------
    async def command(self, device_id: str, command_id: str) -> DeviceCommand | None:
        stored = await self._sidecar.get(record_key(device_id, command_id))
        return None if stored.value is None else DeviceCommand.from_json(stored.value)

    async def commands(self, device_id: str, command_ids: Sequence[str]) -> dict[str, DeviceCommand | None]:
        keys = {record_key(device_id, cid): cid for cid in command_ids}
        found = await self._sidecar.get_many(list(keys))
        return {
            cid: None if (value := found[key].value) is None else DeviceCommand.from_json(value)
            for key, cid in keys.items()
        }

    async def create(self, command: DeviceCommand) -> bool:
        """Store a new record; False when one with that id exists already."""
        key = record_key(command.device_id, command.id)
        try:
            await self._sidecar.write_each([Write(key, command.to_json(), None)])
        except WriteFailed:
            if (await self._sidecar.get(key)).value is not None:
                return False
            raise
        return True

    async def transition(
        self, device_id: str, command_id: str, step: Callable[[DeviceCommand], DeviceCommand]
    ) -> tuple[DeviceCommand, DeviceCommand] | None:
        """Apply `step` to the stored record and write the outcome conditionally (re-reading and
        re-applying on a lost race): `(before, after)`, or None when there is no such record.
        Exceptions from `step` (a refused transition) propagate."""
        key = record_key(device_id, command_id)
        for _ in range(ATTEMPTS):
            stored = await self._sidecar.get(key)
            if stored.value is None:
                return None
            before = DeviceCommand.from_json(stored.value)
            after = step(before)
            if after == before:
                return before, after
            try:
                ttl = retention_ttl(after, self._clock(), self._retention)
                await self._sidecar.write_each([Write(key, after.to_json(), stored.etag, ttl)])
            except WriteFailed:
                continue
            return before, after
        raise StoreBusy(f"command {command_id} of {device_id}: no write landed in {ATTEMPTS} attempts")

    # -- per-device index ------------------------------------------------------------------------
    async def index(self, device_id: str) -> CommandIndex:
        return CommandIndex.from_json((await self._sidecar.get(index_key(device_id))).value)

    async def update_index(self, device_id: str, change: Callable[[CommandIndex], CommandIndex]) -> CommandIndex:
        """Apply `change` (then prune) to the device's index and write it conditionally; an index
        with nothing pending gets the retention TTL (it outlives every record it lists)."""
        key = index_key(device_id)
        for _ in range(ATTEMPTS):
            stored = await self._sidecar.get(key)
            before = CommandIndex.from_json(stored.value)
            now = self._clock()
            after = change(before).pruned(now, self._retention, self._max_listed)
            if after == before and stored.value is not None:
                return after
            pending = any(e.status.pending for e in after.entries.values())
            ttl = _PERSIST if pending else max(1, int(self._retention))
            try:
                await self._sidecar.write_each([Write(key, after.to_json(), stored.etag, ttl)])
            except WriteFailed:
                continue
            return after
        raise StoreBusy(f"command index of {device_id}: no write landed in {ATTEMPTS} attempts")

    # -- due shards ------------------------------------------------------------------------------
    async def schedule(self, device_id: str, at: float) -> None:
        """Make the sweep look at the device by `at` (or earlier, if it already would)."""
        await self._update_shard(due_shard(device_id), lambda shard: shard.scheduled(device_id, at, new_token()))

    async def reschedule(self, device_id: str, seen_token: str, at: float | None) -> None:
        """After a sweep visit: the device's next time (None: drop it), unless rescheduled meanwhile."""
        await self._update_shard(
            due_shard(device_id), lambda shard: shard.rescheduled(device_id, seen_token, at, new_token())
        )

    async def shards(self) -> list[DueShard]:
        found = await self._sidecar.get_many([due_shard_key(n) for n in range(DUE_SHARDS)])
        return [DueShard.from_json(found[due_shard_key(n)].value) for n in range(DUE_SHARDS)]

    async def _update_shard(self, shard: int, change: Callable[[DueShard], DueShard]) -> None:
        key = due_shard_key(shard)
        for _ in range(ATTEMPTS):
            stored = await self._sidecar.get(key)
            before = DueShard.from_json(stored.value)
            after = change(before)
            if after == before:
                return
            try:
                await self._sidecar.write_each([Write(key, after.to_json(), stored.etag)])
            except WriteFailed:
                continue
            return
        raise StoreBusy(f"due shard {shard}: no write landed in {ATTEMPTS} attempts")
