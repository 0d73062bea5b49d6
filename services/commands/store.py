"""Command records, per-device indexes and due shards in the Dapr state store, each change a
`StateRepository.update` (conditional on the ETag read, retried on a lost race; never
last-write-wins). Final records get a state TTL (`retention` after completion), and so does an
index with nothing pending, so a device's command history disappears from the store on its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from services.domain.commands.due import DUE_SHARDS, DueShard, due_shard, due_shard_key
from services.domain.commands.index import CommandIndex, index_key
from services.domain.commands.record import DeviceCommand, record_key, retention_ttl
from services.domain.json_values import JsonObject
from services.platform.state import Put, StateRepository

_PERSIST = -1
"""`ttlInSeconds: -1` removes a TTL a key had (Dapr's documented value for "keep")."""


def new_token() -> str:
    return uuid.uuid4().hex[:12]


class CommandStore:
    def __init__(
        self,
        repository: StateRepository,
        retention: float,
        max_listed: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._retention = retention
        self._max_listed = max_listed
        self._clock = clock

    # -- records ---------------------------------------------------------------------------------
    async def command(self, device_id: str, command_id: str) -> DeviceCommand | None:
        stored = await self._repository.get(record_key(device_id, command_id))
        return None if stored.value is None else DeviceCommand.from_json(stored.value)

    async def commands(self, device_id: str, command_ids: Sequence[str]) -> dict[str, DeviceCommand | None]:
        keys = {record_key(device_id, cid): cid for cid in command_ids}
        found = await self._repository.get_many(list(keys))
        return {
            cid: None if (value := found[key].value) is None else DeviceCommand.from_json(value)
            for key, cid in keys.items()
        }

    async def create(self, command: DeviceCommand) -> bool:
        """Store a new record; False when one with that id exists already."""
        return await self._repository.create(record_key(command.device_id, command.id), command.to_json())

    async def transition(
        self, device_id: str, command_id: str, step: Callable[[DeviceCommand], DeviceCommand]
    ) -> tuple[DeviceCommand, DeviceCommand] | None:
        """Apply `step` to the stored record and write the outcome conditionally: `(before, after)`,
        or None when there is no such record. Exceptions from `step` (a refused transition)
        propagate."""

        def change(value: JsonObject | None) -> tuple[Put | None, tuple[DeviceCommand, DeviceCommand] | None]:
            if value is None:
                return None, None
            before = DeviceCommand.from_json(value)
            after = step(before)
            if after == before:
                return None, (before, after)
            ttl = retention_ttl(after, self._clock(), self._retention)
            return Put(after.to_json(), ttl), (before, after)

        return await self._repository.update(record_key(device_id, command_id), change)

    # -- per-device index ------------------------------------------------------------------------
    async def index(self, device_id: str) -> CommandIndex:
        return CommandIndex.from_json((await self._repository.get(index_key(device_id))).value)

    async def update_index(self, device_id: str, change: Callable[[CommandIndex], CommandIndex]) -> CommandIndex:
        """Apply `change` (then prune) to the device's index and write it conditionally; an index
        with nothing pending gets the retention TTL (it outlives every record it lists)."""

        def edit(value: JsonObject | None) -> tuple[Put | None, CommandIndex]:
            before = CommandIndex.from_json(value)
            after = change(before).pruned(self._clock(), self._retention, self._max_listed)
            if after == before and value is not None:
                return None, after
            pending = any(e.status.pending for e in after.entries.values())
            return Put(after.to_json(), _PERSIST if pending else max(1, int(self._retention))), after

        return await self._repository.update(index_key(device_id), edit)

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
        found = await self._repository.get_many([due_shard_key(n) for n in range(DUE_SHARDS)])
        return [DueShard.from_json(found[due_shard_key(n)].value) for n in range(DUE_SHARDS)]

    async def _update_shard(self, shard: int, change: Callable[[DueShard], DueShard]) -> None:
        def edit(value: JsonObject | None) -> tuple[Put | None, None]:
            before = DueShard.from_json(value)
            after = change(before)
            return (None if after == before else Put(after.to_json())), None

        await self._repository.update(due_shard_key(shard), edit)
