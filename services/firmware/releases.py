"""The firmware app's worker: artifact bytes in (streamed into the store in constant memory, length
and SHA-256 recorded; nothing kept of a failed upload), releases published (the release manager's
signed targets metadata, accepted only when it verifies against root and describes stored bytes;
the suite adds snapshot and timestamp), and artifacts out (refused while a configuration that is
not aborted refers to one, or the current targets still lists it)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import structlog
from tuf.api.metadata import Root, TargetFile, Targets

from services.clients.base import ApiError, Unreachable
from services.clients.rollout import RolloutClient
from services.contracts.rollout import ConfigurationState
from services.domain.errors import ErrorCode, TwinError, bad_request, conflict, not_found
from services.domain.software.artifacts import Artifact, ArtifactStatus
from services.domain.software.repository import StoredBytes
from services.domain.software.twin_key import references
from services.firmware.metrics import UPLOADED
from services.firmware.repository import ReleaseRepository
from services.firmware.settings import FirmwareSettings
from services.firmware.storage import Catalog
from services.firmware.stores import ArtifactStore

log = structlog.get_logger()


class Releases:
    def __init__(
        self,
        store: ArtifactStore,
        catalog: Catalog,
        repository: ReleaseRepository,
        rollout: RolloutClient,
        settings: FirmwareSettings,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.repository = repository
        self._rollout = rollout
        self._settings = settings

    async def upload(self, artifact: Artifact, body: AsyncIterator[bytes], sha256: str | None = None) -> Artifact:
        """Store `body` as `artifact`'s bytes, then record them (409 for an id that exists, 413
        past the size limit, 400 for a wrong `sha256`; nothing kept on failure). The artifact is
        not released until signed targets metadata lists it."""
        await self.catalog.create(artifact)
        try:
            written = await self.store.write(artifact, body, self._settings.firmware_max_artifact_bytes)
        except BaseException:  # the store removed what it had written
            await self.catalog.remove(artifact.id)
            raise
        artifact = artifact.model_copy(
            update={"length": written.length, "sha256": written.sha256, "status": ArtifactStatus.READY}
        )
        try:
            if sha256 is not None and sha256.lower() != written.sha256:
                raise bad_request(f"body's sha256 is {written.sha256}, not the {sha256} given")
            await self.catalog.save(artifact)
        except BaseException:
            await self.store.delete(artifact)
            await self.catalog.remove(artifact.id)
            raise
        UPLOADED.inc(written.length)
        log.info("artifact stored", artifact=artifact.id, length=written.length, sha256=written.sha256)
        return artifact

    async def publish(self, targets: bytes) -> Targets:
        """Accept the release manager's next targets metadata (see `ReleaseRepository`)."""
        stored = {
            a.id: StoredBytes(a.length, a.sha256) for a in await self.catalog.all() if a.status is ArtifactStatus.READY
        }
        return await self.repository.publish_targets(targets, stored)

    async def rotate(self, root: bytes) -> Root:
        return await self.repository.publish_root(root)

    async def released(self, artifact_id: str) -> tuple[Artifact, TargetFile]:
        """A stored artifact the current targets metadata lists (404 otherwise)."""
        artifact = await self.catalog.get(artifact_id)
        targets = await self.repository.targets()
        target = None if targets is None else targets.targets.get(artifact.id)
        if artifact.status is not ArtifactStatus.READY or target is None:
            raise not_found(f"artifact {artifact_id} is not released (no signed targets metadata lists it)")
        return artifact, target

    async def delete(self, artifact_id: str) -> None:
        """Remove an artifact; 409 while a configuration that is not aborted refers to it, or the
        current targets metadata lists it."""
        artifact = await self.catalog.get(artifact_id)
        users = await self.referring_configurations(artifact.id)
        if users:
            raise conflict(f"artifact {artifact.id} is referred to by configuration(s) {', '.join(users)}")
        targets = await self.repository.targets()
        if targets is not None and artifact.id in targets.targets:
            raise conflict(
                f"artifact {artifact.id} is a signed target: publish targets metadata without it first "
                "(`twin firmware delete` signs and publishes it)"
            )
        await self.store.delete(artifact)
        await self.catalog.remove(artifact.id)
        log.info("artifact deleted", artifact=artifact.id)

    async def referring_configurations(self, artifact_id: str) -> list[str]:
        try:
            configurations = await self._rollout.configurations()
        except (ApiError, Unreachable) as error:
            raise TwinError(ErrorCode.INTERNAL, f"cannot ask the rollout app who refers to it: {error}") from None
        return [
            c.id
            for c in configurations
            if c.state is not ConfigurationState.ABORTED
            and artifact_id in references([c.content, c.rollout.rollback_content])
        ]


def new_artifact(artifact_id: str, name: str, version: str, chunk_size: int) -> Artifact:
    return Artifact(id=artifact_id, name=name, version=version, chunk_size=chunk_size, created=time.time())
