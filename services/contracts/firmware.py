"""The firmware app's REST contract (`/v1/artifacts`, `/v1/metadata`, `/v1/keys`): artifacts as
listed, releases as published, the roles and keys of the current root, download grants as minted,
download progress. camelCase on the wire. TUF metadata itself travels as TUF's own JSON."""

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
    """`uploading` or `ready` (bytes stored)."""
    created: float
    released: bool
    """The current signed targets metadata lists it: devices may install it."""
    custom: dict[str, Any]
    """The signed target's `custom` (empty until released)."""
    expires: str | None
    """When the targets metadata that lists it expires (ISO 8601, UTC)."""


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
    """Proxied store: a token for `X-Download-Credential` (with the device's own credentials);
    object store: the store's own short-lived credential (a SAS scoped to one blob)."""
    url: str | None = None
    """Object store: where to download with it (the blob's URL with the credential)."""
    expires: int


class RoleKeys(ApiModel):
    role: str
    threshold: int
    keyids: list[str]


class TrustView(ApiModel):
    """`GET /v1/keys`: the current root's roles, for release managers and provisioning (a device
    is given its root out of band and never trusts what it fetches here)."""

    root_version: int
    root_expires: str
    roles: list[RoleKeys]
    targets_version: int
    """0 before the first release."""


class PublishedTargets(ApiModel):
    version: int
    expires: str
    targets: list[str]


class PublishedRoot(ApiModel):
    version: int
    expires: str


class DownloadProgress(ApiModel):
    """The last download of an artifact by one device since the app started."""

    device_id: str
    artifact: str
    start: int = Field(alias="from")
    """The first byte that download asked for (> 0: a resumed download)."""
    sent: int


class DownloadProgressList(ApiModel):
    items: list[DownloadProgress]
