"""Where artifact bytes live, behind one interface (`ArtifactStore`):

- `ChunkStore`: chunk objects through the Dapr output binding `artifact-store` (local disk, or any
  binding that moves whole objects). It cannot pre-sign, so downloads are proxied by the app;
  uploads write several chunks at once and downloads keep several chunk fetches in flight.
- `AzureBlobStore`: one block blob per artifact through the azure-storage-blob SDK (Azure Blob, or
  Azurite locally): uploads are Put Block + Put Block List, a few blocks in flight, so memory
  stays constant whatever the size; downloads go straight from the store with a SAS the app mints
  (read-only, one blob, short expiry, optional IP range), Range requests and all.
- `S3Store`: one object per artifact through botocore (AWS S3 or any S3-compatible store):
  multipart uploads, presigned GET URLs.

Why not the Dapr binding for the object stores: a binding's `create` carries one payload (base64
in one gRPC message), so a multi-GB artifact cannot be streamed through it, and bindings mint no
SAS for Azure Blob (the S3 binding's `presign` has no IP condition and no way to stream the
upload). What still goes through Dapr: the store's key (secret store), the catalog and the TUF
metadata (state store).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from services.domain.errors import bad_request, too_large
from services.domain.software.artifacts import Artifact, chunk_name
from services.domain.software.ranges import ByteRange, chunk_spans
from services.firmware.settings import FirmwareSettings
from services.firmware.storage import ChunkCache, FirmwareSidecar, Keys
from services.platform.names import ARTIFACT_STORE_KEY

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Written:
    length: int
    sha256: str


class ArtifactStore(Protocol):
    presigns: bool
    """True: devices download straight from the store (`url`); False: through the app (`read`)."""

    async def write(self, artifact: Artifact, body: AsyncIterator[bytes], limit: int) -> Written:
        """Store `body` as `artifact`'s bytes (413 past `limit`); on any failure nothing is kept."""
        ...

    async def delete(self, artifact: Artifact) -> None: ...

    def read(self, artifact: Artifact, part: ByteRange) -> AsyncIterator[bytes]:
        """The bytes of `part` (proxied downloads)."""
        ...

    async def url(self, artifact: Artifact, expires: datetime, ip: str | None) -> str:
        """A read-only URL for this artifact's bytes alone, valid until `expires`, optionally
        only from `ip` (an address or `a-b` range)."""
        ...


async def blocks(body: AsyncIterator[bytes], size: int, limit: int, digest: Any) -> AsyncIterator[tuple[int, bytes]]:
    """`body` cut into blocks of `size` bytes (the last one shorter; one empty block for an empty
    body), each with its index, hashed into `digest` on the way; 413 once past `limit`."""
    buffer = bytearray()
    index = length = 0
    async for piece in body:
        length += len(piece)
        if length > limit:
            raise too_large(f"artifact exceeds {limit} bytes")
        digest.update(piece)
        buffer += piece
        while len(buffer) >= size:
            yield index, bytes(buffer[:size])
            del buffer[:size]
            index += 1
    if buffer or index == 0:
        yield index, bytes(buffer)


async def write_blocks(
    body: AsyncIterator[bytes],
    size: int,
    limit: int,
    in_flight: int,
    put: Callable[[int, bytes], Coroutine[Any, Any, None]],
) -> tuple[Written, int]:
    """Cut `body` into blocks and `put` each, at most `in_flight` at once (memory: that many
    blocks plus one being filled); (what was written, how many blocks)."""
    running: set[asyncio.Task[None]] = set()
    count = length = 0
    digest = hashlib.sha256()
    try:
        async for index, data in blocks(body, size, limit, digest):
            while len(running) >= in_flight:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.create_task(put(index, data)))
            count, length = index + 1, length + len(data)
        for task in running:
            await task
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    return Written(length, digest.hexdigest()), count


class ChunkStore:
    """Chunk objects through the Dapr binding; proxied downloads with chunks fetched ahead."""

    presigns = False

    def __init__(self, sidecar: FirmwareSidecar, cache: ChunkCache, in_flight: int, prefetch: int) -> None:
        self._sidecar = sidecar
        self._cache = cache
        self._in_flight = max(1, in_flight)
        self._prefetch = max(1, prefetch)

    async def write(self, artifact: Artifact, body: AsyncIterator[bytes], limit: int) -> Written:
        stored = 0

        async def put(index: int, data: bytes) -> None:
            nonlocal stored
            stored = max(stored, index + 1)
            await self._sidecar.put_object(chunk_name(artifact.id, index), data)

        try:
            written, _ = await write_blocks(body, artifact.chunk_size, limit, self._in_flight, put)
        except BaseException:
            await self._discard(artifact.id, stored + self._in_flight)
            raise
        return written

    async def _discard(self, artifact_id: str, chunks: int) -> None:
        """Remove chunks 0..chunks (and one more: a write cut short may have left part of it)."""
        for index in range(chunks + 1):
            try:
                await self._sidecar.delete_object(chunk_name(artifact_id, index))
            except Exception:  # noqa: BLE001 - a chunk never written is no error
                continue
        self._cache.forget(artifact_id)

    async def delete(self, artifact: Artifact) -> None:
        await self._discard(artifact.id, artifact.chunks)

    async def read(self, artifact: Artifact, part: ByteRange) -> AsyncIterator[bytes]:
        if not artifact.length:
            return
        spans = chunk_spans(part, artifact.chunk_size)
        ahead: dict[int, asyncio.Task[bytes]] = {}
        try:
            for position, (index, start, stop) in enumerate(spans):
                for later, _, _ in spans[position : position + self._prefetch]:
                    if later not in ahead:
                        ahead[later] = asyncio.create_task(self._cache.get(artifact.id, later))
                yield (await ahead.pop(index))[start:stop]
        finally:
            for task in ahead.values():
                task.cancel()
            await asyncio.gather(*ahead.values(), return_exceptions=True)

    async def url(self, artifact: Artifact, expires: datetime, ip: str | None) -> str:
        raise bad_request("this store cannot pre-sign URLs; downloads go through the firmware app")


def block_id(index: int) -> str:
    return base64.b64encode(f"{index:08d}".encode()).decode()


class AzureBlobStore:
    """One block blob per artifact in `container` (azure-storage-blob, asyncio)."""

    presigns = True

    def __init__(
        self,
        account: str,
        key: str,
        endpoint: str,
        container: str,
        public_url: str,
        block_size: int,
        in_flight: int,
    ) -> None:
        from azure.storage.blob.aio import ContainerClient

        self._account = account
        self._key = key
        self._container = container
        self._public = (public_url or endpoint).rstrip("/")
        self._block_size = block_size
        self._in_flight = max(1, in_flight)
        self._client = ContainerClient(
            endpoint, container, credential={"account_name": account, "account_key": key}, max_single_get_size=4 << 20
        )

    async def open(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self._client.create_container()

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        await self._client.get_container_properties()

    def _blob(self, artifact: Artifact) -> Any:
        return self._client.get_blob_client(blob_name(artifact.id))

    async def write(self, artifact: Artifact, body: AsyncIterator[bytes], limit: int) -> Written:
        from azure.storage.blob import BlobBlock

        blob = self._blob(artifact)

        async def put(index: int, data: bytes) -> None:
            await blob.stage_block(block_id(index), data, length=len(data))

        # Staged blocks that are never committed are dropped by the store (after a week in Azure).
        written, count = await write_blocks(body, self._block_size, limit, self._in_flight, put)
        await blob.commit_block_list([BlobBlock(block_id(i)) for i in range(count)])
        return written

    async def delete(self, artifact: Artifact) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            await self._blob(artifact).delete_blob()

    async def read(self, artifact: Artifact, part: ByteRange) -> AsyncIterator[bytes]:
        stream = await self._blob(artifact).download_blob(offset=part.start, length=part.length)
        async for data in stream.chunks():
            yield data

    async def url(self, artifact: Artifact, expires: datetime, ip: str | None) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        name = blob_name(artifact.id)
        token = generate_blob_sas(
            self._account,
            self._container,
            name,
            account_key=self._key,
            permission=BlobSasPermissions(read=True),
            start=datetime.now(UTC) - timedelta(minutes=5),  # clock skew between app and store
            expiry=expires,
            ip=ip,
        )
        return f"{self._public}/{self._container}/{name}?{token}"


class S3Store:
    """One object per artifact in `bucket` (botocore, in threads): multipart uploads (parts of at
    least 5 MiB, as S3 requires), presigned GET URLs. S3 presigned URLs carry no IP condition:
    `ip` is refused (a bucket policy on `aws:SourceIp` is the S3 way)."""

    presigns = True
    MIN_PART = 5 << 20

    def __init__(
        self, endpoint: str, region: str, bucket: str, access_key: str, secret: str, part_size: int, in_flight: int
    ) -> None:
        import boto3
        from botocore.config import Config

        self._bucket = bucket
        self._part_size = max(part_size, self.MIN_PART)
        self._in_flight = max(1, in_flight)
        self._s3 = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    async def open(self) -> None:
        await asyncio.to_thread(self._s3.head_bucket, Bucket=self._bucket)

    async def close(self) -> None:
        self._s3.close()

    async def ping(self) -> None:
        await self.open()

    async def write(self, artifact: Artifact, body: AsyncIterator[bytes], limit: int) -> Written:
        key = blob_name(artifact.id)
        upload = await asyncio.to_thread(self._s3.create_multipart_upload, Bucket=self._bucket, Key=key)
        upload_id = upload["UploadId"]
        etags: dict[int, str] = {}

        async def put(index: int, data: bytes) -> None:
            answer = await asyncio.to_thread(
                self._s3.upload_part, Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=index + 1, Body=data
            )
            etags[index + 1] = answer["ETag"]

        try:
            written, _ = await write_blocks(body, self._part_size, limit, self._in_flight, put)
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            await asyncio.to_thread(
                self._s3.complete_multipart_upload,
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.to_thread(self._s3.abort_multipart_upload, Bucket=self._bucket, Key=key, UploadId=upload_id)
            raise
        return written

    async def delete(self, artifact: Artifact) -> None:
        await asyncio.to_thread(self._s3.delete_object, Bucket=self._bucket, Key=blob_name(artifact.id))

    async def read(self, artifact: Artifact, part: ByteRange) -> AsyncIterator[bytes]:
        answer = await asyncio.to_thread(
            self._s3.get_object, Bucket=self._bucket, Key=blob_name(artifact.id), Range=f"bytes={part.start}-{part.end}"
        )
        body = answer["Body"]
        while data := await asyncio.to_thread(body.read, 1 << 20):
            yield data

    async def url(self, artifact: Artifact, expires: datetime, ip: str | None) -> str:
        if ip:
            raise bad_request("S3 presigned URLs cannot be bound to an address")
        seconds = max(1, int((expires - datetime.now(UTC)).total_seconds()))
        params = {"Bucket": self._bucket, "Key": blob_name(artifact.id)}
        return str(self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds))


def blob_name(artifact_id: str) -> str:
    return f"artifacts/{artifact_id}.bin"


class ConfiguredStore:
    """The store the settings name, made on first use: the object stores need their key from the
    secret store, which answers only once the sidecar is up (after the app started listening)."""

    def __init__(self, settings: FirmwareSettings, keys: Keys, sidecar: FirmwareSidecar, cache: ChunkCache) -> None:
        if settings.firmware_store not in ("binding", "azure", "s3"):
            raise ValueError(f"TWINFLEET_FIRMWARE_STORE {settings.firmware_store!r}: binding, azure or s3")
        self.presigns = settings.firmware_store != "binding"
        self._settings = settings
        self._keys = keys
        self._sidecar = sidecar
        self._cache = cache
        self._store: ArtifactStore | None = None
        self._opened: AzureBlobStore | S3Store | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> ArtifactStore:
        async with self._lock:
            if self._store is None:
                self._store = await self._make()
            return self._store

    async def _make(self) -> ArtifactStore:
        s = self._settings
        if s.firmware_store == "binding":
            return ChunkStore(self._sidecar, self._cache, s.firmware_write_in_flight, s.firmware_read_ahead)
        secret = await self._keys.get(ARTIFACT_STORE_KEY)
        store: AzureBlobStore | S3Store
        if s.firmware_store == "azure":
            store = AzureBlobStore(
                s.firmware_store_account,
                secret,
                s.firmware_store_endpoint,
                s.firmware_store_container,
                s.firmware_store_public_url,
                s.firmware_block_size,
                s.firmware_write_in_flight,
            )
        else:
            store = S3Store(
                s.firmware_store_endpoint,
                s.firmware_store_region,
                s.firmware_store_container,
                s.firmware_store_account,
                secret,
                s.firmware_block_size,
                s.firmware_write_in_flight,
            )
        await store.open()
        self._opened = store
        return store

    async def close(self) -> None:
        if self._opened is not None:
            await self._opened.close()

    async def write(self, artifact: Artifact, body: AsyncIterator[bytes], limit: int) -> Written:
        return await (await self._get()).write(artifact, body, limit)

    async def delete(self, artifact: Artifact) -> None:
        await (await self._get()).delete(artifact)

    async def read(self, artifact: Artifact, part: ByteRange) -> AsyncIterator[bytes]:
        async for data in (await self._get()).read(artifact, part):
            yield data

    async def url(self, artifact: Artifact, expires: datetime, ip: str | None) -> str:
        return await (await self._get()).url(artifact, expires, ip)
