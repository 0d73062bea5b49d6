"""Configurations in the Dapr state store: one document each plus an index of their ids (a
`DocumentCollection`), every write conditional on the ETag it was read with (one rollout replica
writes; ETags keep it honest)."""

from __future__ import annotations

import asyncio

from services.domain.errors import conflict, not_found
from services.domain.rollout.configuration import Configuration
from services.platform.state import DocumentCollection, StateRepository

INDEX_KEY = "rollout~configurations"


def configuration_key(configuration_id: str) -> str:
    return f"rollout~configuration~{configuration_id}"


class ConfigurationStore:
    """The stored configurations, cached: this app is their only writer."""

    def __init__(self, repository: StateRepository) -> None:
        self._documents = DocumentCollection(repository, INDEX_KEY, configuration_key)
        self._items: dict[str, tuple[Configuration, str | None]] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> list[Configuration]:
        for stored in (await self._documents.all()).values():
            assert stored.value is not None
            configuration = Configuration.model_validate(stored.value)
            self._items[configuration.id] = (configuration, stored.etag)
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
            if configuration.id in self._items or not await self._documents.create(
                configuration.id, configuration.model_dump(mode="json")
            ):
                raise conflict(f"configuration {configuration.id} exists; a new version is a new id")
            stored = await self._documents.get(configuration.id)
            self._items[configuration.id] = (configuration, stored.etag)

    async def save(self, configuration: Configuration) -> None:
        """Store a new revision; raises WriteFailed if someone else wrote it meanwhile."""
        async with self._lock:
            _, etag = self._items[configuration.id]
            etag = await self._documents.save(configuration.id, configuration.model_dump(mode="json"), etag)
            self._items[configuration.id] = (configuration, etag)

    async def delete(self, configuration_id: str) -> None:
        async with self._lock:
            self._items.pop(configuration_id, None)
            await self._documents.delete(configuration_id)
