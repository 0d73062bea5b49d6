"""The delta between desired and reported state."""

from __future__ import annotations

from typing import Any

from services.domain.json_values import JsonObject, json_equal
from services.domain.twin.merge import metadata_for


def compute_delta(desired: JsonObject, reported: JsonObject) -> JsonObject:
    """Desired keys whose value differs from reported, recursing into objects.

    Keys only present in `reported` never appear; arrays compare as whole values.
    """
    delta: JsonObject = {}
    for key, want in desired.items():
        if key not in reported:
            delta[key] = want
            continue
        have = reported[key]
        if isinstance(want, dict) and isinstance(have, dict):
            sub = compute_delta(want, have)
            if sub:
                delta[key] = sub
        elif not json_equal(want, have):
            delta[key] = want
    return delta


def delta_metadata(delta: JsonObject, desired_metadata: JsonObject) -> JsonObject:
    """Metadata of the desired leaves that make up `delta`."""
    return metadata_for(delta, desired_metadata)


def snapshot_delta(snapshot: dict[str, Any] | None) -> JsonObject:
    """The delta of a document snapshot (`TwinDocument.snapshot()`); empty for None."""
    if snapshot is None:
        return {}
    state = snapshot.get("state") or {}
    return compute_delta(state.get("desired") or {}, state.get("reported") or {})


def delta_message(snapshot: dict[str, Any], client_token: str | None = None) -> dict[str, Any] | None:
    """The `/update/delta` payload for a snapshot, or None when desired and reported agree."""
    delta = snapshot_delta(snapshot)
    if not delta:
        return None
    desired_metadata = (snapshot.get("metadata") or {}).get("desired") or {}
    message: dict[str, Any] = {
        "state": delta,
        "metadata": delta_metadata(delta, desired_metadata),
        "version": snapshot["version"],
        "timestamp": snapshot["timestamp"],
    }
    if client_token is not None:
        message["clientToken"] = client_token
    return message
