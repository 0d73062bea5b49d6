"""API keys for pipelines (`/v1/api-keys`, admin): created with roles and an expiry and shown
once; only the SHA-256 of the secret is stored, in the `twin-auth` store every app reads to check
a key (`services.platform.auth.ApiKeyVerifier`); revoking one takes effect on the next call.

The twin-store owns them: it is the suite's front door, where an admin already manages devices,
and it is always deployed; the other apps only read the records."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Response

from services.contracts.access import API_KEY_PREFIX, ApiKeyCreated, ApiKeyList, ApiKeyRecord, ApiKeyRequest, ApiKeyView
from services.domain.access import check_role_names, key_state
from services.domain.errors import bad_request, not_found
from services.domain.json_values import JsonObject
from services.platform.auth import Caller, api_key_key, secret_digest
from services.platform.http import provided
from services.platform.state import IdIndex, Put, StateRepository

INDEX_KEY = "apikeys~index"
RETAINED_SECONDS = 30 * 24 * 3600
"""How long a key's record outlives its expiry (so listings and audits can still name it)."""
router = APIRouter(prefix="/v1/api-keys", tags=["access"])


class ApiKeys:
    def __init__(self, repository: StateRepository) -> None:
        self.repository = repository
        self.index = IdIndex(repository, INDEX_KEY)

    async def create(self, request: ApiKeyRequest, created_by: str, now: int) -> ApiKeyCreated:
        roles = check_role_names(request.roles)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            id=key_id,
            name=request.name,
            secret_sha256=secret_digest(secret),
            roles=roles,
            created_at=now,
            created_by=created_by,
            expires_at=now + request.expires_in_days * 86400,
        )
        ttl = record.expires_at - now + RETAINED_SECONDS
        await self.index.add(key_id)
        await self.repository.create(api_key_key(key_id), record.model_dump(mode="json"), ttl_seconds=ttl)
        return ApiKeyCreated(**_view(record, now).model_dump(), key=f"{API_KEY_PREFIX}{key_id}_{secret}")

    async def get(self, key_id: str) -> ApiKeyRecord:
        if not key_id.isalnum() or len(key_id) > 32:
            raise bad_request("an API key id is letters and digits")
        stored = await self.repository.get(api_key_key(key_id))
        if stored.value is None:
            raise not_found(f"no API key {key_id}")
        return ApiKeyRecord.model_validate(stored.value)

    async def all(self, now: int) -> list[ApiKeyView]:
        ids = await self.index.ids()
        stored = await self.repository.get_many([api_key_key(i) for i in ids])
        records = [ApiKeyRecord.model_validate(s.value) for s in stored.values() if s.value is not None]
        return [_view(r, now) for r in sorted(records, key=lambda r: r.created_at)]

    async def revoke(self, key_id: str, now: int) -> None:
        await self.get(key_id)

        def step(value: JsonObject | None) -> tuple[Put | None, None]:
            if value is None or value.get("revokedAt") is not None:
                return None, None
            return Put({**value, "revokedAt": now}), None

        await self.repository.update(api_key_key(key_id), step)


def _view(record: ApiKeyRecord, now: float) -> ApiKeyView:
    return ApiKeyView(
        id=record.id,
        name=record.name,
        roles=record.roles,
        created_at=record.created_at,
        created_by=record.created_by,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        state=key_state(record.expires_at, record.revoked_at, now),
    )


Keys = Annotated[ApiKeys, provided(ApiKeys)]


@router.post("", status_code=201, response_model=ApiKeyCreated)
async def create_key(keys: Keys, caller: Caller, body: ApiKeyRequest) -> ApiKeyCreated:
    """A new key with its roles (`operator`, `operator:region=eu`, …) and expiry; the key is in
    this answer only: store it now."""
    return await keys.create(body, caller.subject, int(time.time()))


@router.get("", response_model=ApiKeyList)
async def list_keys(keys: Keys) -> ApiKeyList:
    """Every key still on record (expired and revoked ones for 30 days), oldest first."""
    return ApiKeyList(items=await keys.all(int(time.time())))


@router.get("/{key_id}", response_model=ApiKeyView)
async def get_key(keys: Keys, key_id: str) -> ApiKeyView:
    return _view(await keys.get(key_id), time.time())


@router.delete("/{key_id}", status_code=204)
async def revoke_key(keys: Keys, key_id: str) -> Response:
    """Revoke a key: the next call made with it is refused (401)."""
    await keys.revoke(key_id, int(time.time()))
    return Response(status_code=204)
