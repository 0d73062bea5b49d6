"""The firmware app's REST API as a typed client (`services.contracts.firmware`): the delta app
mints download URLs with it, the `twin firmware` commands and the tests publish and list releases."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.clients.base import ApiClient, ApiError
from services.contracts.firmware import (
    ArtifactList,
    ArtifactView,
    DownloadProgressList,
    MintedUrl,
    PublishedRoot,
    PublishedTargets,
    TrustView,
    UrlRequest,
)


class FirmwareClient(ApiClient):
    async def upload(
        self,
        body: AsyncIterator[bytes],
        name: str,
        version: str,
        artifact_id: str | None = None,
        sha256: str | None = None,
    ) -> ArtifactView:
        """Stream an artifact's bytes in (not released until targets metadata lists it)."""
        params = {"name": name, "version": version}
        if artifact_id:
            params["id"] = artifact_id
        if sha256:
            params["sha256"] = sha256
        response = await self.call("POST", "/v1/artifacts", params=params, content=body, timeout=None)
        return ArtifactView.model_validate(response.json())

    async def publish_targets(self, metadata: bytes) -> PublishedTargets:
        response = await self.call("POST", "/v1/metadata/targets", content=metadata)
        return PublishedTargets.model_validate(response.json())

    async def publish_root(self, metadata: bytes) -> PublishedRoot:
        response = await self.call("POST", "/v1/metadata/root", content=metadata)
        return PublishedRoot.model_validate(response.json())

    async def metadata(self, file_name: str) -> bytes | None:
        """A TUF metadata file (`root.json`, `targets.json`, `3.root.json`, ...); None when absent."""
        try:
            return (await self.call("GET", f"/v1/metadata/{file_name}")).content
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def artifacts(self) -> list[ArtifactView]:
        return ArtifactList.model_validate((await self.call("GET", "/v1/artifacts")).json()).items

    async def artifact(self, artifact_id: str) -> ArtifactView:
        return ArtifactView.model_validate((await self.call("GET", f"/v1/artifacts/{artifact_id}")).json())

    async def delete(self, artifact_id: str) -> None:
        await self.call("DELETE", f"/v1/artifacts/{artifact_id}")

    async def keys(self) -> TrustView:
        return TrustView.model_validate((await self.call("GET", "/v1/keys")).json())

    async def mint_url(self, artifact_id: str, request: UrlRequest) -> MintedUrl:
        body = request.model_dump(mode="json", exclude_none=True)
        response = await self.call("POST", f"/v1/artifacts/{artifact_id}/urls", json=body)
        return MintedUrl.model_validate(response.json())

    async def downloads(self, artifact_id: str) -> DownloadProgressList:
        """Downloads of an artifact being served now (device, byte range, bytes sent)."""
        return DownloadProgressList.model_validate(
            (await self.call("GET", f"/v1/artifacts/{artifact_id}/downloads")).json()
        )
