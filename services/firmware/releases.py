"""The firmware app's worker: artifacts in (streamed into chunk objects, one chunk in memory at a
time whatever the size, length and SHA-256 recorded, the release's targets metadata signed with the
key from the secret store) and out (removed with every chunk, refused while a configuration that
is not aborted refers to it). An upload that fails part-way leaves nothing."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog

from services.clients.base import ApiError, Unreachable
from services.clients.rollout import RolloutClient
from services.contracts.rollout import ConfigurationState
from services.domain.errors import ErrorCode, TwinError, bad_request, conflict, too_large
from services.domain.software.artifacts import Artifact, ArtifactStatus, chunk_name
from services.domain.software.metadata import load_private_key, sign, targets_for
from services.domain.software.twin_key import references
from services.firmware.metrics import UPLOADED
from services.firmware.settings import FirmwareSettings
from services.firmware.storage import Catalog, ChunkCache, FirmwareSidecar, Keys
from services.platform.names import METADATA_SIGNING_KEY

log = structlog.get_logger()


class Releases:
    def __init__(
        self,
        sidecar: FirmwareSidecar,
        catalog: Catalog,
        cache: ChunkCache,
        keys: Keys,
        rollout: RolloutClient,
        settings: FirmwareSettings,
    ) -> None:
        self._sidecar = sidecar
        self.catalog = catalog
        self._cache = cache
        self._keys = keys
        self._rollout = rollout
        self._settings = settings

    async def upload(
        self,
        artifact: Artifact,
        body: AsyncIterator[bytes],
        expires_in: int | None = None,
        sha256: str | None = None,
    ) -> Artifact:
        """Store `body` as `artifact`'s chunks, then sign and record the release (409 for an id
        that exists, 413 past the size limit, 400 for a wrong `sha256`; nothing kept on failure)."""
        limit = self._settings.firmware_max_artifact_bytes
        signing_key = load_private_key(await self._keys.get(METADATA_SIGNING_KEY))
        await self.catalog.create(artifact)
        digest = hashlib.sha256()
        length = stored = 0
        buffer = bytearray()
        try:
            async for piece in body:
                length += len(piece)
                if length > limit:
                    raise too_large(f"artifact exceeds {limit} bytes")
                digest.update(piece)
                buffer += piece
                while len(buffer) >= artifact.chunk_size:
                    await self._sidecar.put_object(
                        chunk_name(artifact.id, stored), bytes(buffer[: artifact.chunk_size])
                    )
                    del buffer[: artifact.chunk_size]
                    stored += 1
            if buffer or length == 0:
                await self._sidecar.put_object(chunk_name(artifact.id, stored), bytes(buffer))
                stored += 1
            if sha256 is not None and sha256.lower() != digest.hexdigest():
                raise bad_request(f"body's sha256 is {digest.hexdigest()}, not the {sha256} given")
        except BaseException:
            await self.discard(artifact.id, stored)
            raise
        UPLOADED.inc(length)
        artifact = artifact.model_copy(update={"length": length, "sha256": digest.hexdigest()})
        ttl = expires_in if expires_in is not None else self._settings.firmware_metadata_ttl
        signed = sign(targets_for(artifact, time.time() + ttl), signing_key)
        artifact = artifact.model_copy(update={"status": ArtifactStatus.READY, "metadata": signed})
        await self.catalog.save(artifact)
        log.info("artifact stored", artifact=artifact.id, length=length, sha256=artifact.sha256)
        return artifact

    async def discard(self, artifact_id: str, chunks: int) -> None:
        """Remove an artifact's chunks (and one more: a write cut short may have left part of it)
        and its record; a chunk already gone is no error."""
        for index in range(chunks + 1):
            with contextlib.suppress(Exception):
                await self._sidecar.delete_object(chunk_name(artifact_id, index))
        await self.catalog.remove(artifact_id)
        self._cache.forget(artifact_id)

    async def delete(self, artifact_id: str) -> None:
        """Remove an artifact; 409 while a configuration that is not aborted refers to it."""
        artifact = await self.catalog.get(artifact_id)
        users = await self.referring_configurations(artifact.id)
        if users:
            raise conflict(f"artifact {artifact.id} is referred to by configuration(s) {', '.join(users)}")
        await self.discard(artifact.id, artifact.chunks)

    async def referring_configurations(self, artifact_id: str) -> list[str]:
        try:
            configurations = await self._rollout.configurations()
        except (ApiError, Unreachable) as error:
            raise TwinError(ErrorCode.INTERNAL, f"cannot ask the rollout app who refers to it: {error}") from None
        return [
            c.id
            for c in configurations
            if c.state is not ConfigurationState.ABORTED
            and artifact_id in _referred(c.content, c.rollout.rollback_content)
        ]

    async def signing_public_key(self) -> Any:
        return load_private_key(await self._keys.get(METADATA_SIGNING_KEY)).public_key()


def _referred(*contents: Any) -> set[str]:
    return set().union(*(references(c) for c in contents))
