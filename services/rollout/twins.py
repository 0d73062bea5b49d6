"""The twin-store as the rollout app sees it, through Dapr service invocation: batch writes (one
call per batch, never one per twin), the fleet page by page, one twin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from services.domain.rollout.twin_plan import TwinWrite
from services.platform.names import TWIN_STORE_APP
from services.platform.sidecar import app_url


@dataclass(frozen=True, slots=True)
class WriteResult:
    device_id: str
    status: int
    version: int | None
    configurations: dict[str, Any] | None
    message: str | None


class TwinStoreError(Exception):
    """The twin-store (or the sidecar in between) did not answer a call; the caller retries."""


class TwinStoreClient:
    def __init__(self, dapr_http_port: int, direct_url: str = "", timeout: float = 60.0) -> None:
        """Through the sidecar (`/v1.0/invoke/twin-store/method/...`), or straight to `direct_url`."""
        self._http = httpx.AsyncClient(base_url=app_url(TWIN_STORE_APP, dapr_http_port, direct_url), timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def write(self, writes: Sequence[TwinWrite]) -> list[WriteResult]:
        items = [
            {
                "deviceId": w.device_id,
                "desired": w.desired or None,
                "configurations": w.configurations or None,
                "ifVersion": w.expected_version,
            }
            for w in writes
        ]
        answer = await self._call("POST", "/v1/twins/batch", json={"items": items})
        return [
            WriteResult(r["deviceId"], r["status"], r.get("version"), r.get("configurations"), r.get("message"))
            for r in answer["results"]
        ]

    async def pages(self, limit: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Every twin, `limit` at a time, with desired, reported, tags and configurations."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"view": "full", "limit": limit}
            if cursor:
                params["cursor"] = cursor
            page = await self._call("GET", "/v1/twins", params=params)
            yield list(page["items"])
            cursor = page.get("next")
            if not cursor:
                return

    async def get(self, device_id: str) -> dict[str, Any] | None:
        try:
            return dict(await self._call("GET", f"/v1/twins/{device_id}"))
        except TwinStoreError as error:
            if "404" in str(error):
                return None
            raise

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise TwinStoreError(f"{method} {path}: {error!r}") from error
        if response.status_code != 200:
            raise TwinStoreError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.json()
