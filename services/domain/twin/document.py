"""The twin document: what the store persists for one device (or one named shadow of it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.wire import WireEncoding
from services.domain.json_values import JsonObject
from services.domain.twin.delta import compute_delta, delta_message

RECENT_TOKENS = 32
"""How many recent clientTokens a twin remembers to answer redeliveries without re-applying."""


class TwinDocument(BaseModel):
    """Persisted twin. `version` only grows, across deletes too (a deleted twin is a tombstone)."""

    model_config = ConfigDict(extra="forbid")

    device_id: str
    shadow: str = ""
    desired: JsonObject = Field(default_factory=dict)
    reported: JsonObject = Field(default_factory=dict)
    desired_metadata: JsonObject = Field(default_factory=dict)
    reported_metadata: JsonObject = Field(default_factory=dict)
    tags: JsonObject = Field(default_factory=dict)
    configurations: JsonObject = Field(default_factory=dict)
    """Which configurations the rollout app applied here (status, keys won, stage, when): kept by
    the system, written in the same version as the desired keys, never sent to the device."""
    version: int = 0
    timestamp: int = 0
    deleted: bool = False
    recent_tokens: list[tuple[str, int]] = Field(default_factory=list)
    """(clientToken, version it produced), newest last."""
    wire: WireEncoding = WireEncoding.JSON
    """How the device speaks: the encoding of its latest accepted request that had a payload;
    deltas and documents go out in it. A per-twin attribute outside state and versioning: a change
    of it alone (a `get` in the other encoding) is written without a version bump; kept across
    deletes."""
    templates: dict[str, JsonObject] = Field(default_factory=dict)
    """The wire templates the device registered (`contracts.templates.WireTemplate`, JSON form),
    by name, newest version each; like `wire`, outside state and versioning."""

    @property
    def exists(self) -> bool:
        return not self.deleted and self.version > 0

    def delta(self) -> JsonObject:
        return compute_delta(self.desired, self.reported)

    def version_for_token(self, client_token: str | None) -> int | None:
        """The version an earlier request with this clientToken produced, if remembered."""
        if client_token is None:
            return None
        for token, version in reversed(self.recent_tokens):
            if token == client_token:
                return version
        return None

    def state_view(self, *, include_delta: bool = True) -> dict[str, Any]:
        """The document as devices and components see it (`/get/accepted`, REST GET)."""
        state: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if self.desired:
            state["desired"] = self.desired
            metadata["desired"] = self.desired_metadata
        if self.reported:
            state["reported"] = self.reported
            metadata["reported"] = self.reported_metadata
        if include_delta:
            delta = self.delta()
            if delta:
                state["delta"] = delta
        return {
            "state": state,
            "metadata": metadata,
            "version": self.version,
            "timestamp": self.timestamp,
        }

    def snapshot(self) -> dict[str, Any]:
        """State, metadata, version and timestamp, without delta (the `/documents` shape)."""
        return self.state_view(include_delta=False)

    def delta_message(self, client_token: str | None = None) -> dict[str, Any] | None:
        """The `/update/delta` payload, or None when desired and reported agree."""
        return delta_message(self.snapshot(), client_token)
