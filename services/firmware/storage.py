"""Where the firmware app keeps things, through its sidecar: artifact bytes as chunk objects in an
output binding, artifact records (and the list of ids) in the state store with ETags, and key
material from the secret store."""

from __future__ import annotations

import asyncio
import base64
from collections import OrderedDict

from services.domain.errors import conflict, not_found
from services.domain.json_values import JsonObject
from services.domain.software.artifacts import Artifact, chunk_name
from services.platform.names import ARTIFACT_STORE
from services.platform.sidecar import Sidecar
from services.platform.state import DocumentCollection, Put, StateRepository

INDEX_KEY = "artifacts~index"


def artifact_key(artifact_id: str) -> str:
    return f"artifact~{artifact_id}"


class FirmwareSidecar(Sidecar):
    """The shared sidecar client plus the artifact binding."""

    def __init__(self, grpc_address: str, http_port: int, name_key: str) -> None:
        super().__init__(grpc_address, http_port)
        self._name_key = name_key

    async def put_object(self, name: str, data: bytes) -> None:
        # Base64 on the wire: localstorage decodes base64 whenever it can, so raw bytes that happen
        # to be base64 text would be stored decoded; Blob and S3 decode with `decodeBase64`.
        await self.call(
            "invoke_binding", ARTIFACT_STORE, "create", base64.b64encode(data), binding_metadata={self._name_key: name}
        )

    async def get_object(self, name: str) -> bytes:
        response = await self.call(
            "invoke_binding", ARTIFACT_STORE, "get", b"", binding_metadata={self._name_key: name}
        )
        return bytes(response.data)

    async def delete_object(self, name: str) -> None:
        await self.call("invoke_binding", ARTIFACT_STORE, "delete", b"", binding_metadata={self._name_key: name})


class Keys:
    """Key material, read once from the secret store (never from code or settings)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._values: dict[str, str] = {}

    async def get(self, name: str) -> str:
        if name not in self._values:
            self._values[name] = await self._sidecar.secret(name)
        return self._values[name]

    def forget(self, *names: str) -> None:
        """Read these again next time (after a key rotation in the secret store)."""
        for name in names:
            self._values.pop(name, None)


class Catalog:
    """Artifact records by id, plus an index of ids for listing (a `DocumentCollection`)."""

    def __init__(self, repository: StateRepository) -> None:
        self._items = DocumentCollection(repository, INDEX_KEY, artifact_key)

    async def get(self, artifact_id: str) -> Artifact:
        stored = await self._items.get(artifact_id)
        if stored.value is None:
            raise not_found(f"artifact {artifact_id} does not exist")
        return Artifact.model_validate(stored.value)

    async def create(self, artifact: Artifact) -> None:
        if not await self._items.create(artifact.id, artifact.model_dump(mode="json")):
            raise conflict(f"artifact {artifact.id} already exists")

    async def save(self, artifact: Artifact) -> None:
        """Store the artifact's new record (its upload finished); 404 if it was removed meanwhile."""

        def replace(value: JsonObject | None) -> tuple[Put | None, bool]:
            return (None, False) if value is None else (Put(artifact.model_dump(mode="json")), True)

        if not await self._items.update(artifact.id, replace):
            raise not_found(f"artifact {artifact.id} was removed during its upload")

    async def remove(self, artifact_id: str) -> None:
        await self._items.delete(artifact_id)

    async def all(self) -> list[Artifact]:
        return [Artifact.model_validate(s.value) for s in (await self._items.all()).values()]


class ChunkCache:
    """The last chunks read, shared by concurrent downloads; a chunk being fetched is fetched once
    however many downloads wait for it. Bounded: at most `capacity` chunks in memory."""

    def __init__(self, sidecar: FirmwareSidecar, capacity: int) -> None:
        self._sidecar = sidecar
        self._capacity = capacity
        self._chunks: OrderedDict[str, bytes] = OrderedDict()
        self._loading: dict[str, asyncio.Future[bytes]] = {}

    async def get(self, artifact_id: str, index: int) -> bytes:
        name = chunk_name(artifact_id, index)
        if name in self._chunks:
            self._chunks.move_to_end(name)
            return self._chunks[name]
        loading = self._loading.get(name)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            data = await self._sidecar.get_object(name)
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
                future.exception()  # retrieved: waiters re-raise it, nobody else has to
            raise
        finally:
            self._loading.pop(name, None)
        future.set_result(data)
        if self._capacity > 0:
            self._chunks[name] = data
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)
        return data

    def forget(self, artifact_id: str) -> None:
        prefix = chunk_name(artifact_id, 0).rsplit("/", 1)[0] + "/"
        for name in [n for n in self._chunks if n.startswith(prefix)]:
            del self._chunks[name]
