"""REST API for components: read, list, patch desired (If-Match), tags, create and delete twins.

The device id always comes from the path; writes go through the same batch writer as MQTT.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.domain.document import TwinDocument
from services.domain.errors import bad_request, not_found, too_large
from services.domain.json_values import JsonObject
from services.domain.topics import TwinAddress, valid_id
from services.domain.twin_index import (
    SHARDS,
    decode_cursor,
    encode_cursor,
    page_from_shard,
    shard_key,
)
from services.domain.update import BatchWrite
from services.domain.wire import decode_payload
from services.twin_store.commands import (
    BatchWriteCommand,
    Command,
    CreateTwin,
    DeleteTwin,
    DesiredPatch,
    Effects,
    TagPatch,
)

router = APIRouter(prefix="/v1/twins", tags=["twins"])

ShadowQuery = Annotated[str, Query(description="named shadow; empty for the classic twin")]
IfMatch = Annotated[str | None, Header(description="expected twin version (optimistic lock)")]


class TwinSummary(BaseModel):
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


class TwinPage(BaseModel):
    items: list[TwinSummary | FullTwinSummary]
    next: str | None
    """Cursor for the next page; absent on the last page."""


def _address(device_id: str, shadow: str) -> TwinAddress:
    if not valid_id(device_id):
        raise bad_request("device id must be 1..128 of letters, digits and _ . : -")
    if shadow and not valid_id(shadow):
        raise bad_request("shadow name must be 1..128 of letters, digits and _ . : -")
    return TwinAddress(device_id, shadow)


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise bad_request('If-Match must be the twin version, e.g. "7"')
    return int(text)


def _view(doc: TwinDocument) -> dict[str, Any]:
    """The twin as REST shows it (always JSON); `wire` is how the device speaks MQTT (json/cbor)."""
    view = doc.state_view()
    view.update(
        deviceId=doc.device_id, shadow=doc.shadow, tags=doc.tags, configurations=doc.configurations, wire=doc.wire.value
    )
    return view


async def _submit(request: Request, command: Command) -> TwinDocument:
    effects = await request.app.state.writer.submit(command)
    if effects.error is not None:
        raise effects.error
    document: TwinDocument = effects.document
    return document


@router.get("", response_model=TwinPage)
async def list_twins(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query()] = None,
    view: Annotated[
        Literal["summary", "full"], Query(description="`full` adds desired, reported, configurations")
    ] = "summary",
) -> TwinPage:
    """Twins in key order, `limit` at a time; pass `next` back as `cursor` for the next page."""
    try:
        shard, after = decode_cursor(cursor)
    except ValueError:
        raise bad_request("cursor is not one this API returned") from None
    sidecar = request.app.state.sidecar
    keys: list[str] = []
    next_cursor = None
    while shard < SHARDS and len(keys) < limit:
        stored = await sidecar.get(shard_key(shard))
        members = (stored.value or {}).get("twins", [])
        page = page_from_shard(members, after, limit - len(keys))
        keys += page
        if page and page[-1] != members[-1]:
            next_cursor = encode_cursor(shard, page[-1])
            break
        shard, after = shard + 1, ""
        next_cursor = encode_cursor(shard, "") if shard < SHARDS else None
    docs = await sidecar.get_many(keys)
    found = [
        d for key in keys if (value := docs[key].value) is not None and (d := TwinDocument.model_validate(value)).exists
    ]
    items: list[TwinSummary | FullTwinSummary] = [
        FullTwinSummary(
            device_id=d.device_id,
            shadow=d.shadow,
            version=d.version,
            timestamp=d.timestamp,
            tags=d.tags,
            desired=d.desired,
            reported=d.reported,
            configurations=d.configurations,
        )
        if view == "full"
        else TwinSummary(device_id=d.device_id, shadow=d.shadow, version=d.version, timestamp=d.timestamp, tags=d.tags)
        for d in found
    ]
    return TwinPage(items=items, next=next_cursor)


class BatchItem(BaseModel):
    """One twin of `POST /v1/twins/batch` (the classic twin; merge patches, one version)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    device_id: str = Field(alias="deviceId")
    create: bool = False
    desired: JsonObject | None = None
    tags: JsonObject | None = None
    configurations: JsonObject | None = None
    if_version: int | None = Field(default=None, alias="ifVersion", ge=0)


class BatchBody(BaseModel):
    items: list[BatchItem]


MAX_BATCH = 1000


@router.post("/batch")
async def batch_write(request: Request, body: BatchBody) -> dict[str, Any]:
    """Write up to 1,000 twins in one call (desired keys, tags, configuration marks, optionally
    creating them): they share the writer's bulk state round trips. Each item is answered on its
    own (200/201/400/404/409/413); a write that changes nothing is `unchanged`, with no new version."""
    await _require_strict_json(request)
    if not body.items:
        raise bad_request("items is empty")
    if len(body.items) > MAX_BATCH:
        raise too_large(f"{len(body.items)} items; at most {MAX_BATCH} per batch")
    ids = [item.device_id for item in body.items]
    if len(set(ids)) != len(ids):
        raise bad_request("a device appears twice in one batch; merge its items")
    for device_id in ids:
        _address(device_id, "")
    writer = request.app.state.writer
    commands = [
        BatchWriteCommand(
            TwinAddress(item.device_id, ""),
            BatchWrite(item.create, item.desired, item.tags, item.configurations, item.if_version),
        )
        for item in body.items
    ]
    effects = await asyncio.gather(*(writer.submit(c) for c in commands))
    return {"results": [_batch_result(item.device_id, e) for item, e in zip(body.items, effects, strict=True)]}


def _batch_result(device_id: str, effects: Effects) -> dict[str, Any]:
    if effects.error is not None:
        return {"deviceId": device_id, "status": int(effects.error.code), "message": effects.error.message}
    doc = effects.document
    assert doc is not None
    return {
        "deviceId": device_id,
        "status": 201 if effects.created else 200,
        "version": doc.version,
        "unchanged": not effects.events,
        "configurations": doc.configurations,
    }


@router.get("/{device_id}")
async def get_twin(request: Request, device_id: str, shadow: ShadowQuery = "") -> dict[str, Any]:
    """The twin: desired, reported, delta, metadata, version, tags."""
    address = _address(device_id, shadow)
    stored = await request.app.state.sidecar.get(address.key)
    if stored.value is None:
        raise not_found(f"no twin exists for {device_id}")
    doc = TwinDocument.model_validate(stored.value)
    if not doc.exists:
        raise not_found(f"no twin exists for {device_id}")
    return _view(doc)


@router.put("/{device_id}", status_code=201)
async def create_twin(request: Request, device_id: str, shadow: ShadowQuery = "") -> dict[str, Any]:
    """Register an empty twin; 409 if it exists."""
    return _view(await _submit(request, CreateTwin(_address(device_id, shadow))))


async def _require_strict_json(request: Request) -> None:
    """REST bodies follow the device payload rules: FastAPI's parser takes `NaN`, `Infinity` and
    lone surrogates, which no stored document may hold (400)."""
    decode_payload(await request.body())


@router.patch("/{device_id}/desired")
async def patch_desired(
    request: Request,
    device_id: str,
    patch: Annotated[JsonObject, Body(description="partial desired state; null deletes a key")],
    shadow: ShadowQuery = "",
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Merge a desired-state patch; `If-Match: "<version>"` makes it conditional (409)."""
    await _require_strict_json(request)
    command = DesiredPatch(_address(device_id, shadow), patch, _expected_version(if_match))
    return _view(await _submit(request, command))


@router.patch("/{device_id}/tags")
async def patch_tags(
    request: Request,
    device_id: str,
    patch: Annotated[JsonObject, Body(description="tags to set; null deletes one")],
    shadow: ShadowQuery = "",
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Merge tags (never sent to the device)."""
    await _require_strict_json(request)
    command = TagPatch(_address(device_id, shadow), patch, _expected_version(if_match))
    return _view(await _submit(request, command))


@router.delete("/{device_id}")
async def delete_twin(
    request: Request, device_id: str, shadow: ShadowQuery = "", if_match: IfMatch = None
) -> dict[str, Any]:
    """Delete the twin; its version is kept, so a re-created twin continues above it."""
    doc = await _submit(request, DeleteTwin(_address(device_id, shadow), _expected_version(if_match)))
    return {"deviceId": doc.device_id, "shadow": doc.shadow, "version": doc.version}
