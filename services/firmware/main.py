"""firmware: the artifact broker.

- `POST /v1/artifacts?id=&name=&version=` streams the body into chunk objects (one chunk in memory
  at a time, whatever the size), records length and SHA-256, and signs the release's targets
  metadata with the key from the secret store. An upload that fails part-way leaves nothing.
- `GET /v1/artifacts[/{id}]`, `GET /v1/artifacts/{id}/metadata`, `DELETE /v1/artifacts/{id}`
  (409 while a configuration that is not aborted refers to it).
- Downloads (`GET /v1/artifacts/{id}/download`) only for the device the artifact is meant for:
  a pre-signed URL, or a temporary credential plus the device's own credentials; HTTP Range for
  resuming; at most `firmware_downloads_per_device` at once per device. Every refusal happens
  before the first byte.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import structlog
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from services.contracts.topics import valid_id
from services.domain.errors import ErrorCode, TwinError, bad_request, conflict, forbidden, too_large, too_many_requests
from services.domain.software.grants import Grant, check_credential, check_device, check_presigned, mint_credential
from services.domain.software.twin_key import desired_artifact, download_url, references
from services.domain.software.artifacts import (
    Artifact,
    ArtifactStatus,
    check_artifact_id,
    chunk_name,
    parse_version,
)
from services.domain.software.metadata import load_private_key, public_key_hex, sign, targets_for
from services.domain.software.ranges import ByteRange, chunk_spans, parse_range
from services.firmware.settings import FirmwareSettings, get_firmware_settings
from services.firmware.storage import Catalog, ChunkCache, FirmwareSidecar
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import (
    DOWNLOAD_URL_KEY,
    FIRMWARE_APP,
    FLEET_SECRET,
    METADATA_SIGNING_KEY,
    ROLLOUT_APP,
    TWIN_STORE_APP,
)
from services.platform.sidecar import app_url

log = structlog.get_logger()
BYTES_SERVED = Counter("firmware_bytes_served_total", "Artifact bytes sent to devices")
DOWNLOADS = Counter("firmware_downloads_total", "Download requests", ["outcome"])
ACTIVE = Gauge("firmware_downloads_active", "Downloads being served")
PROGRESS_KEPT = 10_000
"""Downloads whose progress is remembered (the oldest are forgotten; devices report their own)."""
UPLOADED = Counter("firmware_bytes_uploaded_total", "Artifact bytes stored")


class Keys:
    """Key material, read once from the secret store (never from code or settings)."""

    def __init__(self, sidecar: FirmwareSidecar) -> None:
        self._sidecar = sidecar
        self._values: dict[str, str] = {}

    async def get(self, name: str) -> str:
        if name not in self._values:
            self._values[name] = await self._sidecar.secret(name)
        return self._values[name]


class Downloads:
    """Downloads in flight per device (the concurrency limit) and how far each has come."""

    def __init__(self, per_device: int) -> None:
        self.per_device = per_device
        self.running: dict[str, int] = {}
        self.progress: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        """The last download per (device, artifact), newest last; bounded to `PROGRESS_KEPT`."""

    def start(self, device_id: str) -> None:
        if self.running.get(device_id, 0) >= self.per_device:
            raise too_many_requests(f"device {device_id} already has {self.per_device} download(s) running")
        self.running[device_id] = self.running.get(device_id, 0) + 1
        ACTIVE.inc()

    def end(self, device_id: str) -> None:
        left = self.running.get(device_id, 1) - 1
        if left:
            self.running[device_id] = left
        else:
            self.running.pop(device_id, None)
        ACTIVE.dec()


def _peer(settings: FirmwareSettings, app: str, direct: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app_url(app, settings.dapr_http_port, direct), timeout=30)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_firmware_settings()
    sidecar = FirmwareSidecar(*settings.sidecar_args(), settings.firmware_name_key)
    async with (
        running_sidecar(FIRMWARE_APP, sidecar),
        _peer(settings, ROLLOUT_APP, settings.rollout_url) as rollout,
        _peer(settings, TWIN_STORE_APP, settings.twin_store_url) as twins,
    ):
        app.state.settings = settings
        app.state.sidecar = sidecar
        app.state.catalog = Catalog(sidecar)
        app.state.cache = ChunkCache(sidecar, settings.firmware_cache_chunks)
        app.state.keys = Keys(sidecar)
        app.state.downloads = Downloads(settings.firmware_downloads_per_device)
        app.state.rollout = rollout
        app.state.twins = twins
        yield


app = FastAPI(title="Twinfleet firmware", version="0.1.0", lifespan=lifespan)
install_common(app)


def view(artifact: Artifact) -> dict[str, Any]:
    return {
        "id": artifact.id,
        "name": artifact.name,
        "version": artifact.version,
        "length": artifact.length,
        "sha256": artifact.sha256,
        "status": artifact.status.value,
        "created": artifact.created,
        "custom": artifact.custom,
        "expires": (artifact.metadata or {}).get("signed", {}).get("expires"),
    }


@app.post("/v1/artifacts", status_code=201, tags=["artifacts"])
async def upload(
    request: Request,
    name: Annotated[str, Query(min_length=1, max_length=128)],
    version: str,
    id: Annotated[str | None, Query(description="defaults to `{name}-{version}`")] = None,
    expires_in: Annotated[int | None, Query(ge=1, description="seconds the signed metadata is valid")] = None,
    custom: Annotated[str | None, Query(description="JSON object handed to installers (e.g. an image)")] = None,
    sha256: Annotated[str | None, Query(description="expected SHA-256; a mismatch is a 400")] = None,
) -> dict[str, Any]:
    """Stream an artifact in (the raw request body), chunk by chunk; nothing is kept of a failed
    upload."""
    settings: FirmwareSettings = request.app.state.settings
    parse_version(version)
    artifact_id = check_artifact_id(id if id is not None else f"{name}-{version}".lower())
    extra = _custom(custom)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.firmware_max_artifact_bytes:
        raise too_large(f"artifact of {declared} bytes exceeds {settings.firmware_max_artifact_bytes}")
    catalog: Catalog = request.app.state.catalog
    sidecar: FirmwareSidecar = request.app.state.sidecar
    artifact = Artifact(
        id=artifact_id,
        name=name,
        version=version,
        chunk_size=settings.firmware_chunk_size,
        created=time.time(),
        custom=extra,
    )
    signing_key = load_private_key(await request.app.state.keys.get(METADATA_SIGNING_KEY))
    await catalog.create(artifact)
    digest = hashlib.sha256()
    length = 0
    stored = 0
    buffer = bytearray()
    try:
        async for piece in request.stream():
            length += len(piece)
            if length > settings.firmware_max_artifact_bytes:
                raise too_large(f"artifact exceeds {settings.firmware_max_artifact_bytes} bytes")
            digest.update(piece)
            buffer += piece
            while len(buffer) >= artifact.chunk_size:
                await sidecar.put_object(chunk_name(artifact_id, stored), bytes(buffer[: artifact.chunk_size]))
                del buffer[: artifact.chunk_size]
                stored += 1
        if buffer or length == 0:
            await sidecar.put_object(chunk_name(artifact_id, stored), bytes(buffer))
            stored += 1
        if sha256 is not None and sha256.lower() != digest.hexdigest():
            raise bad_request(f"body's sha256 is {digest.hexdigest()}, not the {sha256} given")
    except BaseException:
        await _discard(request, artifact_id, stored)
        raise
    UPLOADED.inc(length)
    artifact = artifact.model_copy(update={"length": length, "sha256": digest.hexdigest()})
    ttl = expires_in if expires_in is not None else settings.firmware_metadata_ttl
    signed = sign(targets_for(artifact, time.time() + ttl), signing_key)
    artifact = artifact.model_copy(update={"status": ArtifactStatus.READY, "metadata": signed})
    await catalog.save(artifact)
    log.info("artifact stored", artifact=artifact_id, length=length, sha256=artifact.sha256)
    return view(artifact)


def _custom(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise bad_request("custom must be a JSON object") from None
    if not isinstance(value, dict):
        raise bad_request("custom must be a JSON object")
    return value


async def _discard(request: Request, artifact_id: str, chunks: int) -> None:
    """Remove an artifact's chunks (and one more: a write cut short may have left part of it) and
    its record; a chunk already gone is no error."""
    sidecar: FirmwareSidecar = request.app.state.sidecar
    for index in range(chunks + 1):
        with contextlib.suppress(Exception):
            await sidecar.delete_object(chunk_name(artifact_id, index))
    await request.app.state.catalog.remove(artifact_id)
    request.app.state.cache.forget(artifact_id)


@app.get("/v1/artifacts", tags=["artifacts"])
async def list_artifacts(request: Request) -> dict[str, Any]:
    items = sorted(await request.app.state.catalog.all(), key=lambda a: a.created)
    return {"items": [view(a) for a in items]}


async def _ready(request: Request, artifact_id: str) -> Artifact:
    artifact: Artifact = await request.app.state.catalog.get(check_artifact_id(artifact_id))
    if artifact.status is not ArtifactStatus.READY:
        raise TwinError(ErrorCode.NOT_FOUND, f"artifact {artifact_id} is still being uploaded")
    return artifact


@app.get("/v1/artifacts/{artifact_id}", tags=["artifacts"])
async def get_artifact(request: Request, artifact_id: str) -> dict[str, Any]:
    return view(await request.app.state.catalog.get(check_artifact_id(artifact_id)))


@app.get("/v1/artifacts/{artifact_id}/metadata", tags=["artifacts"])
async def metadata(request: Request, artifact_id: str) -> dict[str, Any]:
    """The release's signed targets metadata (what a device verifies before installing)."""
    return dict((await _ready(request, artifact_id)).metadata or {})


@app.get("/v1/keys", tags=["artifacts"])
async def keys(request: Request) -> dict[str, Any]:
    """The public key that signs metadata, for provisioning devices (a device must be given it out
    of band, never trust what it fetches here)."""
    key = load_private_key(await request.app.state.keys.get(METADATA_SIGNING_KEY)).public_key()
    return {"keys": [public_key_hex(key)]}


@app.delete("/v1/artifacts/{artifact_id}", status_code=204, tags=["artifacts"])
async def delete_artifact(request: Request, artifact_id: str) -> Response:
    """Remove an artifact; 409 while a configuration that is not aborted refers to it."""
    artifact: Artifact = await request.app.state.catalog.get(check_artifact_id(artifact_id))
    users = await _referring_configurations(request, artifact.id)
    if users:
        raise conflict(f"artifact {artifact.id} is referred to by configuration(s) {', '.join(users)}")
    await _discard(request, artifact.id, artifact.chunks)
    return Response(status_code=204)


async def _referring_configurations(request: Request, artifact_id: str) -> list[str]:
    try:
        response = await request.app.state.rollout.get("/v1/configurations")
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise TwinError(ErrorCode.INTERNAL, f"cannot ask the rollout app who refers to it: {error}") from None
    return [
        str(c["id"]) for c in response.json()["items"] if c.get("state") != "aborted" and artifact_id in references(c)
    ]


# -- who may download --------------------------------------------------------------------------
class UrlRequest(BaseModel):
    device_id: str = Field(alias="deviceId")
    ttl: int = Field(default=3600, ge=1, le=30 * 24 * 3600)
    ip: str | None = None


@app.post("/v1/artifacts/{artifact_id}/urls", tags=["downloads"])
async def presigned_url(request: Request, artifact_id: str, body: UrlRequest) -> dict[str, Any]:
    """Mint a pre-signed URL for one device (optionally bound to its address), as the delta app
    does for every delta with a software reference."""
    artifact = await _ready(request, artifact_id)
    if not valid_id(body.device_id):
        raise bad_request("deviceId must be 1..128 of letters, digits and _ . : -")
    grant = Grant(body.device_id, artifact.id, int(time.time()) + body.ttl, body.ip)
    base = request.app.state.settings.firmware_public_url or str(request.base_url)
    url = download_url(base, (await request.app.state.keys.get(DOWNLOAD_URL_KEY)).encode(), grant)
    return {"url": url, "expires": grant.expires}


def _device_login(authorization: str | None) -> tuple[str, str]:
    if not authorization or not authorization.lower().startswith("basic "):
        raise forbidden("device credentials required (HTTP Basic: device id and password)")
    try:
        device_id, password = base64.b64decode(authorization[6:]).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        raise forbidden("malformed device credentials") from None
    return device_id, password


async def _authenticate(request: Request, authorization: str | None) -> str:
    device_id, password = _device_login(authorization)
    check_device(await request.app.state.keys.get(FLEET_SECRET), device_id, password)
    return device_id


@app.post("/v1/artifacts/{artifact_id}/credentials", tags=["downloads"])
async def credential(
    request: Request, artifact_id: str, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """A temporary credential for one artifact, for the device that proves who it is with its own
    credentials and whose twin desires the artifact."""
    device_id = await _authenticate(request, authorization)
    artifact = await _ready(request, artifact_id)
    twin = await request.app.state.twins.get(f"/v1/twins/{device_id}")
    desired = twin.json().get("state", {}).get("desired", {}) if twin.status_code == 200 else {}
    if desired_artifact(desired.get("software")) != artifact.id:
        DOWNLOADS.labels("refused").inc()
        raise forbidden(f"artifact {artifact.id} is not what device {device_id}'s twin desires")
    ttl = request.app.state.settings.firmware_credential_ttl
    grant = Grant(device_id, artifact.id, int(time.time()) + ttl)
    token = mint_credential((await request.app.state.keys.get(DOWNLOAD_URL_KEY)).encode(), grant)
    return {"credential": token, "expires": grant.expires}


async def _grant(request: Request, artifact_id: str, authorization: str | None, credential: str | None) -> Grant:
    key = (await request.app.state.keys.get(DOWNLOAD_URL_KEY)).encode()
    params = dict(request.query_params)
    now = time.time()
    client_ip = request.client.host if request.client else None
    if "signature" in params:
        return check_presigned(key, artifact_id, params, client_ip, now)
    if credential is not None:
        device_id = await _authenticate(request, authorization)
        return check_credential(key, credential, artifact_id, device_id, now)
    raise forbidden("a download needs a pre-signed URL or a temporary credential")


@app.get("/v1/artifacts/{artifact_id}/download", tags=["downloads"])
async def download(
    request: Request,
    artifact_id: str,
    authorization: Annotated[str | None, Header()] = None,
    x_download_credential: Annotated[str | None, Header()] = None,
    range_: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The artifact's bytes (206 for a Range) for the device the URL or credential is for."""
    try:
        grant = await _grant(request, check_artifact_id(artifact_id), authorization, x_download_credential)
        artifact = await _ready(request, artifact_id)
        wanted = parse_range(range_, artifact.length)
    except TwinError as error:
        DOWNLOADS.labels(str(int(error.code))).inc()
        raise
    downloads: Downloads = request.app.state.downloads
    downloads.start(grant.device_id)
    released = False

    def release() -> None:  # once, from the body's end or the response's background task
        nonlocal released
        if not released:
            released = True
            downloads.end(grant.device_id)

    part = wanted or ByteRange(0, artifact.length - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{artifact.sha256}"',
        "Content-Length": str(max(part.length, 0)),
    }
    if wanted is not None:
        headers["Content-Range"] = wanted.content_range(artifact.length)
    DOWNLOADS.labels("206" if wanted else "200").inc()
    progress = downloads.progress
    slot = (grant.device_id, artifact.id)
    entry: dict[str, Any] = {"device": grant.device_id, "artifact": artifact.id, "from": part.start, "sent": 0}
    progress[slot] = entry
    progress.move_to_end(slot)
    while len(progress) > PROGRESS_KEPT:
        progress.popitem(last=False)

    async def body() -> AsyncIterator[bytes]:
        cache: ChunkCache = request.app.state.cache
        try:
            if artifact.length:
                for index, start, stop in chunk_spans(part, artifact.chunk_size):
                    data = (await cache.get(artifact.id, index))[start:stop]
                    BYTES_SERVED.inc(len(data))
                    entry["sent"] += len(data)
                    yield data
        finally:
            release()

    return StreamingResponse(
        body(),
        status_code=206 if wanted else 200,
        headers=headers,
        media_type="application/octet-stream",
        background=BackgroundTask(release),
    )


@app.get("/v1/artifacts/{artifact_id}/downloads", tags=["downloads"])
async def download_progress(request: Request, artifact_id: str) -> dict[str, Any]:
    """The last download of this artifact by each device since the app started: from which byte,
    and how many bytes were sent."""
    items = [p for (_, a), p in request.app.state.downloads.progress.items() if a == artifact_id]
    return {"items": items}
