"""The twin-store's REST API as a typed client (`services.contracts.twins`): used by the rollout
app (batch writes, the fleet page by page), the firmware app (one twin), the CLI and the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from services.clients.base import ApiClient, ApiError, app_url, body
from services.clients.credentials import service_auth
from services.contracts.twins import (
    BatchAnswer,
    BatchBody,
    BatchItem,
    BatchResult,
    DeletedTwin,
    FullTwinSummary,
    TwinPage,
    TwinView,
)
from services.domain.json_values import JsonObject
from services.platform.names import TWIN_STORE_APP
from services.platform.settings import Settings


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}


class TwinStoreClient(ApiClient):
    async def get(self, device_id: str, shadow: str = "") -> TwinView | None:
        """The twin, or None when there is none."""
        try:
            response = await self.call("GET", f"/v1/twins/{device_id}", params={"shadow": shadow} if shadow else None)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return TwinView.model_validate(body(response))

    async def tags(self, device_id: str) -> JsonObject | None:
        """The twin's tags, or None when there is no such twin (or no valid id)."""
        try:
            twin = await self.get(device_id)
        except ApiError as error:
            if error.status == 400:
                return None
            raise
        return twin.tags if twin is not None else None

    async def create(self, device_id: str) -> TwinView:
        return TwinView.model_validate((await self.call("PUT", f"/v1/twins/{device_id}")).json())

    async def patch_desired(self, device_id: str, patch: JsonObject, if_version: int | None = None) -> TwinView:
        response = await self.call("PATCH", f"/v1/twins/{device_id}/desired", json=patch, headers=_if_match(if_version))
        return TwinView.model_validate(response.json())

    async def patch_tags(self, device_id: str, patch: JsonObject, if_version: int | None = None) -> TwinView:
        response = await self.call("PATCH", f"/v1/twins/{device_id}/tags", json=patch, headers=_if_match(if_version))
        return TwinView.model_validate(response.json())

    async def delete(self, device_id: str, if_version: int | None = None) -> DeletedTwin:
        response = await self.call("DELETE", f"/v1/twins/{device_id}", headers=_if_match(if_version))
        return DeletedTwin.model_validate(response.json())

    async def page(self, limit: int = 100, cursor: str | None = None, *, full: bool = False) -> TwinPage:
        params: dict[str, Any] = {"limit": limit, "view": "full" if full else "summary"}
        if cursor:
            params["cursor"] = cursor
        return TwinPage.model_validate((await self.call("GET", "/v1/twins", params=params)).json())

    async def pages(self, limit: int) -> AsyncIterator[list[FullTwinSummary]]:
        """Every twin, `limit` at a time, with desired, reported, tags and configurations."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit, "view": "full", **({"cursor": cursor} if cursor else {})}
            page = body(await self.call("GET", "/v1/twins", params=params))
            yield [FullTwinSummary.model_validate(item) for item in page["items"]]
            cursor = page.get("next")
            if not cursor:
                return

    async def write(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """One batch write (at most 1,000 twins); each item answered on its own, in item order."""
        request = BatchBody(items=list(items)).model_dump(mode="json", exclude_none=True)
        return BatchAnswer.model_validate(body(await self.call("POST", "/v1/twins/batch", json=request))).results


def twin_store_client(settings: Settings, timeout: float = 30.0) -> TwinStoreClient:
    """The twin-store as another app calls it: through the sidecar (or the address the settings
    name in `twin_store_url`), with the app's own identity."""
    url = app_url(TWIN_STORE_APP, settings.dapr_http_port, str(getattr(settings, "twin_store_url", "")))
    return TwinStoreClient(url, timeout=timeout, headers=settings.sidecar_headers(), auth=service_auth(settings))
