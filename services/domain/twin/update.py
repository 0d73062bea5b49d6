"""Applying device-contract requests (update, delete, desired/tag patches, batch writes) to a twin document.

Pure functions: inputs are the stored document (or None), a parsed request and the clock;
outputs are the new document plus the payload to acknowledge with. Refusals raise `TwinError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.domain.errors import bad_request, conflict, not_found
from services.domain.json_values import JsonObject, json_equal
from services.domain.twin.document import RECENT_TOKENS, TwinDocument
from services.domain.twin.limits import Limits, check_section, check_state_size
from services.domain.twin.merge import merge_metadata, merge_patch, metadata_for

SECTIONS = ("desired", "reported")


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A parsed `state/update`. A section is None when absent; `clear_*` when sent as null."""

    desired: JsonObject | None = None
    reported: JsonObject | None = None
    clear_desired: bool = False
    clear_reported: bool = False
    clear_state: bool = False
    version: int | None = None
    client_token: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    previous: TwinDocument | None
    """The twin before the update, None when it did not exist."""
    current: TwinDocument
    accepted: dict[str, Any]
    """Payload for `/update/accepted`."""
    replayed: bool = False
    """True when the clientToken was already applied: nothing changed, the ack is repeated."""


def parse_client_token(payload: Any, limits: Limits) -> str | None:
    """The request's clientToken, checked for type and length; None when absent."""
    if not isinstance(payload, dict) or "clientToken" not in payload:
        return None
    token = payload["clientToken"]
    if not isinstance(token, str) or not token:
        raise bad_request("clientToken must be a non-empty string")
    if len(token.encode()) > limits.max_client_token_bytes:
        raise bad_request(f"clientToken may hold at most {limits.max_client_token_bytes} bytes")
    return token


def parse_version(payload: JsonObject) -> int | None:
    if "version" not in payload:
        return None
    version = payload["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise bad_request("version must be a non-negative integer")
    return version


def parse_update(payload: Any, limits: Limits) -> UpdateRequest:
    """Validate an update request body (already decoded from the wire)."""
    if not isinstance(payload, dict):
        raise bad_request("request must be a JSON object")
    unknown = set(payload) - {"state", "version", "clientToken"}
    if unknown:
        raise bad_request(f"unexpected field(s): {', '.join(sorted(unknown))}")
    token = parse_client_token(payload, limits)
    version = parse_version(payload)
    if "state" not in payload:
        raise bad_request("missing required field: state")
    state = payload["state"]
    if state is None:
        return UpdateRequest(clear_state=True, version=version, client_token=token)
    if not isinstance(state, dict):
        raise bad_request("state must be an object or null")
    extra = set(state) - set(SECTIONS)
    if extra:
        raise bad_request(f"state may only hold desired and reported, not {', '.join(sorted(extra))}")
    if not state:
        raise bad_request("state must contain desired and/or reported")
    sections: dict[str, JsonObject | None] = {}
    clears: dict[str, bool] = {}
    for name in SECTIONS:
        if name not in state:
            sections[name], clears[name] = None, False
            continue
        value = state[name]
        if value is None:
            sections[name], clears[name] = None, True
            continue
        if not isinstance(value, dict):
            raise bad_request(f"state.{name} must be an object or null")
        check_section(f"state.{name}", value, limits)
        sections[name], clears[name] = value, False
    return UpdateRequest(
        desired=sections["desired"],
        reported=sections["reported"],
        clear_desired=clears["desired"],
        clear_reported=clears["reported"],
        version=version,
        client_token=token,
    )


def _base(doc: TwinDocument | None, device_id: str, shadow: str) -> TwinDocument:
    """The document an update starts from; a tombstone keeps its version so versions never go back
    (and the device's wire encoding)."""
    if doc is None:
        return TwinDocument(device_id=device_id, shadow=shadow)
    if doc.deleted:
        return TwinDocument(device_id=device_id, shadow=shadow, version=doc.version, wire=doc.wire)
    return doc


def _check_version(expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise conflict(f"version conflict: request expects version {expected}, twin is at {actual}")


def _remember(tokens: list[tuple[str, int]], token: str | None, version: int) -> list[tuple[str, int]]:
    if token is None:
        return tokens
    return [*tokens, (token, version)][-RECENT_TOKENS:]


def apply_update(
    doc: TwinDocument | None,
    device_id: str,
    shadow: str,
    request: UpdateRequest,
    now: int,
    limits: Limits,
) -> UpdateOutcome:
    """Merge `request` into the twin; raises 409 on a version mismatch and 413 when too large."""
    if doc is not None and doc.exists:
        replay_version = doc.version_for_token(request.client_token)
        if replay_version is not None:
            return UpdateOutcome(doc, doc, _accepted(request, doc, replay_version), replayed=True)
    base = _base(doc, device_id, shadow)
    _check_version(request.version, base.version)
    sections: dict[str, tuple[JsonObject, JsonObject]] = {}
    for name in SECTIONS:
        state: JsonObject = getattr(base, name)
        meta: JsonObject = getattr(base, f"{name}_metadata")
        if request.clear_state or getattr(request, f"clear_{name}"):
            state, meta = {}, {}
        patch: JsonObject | None = getattr(request, name)
        if patch is not None:
            merged = merge_patch(state, patch)
            meta = merge_metadata(meta, patch, merged, now)
            state = merged
        sections[name] = (state, meta)
    desired, desired_meta = sections["desired"]
    reported, reported_meta = sections["reported"]
    check_state_size(desired, reported, limits)
    version = base.version + 1
    current = base.model_copy(
        update={
            "desired": desired,
            "reported": reported,
            "desired_metadata": desired_meta,
            "reported_metadata": reported_meta,
            "version": version,
            "timestamp": now,
            "recent_tokens": _remember(base.recent_tokens, request.client_token, version),
        }
    )
    previous = doc if doc is not None and doc.exists else None
    return UpdateOutcome(previous, current, _accepted(request, current, version))


def _accepted(request: UpdateRequest, doc: TwinDocument, version: int) -> dict[str, Any]:
    """The `/update/accepted` payload: the sections as requested and their metadata."""
    accepted: dict[str, Any] = {}
    if request.clear_state:
        accepted["state"] = None
    else:
        state: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for name in SECTIONS:
            patch: JsonObject | None = getattr(request, name)
            if getattr(request, f"clear_{name}"):
                state[name] = None
            elif patch is not None:
                state[name] = patch
                metadata[name] = metadata_for(patch, getattr(doc, f"{name}_metadata"))
        accepted["state"] = state
        accepted["metadata"] = metadata
    accepted["version"] = version
    accepted["timestamp"] = doc.timestamp
    if request.client_token is not None:
        accepted["clientToken"] = request.client_token
    return accepted


def patch_desired(
    doc: TwinDocument | None,
    device_id: str,
    shadow: str,
    patch: JsonObject,
    expected_version: int | None,
    now: int,
    limits: Limits,
) -> UpdateOutcome:
    """A component's desired-state patch (REST); same rules as a device `update` with `desired`."""
    check_section("desired", patch, limits)
    request = UpdateRequest(desired=patch, version=expected_version)
    return apply_update(doc, device_id, shadow, request, now, limits)


def patch_tags(doc: TwinDocument | None, patch: JsonObject, expected_version: int | None, now: int) -> TwinDocument:
    """Merge tags (never sent to the device); bumps the version like any change."""
    if doc is None or not doc.exists:
        raise not_found("no twin exists for this device")
    _check_version(expected_version, doc.version)
    tags = _merge_tags(doc.tags, patch)
    return doc.model_copy(update={"tags": tags, "version": doc.version + 1, "timestamp": now})


def apply_delete(
    doc: TwinDocument | None, expected_version: int | None, client_token: str | None, now: int
) -> tuple[TwinDocument, dict[str, Any]]:
    """Delete the twin, leaving a tombstone that keeps the version; returns it and the ack payload."""
    if doc is None or not doc.exists:
        raise not_found("no twin exists for this device")
    _check_version(expected_version, doc.version)
    tombstone = TwinDocument(
        device_id=doc.device_id,
        shadow=doc.shadow,
        version=doc.version + 1,
        timestamp=now,
        deleted=True,
        wire=doc.wire,
    )
    accepted: dict[str, Any] = {"version": tombstone.version, "timestamp": now}
    if client_token is not None:
        accepted["clientToken"] = client_token
    return tombstone, accepted


def create_twin(doc: TwinDocument | None, device_id: str, shadow: str, now: int) -> TwinDocument:
    """An empty twin; 409 when one exists already."""
    if doc is not None and doc.exists:
        raise conflict("a twin exists already for this device")
    base = _base(doc, device_id, shadow)
    return base.model_copy(update={"version": base.version + 1, "timestamp": now})


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """One twin's part of a batch write (`POST /v1/twins/batch`, used by the rollout app): desired
    keys, tags and configuration marks, as JSON merge patches applied in one version.

    `create` makes a missing (or deleted) twin instead of refusing it; `expected_version` makes the
    write conditional (409)."""

    create: bool = False
    desired: JsonObject | None = None
    tags: JsonObject | None = None
    configurations: JsonObject | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    previous: TwinDocument | None
    """The twin before the write, None when it did not exist."""
    current: TwinDocument
    created: bool = False
    unchanged: bool = False
    """Nothing would change: `current` is the stored document, no new version, no event."""
    desired_changed: bool = False
    """Desired differs from before (JSON equality): the device must hear of it; otherwise only
    tags or configurations changed, which the device never sees."""


def apply_batch_write(
    doc: TwinDocument | None, device_id: str, write: BatchWrite, now: int, limits: Limits
) -> BatchOutcome:
    """Apply one batch item to the classic twin, as one new version.

    404 for a missing twin unless `create` (then it is made, its version continuing above a
    tombstone); 409 on a version mismatch; 400/413 as a desired patch (`patch_desired`) or tag
    patch (`patch_tags`) would get; 400 for a configuration that is neither an object nor null.
    A write whose result equals the twin in desired, tags and configurations is `unchanged`, so
    repeating a batch never bumps a version twice. Desired metadata is stamped only when desired
    changes."""
    exists = doc is not None and doc.exists
    if not exists and not write.create:
        raise not_found(f"no twin exists for {device_id}")
    base = _base(doc, device_id, "")
    _check_version(write.expected_version, base.version)
    desired, desired_meta = _merge_desired(base, write.desired, now, limits)
    tags = _merge_tags(base.tags, write.tags)
    configurations = _merge_configurations(base.configurations, write.configurations, limits)
    desired_changed = not json_equal(desired, base.desired)
    if exists and not desired_changed and json_equal([tags, configurations], [base.tags, base.configurations]):
        assert doc is not None
        return BatchOutcome(doc, doc, unchanged=True)
    current = base.model_copy(
        update={
            "desired": desired,
            "desired_metadata": desired_meta if desired_changed else base.desired_metadata,
            "tags": tags,
            "configurations": configurations,
            "version": base.version + 1,
            "timestamp": now,
        }
    )
    return BatchOutcome(doc if exists else None, current, created=not exists, desired_changed=desired_changed)


def _merge_desired(
    base: TwinDocument, patch: JsonObject | None, now: int, limits: Limits
) -> tuple[JsonObject, JsonObject]:
    """Desired and its metadata after `patch`, checked like `patch_desired` (400, 413)."""
    if patch is None:
        return base.desired, base.desired_metadata
    check_section("desired", patch, limits)
    desired = merge_patch(base.desired, patch)
    check_state_size(desired, base.reported, limits)
    return desired, merge_metadata(base.desired_metadata, patch, desired, now)


MAX_TAGS = 64
MAX_TAG_KEY_BYTES = 128
MAX_TAG_VALUE_CHARS = 256


def _merge_tags(tags: JsonObject, patch: JsonObject | None) -> JsonObject:
    """Tags after `patch`: scalars only, null deletes; names 1..128 bytes, string values at most
    256 characters, at most 64 tags (400 naming what is wrong)."""
    if patch is None:
        return tags
    for key, value in patch.items():
        if not key or len(key.encode()) > MAX_TAG_KEY_BYTES:
            raise bad_request(f"tag names are 1..{MAX_TAG_KEY_BYTES} bytes, not {key[:40]!r}")
        if isinstance(value, (dict, list)):
            raise bad_request(f"tag {key!r} must be a string, number, boolean or null")
        if isinstance(value, str) and len(value) > MAX_TAG_VALUE_CHARS:
            raise bad_request(f"tag {key!r} is {len(value)} characters; at most {MAX_TAG_VALUE_CHARS}")
    merged = merge_patch(tags, patch)
    if len(merged) > MAX_TAGS:
        raise bad_request(f"a twin holds at most {MAX_TAGS} tags; this would make {len(merged)}")
    return merged


def _merge_configurations(configurations: JsonObject, patch: JsonObject | None, limits: Limits) -> JsonObject:
    """Configuration marks after `patch` (a JSON merge patch: null removes a mark, an object
    merges into it); each value must be an object or null, shaped like a state section."""
    if patch is None:
        return configurations
    for key, value in patch.items():
        if value is not None and not isinstance(value, dict):
            raise bad_request(f"configurations.{key} must be an object or null")
    check_section("configurations", patch, limits)
    return merge_patch(configurations, patch)
