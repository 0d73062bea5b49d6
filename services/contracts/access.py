"""API keys and the audit trail: what crosses process boundaries about access (REST bodies, the
stored key record every app reads to check a key, and the `audit.recorded` event)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from services.contracts.api import ApiModel, RequestModel

API_KEY_PREFIX = "tfk_"
"""Every API key starts so (`tfk_<id>_<secret>`), which tells it from a JWT."""
AUDIT_TOPIC = "audit.recorded"
"""Every state-changing call of every app, allowed or refused (internal pub/sub)."""
MAX_KEY_DAYS = 366


class ApiKeyRequest(RequestModel):
    """`POST /v1/api-keys`: a key for a pipeline, with its roles (`operator`, `operator:region=eu`)."""

    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1, max_length=8)
    expires_in_days: int = Field(default=90, ge=1, le=MAX_KEY_DAYS)


class ApiKeyRecord(ApiModel):
    """A key as stored: only the SHA-256 of its secret (the secret is 256 random bits, so a fast
    hash is enough), its roles, who made it and when it stops working."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    secret_sha256: str
    roles: list[str]
    created_at: int
    created_by: str
    expires_at: int
    revoked_at: int | None = None


class ApiKeyView(ApiModel):
    """A key as listed (never its secret nor its hash)."""

    id: str
    name: str
    roles: list[str]
    created_at: int
    created_by: str
    expires_at: int
    revoked_at: int | None = None
    state: Literal["active", "expired", "revoked"]


class ApiKeyCreated(ApiKeyView):
    key: str
    """The key itself: shown this once, never again."""


class ApiKeyList(ApiModel):
    items: list[ApiKeyView]


Outcome = Literal["allowed", "refused", "failed"]


class AuditRecorded(ApiModel):
    """One state-changing call, past tense: who (`actor`, how it authenticated, its roles), what
    (`method`, `path`, the route's template, the device or configuration), when (`at`, unix
    seconds), from where (`source`: the client address, and the calling app when Dapr named
    one) and the outcome (`allowed` with a 2xx/3xx, `refused` with 401/403, `failed` otherwise,
    with the status and the refusal's message)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    id: str
    at: float
    """When the call came in (unix seconds), so records of one caller sort in the order it called."""
    app: str
    actor: str
    actor_kind: str
    roles: list[str] = Field(default_factory=list)
    method: str
    path: str
    route: str
    target: str = ""
    status: int
    outcome: Outcome
    message: str = ""
    source: str = ""
    caller_app: str = ""


class AuditPage(ApiModel):
    items: list[AuditRecorded]
    """Newest first."""
    next: str | None = None
    """Pass back as `before` for older entries."""
