"""The twin-store's REST contract (`/v1/twins`): what components, the rollout app, the firmware app,
the CLI and the tests send and get back. One spelling: camelCase on the wire."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from services.contracts.api import ApiModel, RequestModel
from services.domain.json_values import JsonObject

MAX_BATCH = 1000
"""Most twins one `POST /v1/twins/batch` may write."""


class TwinView(ApiModel):
    """A twin as `GET /v1/twins/{id}` shows it (and every write answers with): desired, reported
    and delta under `state`, their per-leaf `metadata`, the version, tags and configuration marks;
    `wire` is how the device speaks MQTT (json/cbor)."""

    device_id: str
    shadow: str = ""
    state: JsonObject = Field(default_factory=dict)
    metadata: JsonObject = Field(default_factory=dict)
    version: int
    timestamp: int
    tags: JsonObject = Field(default_factory=dict)
    configurations: JsonObject = Field(default_factory=dict)
    wire: str = "json"

    @property
    def desired(self) -> JsonObject:
        return dict(self.state.get("desired") or {})

    @property
    def reported(self) -> JsonObject:
        return dict(self.state.get("reported") or {})

    @property
    def delta(self) -> JsonObject:
        return dict(self.state.get("delta") or {})


class TwinSummary(ApiModel):
    """One item of `GET /v1/twins`."""

    device_id: str
    shadow: str
    version: int
    timestamp: int
    tags: JsonObject


class FullTwinSummary(TwinSummary):
    """A list item with `view=full`: what the rollout app evaluates conditions on."""

    desired: JsonObject
    reported: JsonObject
    configurations: JsonObject
    wire: str = "json"
    """How the device speaks MQTT (json/cbor)."""


class TwinPage(ApiModel):
    items: list[FullTwinSummary | TwinSummary]
    next: str | None = None
    """Cursor for the next page; absent on the last page."""


class DeletedTwin(ApiModel):
    """The answer to `DELETE /v1/twins/{id}`: the tombstone's version (a re-created twin continues
    above it)."""

    device_id: str
    shadow: str
    version: int


class BatchItem(RequestModel):
    """One twin of `POST /v1/twins/batch` (the classic twin; merge patches, one version)."""

    device_id: str
    create: bool = False
    desired: JsonObject | None = None
    tags: JsonObject | None = None
    configurations: JsonObject | None = None
    if_version: int | None = Field(default=None, ge=0)


class BatchBody(RequestModel):
    items: list[BatchItem]


class WriteOutcome(StrEnum):
    """What became of one batch item, as the caller acts on it."""

    WRITTEN = "written"
    """200: written, or already so (`unchanged`)."""
    CREATED = "created"
    """201: the twin was created by this item."""
    CONFLICT = "conflict"
    """409: the twin is at another version than `ifVersion`."""
    NOT_FOUND = "not_found"
    """404: no such twin (and `create` was not asked)."""
    REFUSED = "refused"
    """400/413: the twin-store refused the content (too large, malformed); `message` says why."""


_OUTCOMES = {
    200: WriteOutcome.WRITTEN,
    201: WriteOutcome.CREATED,
    409: WriteOutcome.CONFLICT,
    404: WriteOutcome.NOT_FOUND,
}


class BatchResult(ApiModel):
    """One item's answer: `status` 200/201 (written or already so; `unchanged` then), or the
    refusal's 400/404/409/413 with `message`. `version` and `configurations` are the twin's after
    the item, or as it stands when refused (null when there is no twin)."""

    device_id: str
    status: int
    version: int | None = None
    unchanged: bool = False
    configurations: JsonObject | None = None
    message: str | None = None

    @property
    def outcome(self) -> WriteOutcome:
        return _OUTCOMES.get(self.status, WriteOutcome.REFUSED)

    @property
    def landed(self) -> bool:
        return self.outcome in (WriteOutcome.WRITTEN, WriteOutcome.CREATED)


class BatchAnswer(ApiModel):
    results: list[BatchResult]
    """In item order."""


def batch_request_schema() -> dict[str, Any]:
    """The OpenAPI request body of `POST /v1/twins/batch` (the route parses the body itself, to
    answer 413 for too many items before looking at them)."""
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                            "items": BatchItem.model_json_schema(by_alias=True),
                        }
                    },
                    "required": ["items"],
                    "additionalProperties": False,
                }
            }
        },
    }
