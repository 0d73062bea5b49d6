"""The firmware app's REST contract (`/v1/artifacts`, `/v1/keys`): artifacts as listed, download
grants as minted, download progress. camelCase on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.contracts.api import ApiModel


class ArtifactView(ApiModel):
    id: str
    name: str
    version: str
    length: int
    sha256: str
    status: str
    """`uploading` or `ready`."""
    created: float
    custom: dict[str, Any]
    expires: str | None
    """When the signed metadata expires (ISO 8601, UTC)."""


class ArtifactList(ApiModel):
    items: list[ArtifactView]
    """Oldest first."""


class UrlRequest(ApiModel):
    """`POST /v1/artifacts/{id}/urls`: a pre-signed URL for one device, optionally bound to its address."""

    device_id: str
    ttl: int = Field(default=3600, ge=1, le=30 * 24 * 3600)
    ip: str | None = None


class MintedUrl(ApiModel):
    url: str
    expires: int


class MintedCredential(ApiModel):
    credential: str
    expires: int


class SigningKeys(ApiModel):
    keys: list[str]
    """ed25519 public keys (hex) that sign release metadata."""


class DownloadProgress(ApiModel):
    """The last download of an artifact by one device since the app started."""

    device_id: str
    artifact: str
    start: int = Field(alias="from")
    """The first byte that download asked for (> 0: a resumed download)."""
    sent: int


class DownloadProgressList(ApiModel):
    items: list[DownloadProgress]
