"""The console's REST shapes (camelCase on the wire): sign-in, the fleet's counts and device
list from its index, and what the live stream sends."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.contracts.api import ApiModel, RequestModel
from services.domain.json_values import JsonObject


class SignIn(RequestModel):
    """`POST /v1/console/session`: the CLI's client credentials (exchanged at the issuer's token
    endpoint), or a bearer the caller already holds (a token or an API key)."""

    client_id: str | None = Field(default=None, min_length=1, max_length=256)
    client_secret: str | None = Field(default=None, min_length=1, max_length=1024)
    token: str | None = Field(default=None, min_length=1, max_length=16_384)


class SessionView(ApiModel):
    """Who is signed in (`signedIn` false, the rest empty: nobody)."""

    signed_in: bool = True
    subject: str = ""
    name: str = ""
    kind: str = ""
    roles: list[str] = Field(default_factory=list)
    expires_at: int = 0


class FacetCount(ApiModel):
    value: str
    count: int


class FleetCounts(ApiModel):
    """Live twins within the caller's scope, counted by each facet (largest first)."""

    twins: int
    connection: list[FacetCount]
    encoding: list[FacetCount]
    software: list[FacetCount]
    tags: list[FacetCount]
    ready: bool
    """False while the index is still being rebuilt from the store (the counts are partial)."""


class FleetDevice(ApiModel):
    device_id: str
    version: int
    timestamp: int
    connection: str
    encoding: str
    software: str
    software_status: str
    tags: JsonObject


class FleetDevicePage(ApiModel):
    total: int
    offset: int
    items: list[FleetDevice]


class LiveChange(ApiModel):
    """One twin change as the live stream sends it (the page fetches what it shows)."""

    kind: Literal["twin"] = "twin"
    device_id: str
    version: int
    timestamp: int
    cause: str
    deleted: bool


class RecentEvent(ApiModel):
    seq: int
    ts: float
    type: str
    data: JsonObject


class RecentEventList(ApiModel):
    """A device's last events the console heard (newest first; at most 20, kept in memory)."""

    items: list[RecentEvent]
