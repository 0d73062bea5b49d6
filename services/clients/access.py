"""The twin-store's access API as a typed client (`services.contracts.access`): API keys and the
audit trail, for the CLI and the tests."""

from __future__ import annotations

from typing import Any

from services.clients.base import ApiClient
from services.contracts.access import ApiKeyCreated, ApiKeyList, ApiKeyRequest, ApiKeyView, AuditPage


class AccessClient(ApiClient):
    async def create_key(self, request: ApiKeyRequest) -> ApiKeyCreated:
        response = await self.call("POST", "/v1/api-keys", json=request.model_dump(mode="json"))
        return ApiKeyCreated.model_validate(response.json())

    async def keys(self) -> ApiKeyList:
        return ApiKeyList.model_validate((await self.call("GET", "/v1/api-keys")).json())

    async def key(self, key_id: str) -> ApiKeyView:
        return ApiKeyView.model_validate((await self.call("GET", f"/v1/api-keys/{key_id}")).json())

    async def revoke_key(self, key_id: str) -> None:
        await self.call("DELETE", f"/v1/api-keys/{key_id}")

    async def audit(
        self, limit: int = 100, before: str | None = None, actor: str | None = None, outcome: str | None = None
    ) -> AuditPage:
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("before", before), ("actor", actor), ("outcome", outcome)):
            if value is not None:
                params[name] = value
        return AuditPage.model_validate((await self.call("GET", "/v1/audit", params=params)).json())
