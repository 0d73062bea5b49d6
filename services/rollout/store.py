"""Configurations in the Dapr state store: one document each plus an index of their ids, every
write conditional on the ETag it was read with (one rollout replica writes; ETags keep it honest)."""

from __future__ import annotations

import asyncio

from services.domain.errors import conflict, not_found
from services.domain.rollout.configuration import Configuration
from services.platform.sidecar import Sidecar, Write, WriteFailed

INDEX_KEY = "rollout~configurations"


def configuration_key(configuration_id: str) -> str:
    return f"rollout~configuration~{configuration_id}"


class ConfigurationStore:
    """The stored configurations, cached: this app is their only writer."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._items: dict[str, tuple[Configuration, str | None]] = {}
        self._index_etag: str | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> list[Configuration]:
        index = await self._sidecar.get(INDEX_KEY)
        self._index_etag = index.etag
        ids: list[str] = list((index.value or {}).get("ids", []))
        stored = await self._sidecar.get_many([configuration_key(i) for i in ids])
        for item in stored.values():
            if item.value is not None:
                configuration = Configuration.model_validate(item.value)
                self._items[configuration.id] = (configuration, item.etag)
        return self.all()

    def all(self) -> list[Configuration]:
        return [c for c, _ in self._items.values()]

    def get(self, configuration_id: str) -> Configuration:
        found = self._items.get(configuration_id)
        if found is None:
            raise not_found(f"no configuration {configuration_id}")
        return found[0]

    async def create(self, configuration: Configuration) -> None:
        async with self._lock:
            if configuration.id in self._items:
                raise conflict(f"configuration {configuration.id} exists; a new version is a new id")
            ids = sorted({*self._items, configuration.id})
            try:  # the document first: an index entry never points at nothing
                await self._sidecar.write_each(
                    [Write(configuration_key(configuration.id), configuration.model_dump(mode="json"), None)]
                )
            except WriteFailed:
                raise conflict(f"configuration {configuration.id} exists; a new version is a new id") from None
            await self._write_index(ids)
            stored = await self._sidecar.get(configuration_key(configuration.id))
            self._items[configuration.id] = (configuration, stored.etag)

    async def save(self, configuration: Configuration) -> None:
        """Store a new revision; raises WriteFailed if someone else wrote it meanwhile."""
        async with self._lock:
            _, etag = self._items[configuration.id]
            key = configuration_key(configuration.id)
            await self._sidecar.write_each([Write(key, configuration.model_dump(mode="json"), etag)])
            stored = await self._sidecar.get(key)
            self._items[configuration.id] = (configuration, stored.etag)

    async def delete(self, configuration_id: str) -> None:
        async with self._lock:
            self._items.pop(configuration_id, None)
            await self._write_index(sorted(self._items))
            await self._sidecar.delete(configuration_key(configuration_id))

    async def _write_index(self, ids: list[str]) -> None:
        await self._sidecar.write_each([Write(INDEX_KEY, {"ids": ids}, self._index_etag)])
        self._index_etag = (await self._sidecar.get(INDEX_KEY)).etag
