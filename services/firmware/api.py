"""The firmware app's REST API (`services.contracts.firmware`). Who calls what (the roles of the
access-control layer):

- release manager: `POST /v1/artifacts?name=&version=&id=&sha256=` (the bytes, streamed in),
  `POST /v1/metadata/targets` (signed targets metadata: the release), `DELETE /v1/artifacts/{id}`;
- root key holders: `POST /v1/metadata/root` (the first root, or a rotation);
- operators (read): `GET /v1/artifacts[/{id}]`, `GET /v1/keys`, `GET /v1/artifacts/{id}/downloads`;
- the delta app and operators: `POST /v1/artifacts/{id}/urls` (a download URL for one device);
- devices (their own credentials): `POST /v1/artifacts/{id}/credentials`,
  `GET /v1/artifacts/{id}/download` (proxied stores only);
- anyone (TUF metadata is public and self-verifying): `GET /v1/metadata/{file}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from tuf.api.metadata import Root, TargetFile, Targets

from services.clients.twin_store import TwinStoreClient
from services.contracts.firmware import (
    ArtifactList,
    ArtifactView,
    DownloadProgressList,
    MintedCredential,
    MintedUrl,
    PublishedRoot,
    PublishedTargets,
    RoleKeys,
    TrustView,
    UrlRequest,
)
from services.contracts.topics import valid_id
from services.domain.errors import TwinError, bad_request, forbidden, not_found, too_large
from services.domain.software.artifacts import Artifact, check_artifact_id, parse_version
from services.domain.software.ranges import ByteRange, parse_range
from services.domain.software.repository import ROLES
from services.domain.software.twin_key import desired_artifact
from services.firmware.downloads import Downloads
from services.firmware.metrics import DOWNLOADS
from services.firmware.releases import Releases, new_artifact
from services.firmware.settings import FirmwareSettings
from services.platform.http import provided

artifacts = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
metadata_router = APIRouter(prefix="/v1/metadata", tags=["releases"])
downloads_router = APIRouter(prefix="/v1/artifacts/{artifact_id}", tags=["downloads"])
keys_router = APIRouter(tags=["releases"])
ReleasesDep = Annotated[Releases, provided(Releases)]
DownloadsDep = Annotated[Downloads, provided(Downloads)]
Twins = Annotated[TwinStoreClient, provided(TwinStoreClient)]
Settings = Annotated[FirmwareSettings, provided(FirmwareSettings)]
ISO = "%Y-%m-%dT%H:%M:%SZ"
METADATA_LIMIT = 8 << 20


def view(artifact: Artifact, targets: Targets | None) -> ArtifactView:
    target: TargetFile | None = None if targets is None else targets.targets.get(artifact.id)
    return ArtifactView(
        id=artifact.id,
        name=artifact.name,
        version=artifact.version,
        length=artifact.length,
        sha256=artifact.sha256,
        status=artifact.status.value,
        created=artifact.created,
        released=target is not None,
        custom=dict(target.custom) if target is not None else {},
        expires=targets.expires.strftime(ISO) if targets is not None and target is not None else None,
    )


async def _body(request: Request) -> bytes:
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > METADATA_LIMIT:
            raise too_large(f"metadata larger than {METADATA_LIMIT} bytes")
    return bytes(data)


@artifacts.post("", status_code=201, response_model=ArtifactView)
async def upload(
    request: Request,
    releases: ReleasesDep,
    settings: Settings,
    name: Annotated[str, Query(min_length=1, max_length=128)],
    version: str,
    id: Annotated[str | None, Query(description="defaults to `{name}-{version}`")] = None,
    sha256: Annotated[str | None, Query(description="expected SHA-256; a mismatch is a 400")] = None,
) -> ArtifactView:
    """Stream an artifact's bytes in (the raw request body); nothing is kept of a failed upload.
    It is released once signed targets metadata listing it is published."""
    parse_version(version)
    artifact_id = check_artifact_id(id if id is not None else f"{name}-{version}".lower())
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.firmware_max_artifact_bytes:
        raise too_large(f"artifact of {declared} bytes exceeds {settings.firmware_max_artifact_bytes}")
    artifact = new_artifact(artifact_id, name, version, settings.firmware_chunk_size)
    return view(await releases.upload(artifact, request.stream(), sha256), None)


@artifacts.get("", response_model=ArtifactList)
async def list_artifacts(releases: ReleasesDep) -> ArtifactList:
    items = sorted(await releases.catalog.all(), key=lambda a: a.created)
    targets = await releases.repository.targets()
    return ArtifactList(items=[view(a, targets) for a in items])


@artifacts.get("/{artifact_id}", response_model=ArtifactView)
async def get_artifact(releases: ReleasesDep, artifact_id: str) -> ArtifactView:
    artifact = await releases.catalog.get(check_artifact_id(artifact_id))
    return view(artifact, await releases.repository.targets())


@artifacts.delete("/{artifact_id}", status_code=204)
async def delete_artifact(releases: ReleasesDep, artifact_id: str) -> Response:
    """Remove an artifact's bytes; 409 while a configuration that is not aborted refers to it or
    the current targets metadata lists it."""
    await releases.delete(check_artifact_id(artifact_id))
    return Response(status_code=204)


@metadata_router.post("/targets", status_code=201, response_model=PublishedTargets)
async def publish_targets(request: Request, releases: ReleasesDep) -> PublishedTargets:
    """Publish the release manager's next targets metadata (TUF JSON): accepted only when it
    verifies against root and lists only stored artifacts, with their exact length and hash."""
    targets = await releases.publish(await _body(request))
    return PublishedTargets(
        version=targets.version, expires=targets.expires.strftime(ISO), targets=sorted(targets.targets)
    )


@metadata_router.post("/root", status_code=201, response_model=PublishedRoot)
async def publish_root(request: Request, releases: ReleasesDep) -> PublishedRoot:
    """Publish the first root, or rotate to the next one (signed by the old root's threshold and
    its own)."""
    root: Root = await releases.rotate(await _body(request))
    return PublishedRoot(version=root.version, expires=root.expires.strftime(ISO))


@metadata_router.get("/{file_name}")
async def metadata_file(releases: ReleasesDep, file_name: str) -> Response:
    """A TUF metadata file by the name a TUF client asks for (`{n}.root.json`, `timestamp.json`,
    `{n}.snapshot.json`, `{n}.targets.json`; also `root.json` and `targets.json`, the newest)."""
    data = await releases.repository.file(file_name)
    return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})


@keys_router.get("/v1/keys", response_model=TrustView)
async def keys(releases: ReleasesDep) -> TrustView:
    """The current root's roles, their key ids and thresholds (provision devices with the root
    itself, out of band: never with what a device fetches here)."""
    root = (await releases.repository.root()).signed
    head = await releases.repository.head()
    return TrustView(
        root_version=root.version,
        root_expires=root.expires.strftime(ISO),
        roles=[RoleKeys(role=r, threshold=root.roles[r].threshold, keyids=list(root.roles[r].keyids)) for r in ROLES],
        targets_version=head.targets if head is not None else 0,
    )


@downloads_router.post("/urls", response_model=MintedUrl)
async def presigned_url(
    request: Request,
    releases: ReleasesDep,
    downloads: DownloadsDep,
    settings: Settings,
    artifact_id: str,
    body: UrlRequest,
) -> MintedUrl:
    """Mint a download URL for one device (optionally bound to its address), as the delta app
    does for every delta with a software reference: the store's own URL, or an HMAC one here."""
    artifact, _ = await releases.released(check_artifact_id(artifact_id))
    if not valid_id(body.device_id):
        raise bad_request("deviceId must be 1..128 of letters, digits and _ . : -")
    if body.ttl > settings.firmware_url_ttl_max:
        raise bad_request(f"ttl must be at most {settings.firmware_url_ttl_max} seconds")
    return await downloads.url(artifact, body.device_id, body.ttl, body.ip, str(request.base_url))


@downloads_router.post("/credentials", response_model=MintedCredential)
async def credential(
    request: Request,
    releases: ReleasesDep,
    downloads: DownloadsDep,
    twins: Twins,
    settings: Settings,
    artifact_id: str,
    authorization: Annotated[str | None, Header()] = None,
) -> MintedCredential:
    """A temporary credential for one artifact, for the device that proves who it is with its own
    credentials and whose twin desires the artifact."""
    device_id = await downloads.authenticate(authorization)
    artifact, _ = await releases.released(check_artifact_id(artifact_id))
    twin = await twins.get(device_id)
    desired = twin.desired if twin is not None else {}
    if desired_artifact(desired.get("software")) != artifact.id:
        DOWNLOADS.labels("refused").inc()
        raise forbidden(f"artifact {artifact.id} is not what device {device_id}'s twin desires")
    ip = request.client.host if settings.firmware_credential_bind_ip and request.client else None
    return await downloads.credential(artifact, device_id, settings.firmware_credential_ttl, ip)


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
    """The artifact's bytes (206 for a Range) for the device the URL or credential is for
    (stores that cannot pre-sign; with an object store devices download from it directly)."""
    try:
        if downloads.store.presigns:
            raise not_found("downloads come straight from the object store: use the URL in the delta")
        client_ip = request.client.host if request.client else None
        grant = await downloads.grant(
            check_artifact_id(artifact_id), request.query_params, client_ip, authorization, x_download_credential
        )
        artifact, _ = await releases.released(artifact_id)
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
    """The last proxied download of this artifact by each device since the app started: from
    which byte, and how many bytes were sent."""
    return DownloadProgressList(items=downloads.of(artifact_id))
