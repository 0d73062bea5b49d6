"""The firmware app's REST API (`services.contracts.firmware`):

- `POST /v1/artifacts?id=&name=&version=` streams the body in (`Releases.upload`);
- `GET /v1/artifacts[/{id}]`, `GET /v1/artifacts/{id}/metadata`, `DELETE /v1/artifacts/{id}`
  (409 while a configuration that is not aborted refers to it), `GET /v1/keys`;
- downloads (`GET /v1/artifacts/{id}/download`) only for the device the artifact is meant for,
  with HTTP Range (`Downloads`); minting URLs and temporary credentials.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from services.clients.twin_store import TwinStoreClient
from services.contracts.firmware import (
    ArtifactList,
    ArtifactView,
    DownloadProgressList,
    MintedCredential,
    MintedUrl,
    SigningKeys,
    UrlRequest,
)
from services.contracts.topics import valid_id
from services.domain.errors import ErrorCode, TwinError, bad_request, forbidden, too_large
from services.domain.software.artifacts import Artifact, ArtifactStatus, check_artifact_id, parse_version
from services.domain.software.grants import Grant, mint_credential
from services.domain.software.metadata import public_key_hex
from services.domain.software.ranges import ByteRange, parse_range
from services.domain.software.twin_key import desired_artifact, download_url
from services.firmware.downloads import Downloads
from services.firmware.metrics import DOWNLOADS
from services.firmware.releases import Releases
from services.firmware.settings import FirmwareSettings
from services.firmware.storage import Keys
from services.platform.http import provided
from services.platform.names import DOWNLOAD_URL_KEY

artifacts = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
downloads_router = APIRouter(prefix="/v1/artifacts/{artifact_id}", tags=["downloads"])
keys_router = APIRouter(tags=["artifacts"])
ReleasesDep = Annotated[Releases, provided(Releases)]
DownloadsDep = Annotated[Downloads, provided(Downloads)]
KeysDep = Annotated[Keys, provided(Keys)]
Twins = Annotated[TwinStoreClient, provided(TwinStoreClient)]
Settings = Annotated[FirmwareSettings, provided(FirmwareSettings)]


def view(artifact: Artifact) -> ArtifactView:
    return ArtifactView(
        id=artifact.id,
        name=artifact.name,
        version=artifact.version,
        length=artifact.length,
        sha256=artifact.sha256,
        status=artifact.status.value,
        created=artifact.created,
        custom=artifact.custom,
        expires=(artifact.metadata or {}).get("signed", {}).get("expires"),
    )


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


@artifacts.post("", status_code=201, response_model=ArtifactView)
async def upload(
    request: Request,
    releases: ReleasesDep,
    settings: Settings,
    name: Annotated[str, Query(min_length=1, max_length=128)],
    version: str,
    id: Annotated[str | None, Query(description="defaults to `{name}-{version}`")] = None,
    expires_in: Annotated[int | None, Query(ge=1, description="seconds the signed metadata is valid")] = None,
    custom: Annotated[str | None, Query(description="JSON object handed to installers (e.g. an image)")] = None,
    sha256: Annotated[str | None, Query(description="expected SHA-256; a mismatch is a 400")] = None,
) -> ArtifactView:
    """Stream an artifact in (the raw request body), chunk by chunk; nothing is kept of a failed
    upload."""
    parse_version(version)
    artifact_id = check_artifact_id(id if id is not None else f"{name}-{version}".lower())
    extra = _custom(custom)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.firmware_max_artifact_bytes:
        raise too_large(f"artifact of {declared} bytes exceeds {settings.firmware_max_artifact_bytes}")
    artifact = Artifact(
        id=artifact_id,
        name=name,
        version=version,
        chunk_size=settings.firmware_chunk_size,
        created=time.time(),
        custom=extra,
    )
    return view(await releases.upload(artifact, request.stream(), expires_in, sha256))


@artifacts.get("", response_model=ArtifactList)
async def list_artifacts(releases: ReleasesDep) -> ArtifactList:
    items = sorted(await releases.catalog.all(), key=lambda a: a.created)
    return ArtifactList(items=[view(a) for a in items])


async def _ready(releases: Releases, artifact_id: str) -> Artifact:
    artifact = await releases.catalog.get(check_artifact_id(artifact_id))
    if artifact.status is not ArtifactStatus.READY:
        raise TwinError(ErrorCode.NOT_FOUND, f"artifact {artifact_id} is still being uploaded")
    return artifact


@artifacts.get("/{artifact_id}", response_model=ArtifactView)
async def get_artifact(releases: ReleasesDep, artifact_id: str) -> ArtifactView:
    return view(await releases.catalog.get(check_artifact_id(artifact_id)))


@artifacts.get("/{artifact_id}/metadata")
async def metadata(releases: ReleasesDep, artifact_id: str) -> dict[str, Any]:
    """The release's signed targets metadata (what a device verifies before installing)."""
    return dict((await _ready(releases, artifact_id)).metadata or {})


@artifacts.delete("/{artifact_id}", status_code=204)
async def delete_artifact(releases: ReleasesDep, artifact_id: str) -> Response:
    """Remove an artifact; 409 while a configuration that is not aborted refers to it."""
    await releases.delete(check_artifact_id(artifact_id))
    return Response(status_code=204)


@keys_router.get("/v1/keys", response_model=SigningKeys)
async def signing_keys(releases: ReleasesDep) -> SigningKeys:
    """The public key that signs metadata, for provisioning devices (a device must be given it out
    of band, never trust what it fetches here)."""
    return SigningKeys(keys=[public_key_hex(await releases.signing_public_key())])


@downloads_router.post("/urls", response_model=MintedUrl)
async def presigned_url(
    request: Request, releases: ReleasesDep, keys: KeysDep, settings: Settings, artifact_id: str, body: UrlRequest
) -> MintedUrl:
    """Mint a pre-signed URL for one device (optionally bound to its address), as the delta app
    does for every delta with a software reference."""
    artifact = await _ready(releases, artifact_id)
    if not valid_id(body.device_id):
        raise bad_request("deviceId must be 1..128 of letters, digits and _ . : -")
    grant = Grant(body.device_id, artifact.id, int(time.time()) + body.ttl, body.ip)
    base = settings.firmware_public_url or str(request.base_url)
    return MintedUrl(url=download_url(base, (await keys.get(DOWNLOAD_URL_KEY)).encode(), grant), expires=grant.expires)


@downloads_router.post("/credentials", response_model=MintedCredential)
async def credential(
    releases: ReleasesDep,
    downloads: DownloadsDep,
    keys: KeysDep,
    twins: Twins,
    settings: Settings,
    artifact_id: str,
    authorization: Annotated[str | None, Header()] = None,
) -> MintedCredential:
    """A temporary credential for one artifact, for the device that proves who it is with its own
    credentials and whose twin desires the artifact."""
    device_id = await downloads.authenticate(authorization)
    artifact = await _ready(releases, artifact_id)
    twin = await twins.get(device_id)
    desired = twin.desired if twin is not None else {}
    if desired_artifact(desired.get("software")) != artifact.id:
        DOWNLOADS.labels("refused").inc()
        raise forbidden(f"artifact {artifact.id} is not what device {device_id}'s twin desires")
    grant = Grant(device_id, artifact.id, int(time.time()) + settings.firmware_credential_ttl)
    token = mint_credential((await keys.get(DOWNLOAD_URL_KEY)).encode(), grant)
    return MintedCredential(credential=token, expires=grant.expires)


@downloads_router.get("/download")
async def download(
    request: Request,
    releases: ReleasesDep,
    downloads: DownloadsDep,
    artifact_id: str,
    authorization: Annotated[str | None, Header()] = None,
    x_download_credential: Annotated[str | None, Header()] = None,
    range_: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The artifact's bytes (206 for a Range) for the device the URL or credential is for."""
    try:
        client_ip = request.client.host if request.client else None
        grant = await downloads.grant(
            check_artifact_id(artifact_id), request.query_params, client_ip, authorization, x_download_credential
        )
        artifact = await _ready(releases, artifact_id)
        wanted = parse_range(range_, artifact.length)
    except TwinError as error:
        DOWNLOADS.labels(str(int(error.code))).inc()
        raise
    downloads.start(grant.device_id)
    released = False

    def release() -> None:  # once, from the body's end or the response's background task
        nonlocal released
        if not released:
            released = True
            downloads.end(grant.device_id)

    part = wanted or ByteRange(0, artifact.length - 1)
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{artifact.sha256}"', "Content-Length": str(max(part.length, 0))}
    if wanted is not None:
        headers["Content-Range"] = wanted.content_range(artifact.length)
    DOWNLOADS.labels("206" if wanted else "200").inc()
    entry = downloads.track(grant.device_id, artifact, part)

    async def body() -> Any:
        try:
            async for data in downloads.body(artifact, part, entry):
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


@downloads_router.get("/downloads", response_model=DownloadProgressList)
async def download_progress(downloads: DownloadsDep, artifact_id: str) -> DownloadProgressList:
    """The last download of this artifact by each device since the app started: from which byte,
    and how many bytes were sent."""
    return DownloadProgressList(items=downloads.of(artifact_id))
