"""REST API for components: read, list, patch desired (If-Match), tags, create and delete twins,
and batch writes for system apps (the rollout app). The shapes are `services.contracts.twins`.

The device id always comes from the path; writes go through the same batch writer as MQTT.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import ValidationError

from services.contracts.topics import TwinAddress, valid_id
from services.contracts.twins import (
    MAX_BATCH,
    BatchAnswer,
    BatchBody,
    BatchItem,
    BatchResult,
    DeletedTwin,
    FullTwinSummary,
    TwinPage,
    TwinSummary,
    TwinView,
    batch_request_schema,
)
from services.contracts.wire import WireEncoding, decode_payload
from services.domain.access import Principal, check_in_scope, in_scope
from services.domain.errors import TwinError, bad_request, not_found, too_large
from services.domain.json_values import JsonObject
from services.domain.twin.commands import (
    BatchWriteCommand,
    Command,
    CreateTwin,
    DeleteTwin,
    DesiredPatch,
    Effects,
    TagPatch,
)
from services.domain.twin.document import TwinDocument
from services.domain.twin.update import BatchWrite
from services.platform.auth import Caller
from services.platform.http import provided
from services.platform.state import StateRepository
from services.twin_store.listing import TwinListing
from services.twin_store.writer import TwinWriter

router = APIRouter(prefix="/v1/twins", tags=["twins"])

Writer = Annotated[TwinWriter, provided(TwinWriter)]
Listing = Annotated[TwinListing, provided(TwinListing)]
State = Annotated[StateRepository, provided(StateRepository)]
ShadowQuery = Annotated[str, Query(description="named shadow; empty for the classic twin")]
IfMatch = Annotated[str | None, Header(description="expected twin version (optimistic lock)")]


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


def twin_view(doc: TwinDocument) -> TwinView:
    """The twin as REST shows it (always JSON); `wire` is how the device speaks MQTT (json/cbor)."""
    view = doc.state_view()
    return TwinView(
        device_id=doc.device_id,
        shadow=doc.shadow,
        state=view["state"],
        metadata=view["metadata"],
        version=doc.version,
        timestamp=doc.timestamp,
        tags=doc.tags,
        configurations=doc.configurations,
        wire=doc.wire.value,
    )


async def _submit(writer: TwinWriter, command: Command) -> TwinDocument:
    effects = await writer.submit(command)
    if effects.error is not None:
        raise effects.error
    assert effects.document is not None
    return effects.document


@router.get("", response_model=TwinPage)
async def list_twins(
    listing: Listing,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query()] = None,
    view: Annotated[
        Literal["summary", "full"], Query(description="`full` adds desired, reported, configurations")
    ] = "summary",
) -> TwinPage:
    """Live twins in key order, at most `limit` at a time; pass `next` back as `cursor` for the
    next page (`TwinListing` says what a page guarantees). A scoped caller sees only the twins
    within its scope (so a page may hold fewer than `limit`)."""
    try:
        docs, next_cursor = await listing.page(cursor, limit)
    except ValueError:
        raise bad_request("cursor is not one this API returned") from None
    docs = [d for d in docs if in_scope(d.tags, caller.scope)]
    items: list[FullTwinSummary | TwinSummary] = [
        FullTwinSummary(
            device_id=d.device_id,
            shadow=d.shadow,
            version=d.version,
            timestamp=d.timestamp,
            tags=d.tags,
            desired=d.desired,
            reported=d.reported,
            configurations=d.configurations,
            wire=d.wire.value,
        )
        if view == "full"
        else TwinSummary(device_id=d.device_id, shadow=d.shadow, version=d.version, timestamp=d.timestamp, tags=d.tags)
        for d in docs
    ]
    return TwinPage(items=items, next=next_cursor)


@router.post("/batch", response_model=BatchAnswer, openapi_extra={"requestBody": batch_request_schema()})
async def batch_write(request: Request, writer: Writer, caller: Caller) -> BatchAnswer:
    """Write up to 1,000 classic twins in one call (desired keys, tags, configuration marks,
    optionally creating them): the items are applied concurrently and share the writer's bulk
    state round trips. Each is answered on its own (200/201/400/404/409/413), in item order; a
    write that changes nothing is `unchanged`, with no new version. The whole call is refused
    for a malformed body or a device named twice (400) and for more than 1,000 items (413)."""
    body = _batch_body(await _require_strict_json(request))
    items = (_write_item(writer, item, caller) for item in body.items)
    return BatchAnswer(results=list(await asyncio.gather(*items)))


async def _write_item(writer: TwinWriter, item: BatchItem, caller: Principal) -> BatchResult:
    """Submit one item to the writer (which bundles it with the others) and answer it; an invalid
    device id refuses that item only."""
    try:
        address = _address(item.device_id, "")
    except TwinError as error:
        return _refused(item.device_id, error, None)
    write = BatchWrite(item.create, item.desired, item.tags, item.configurations, item.if_version)
    return _batch_result(item, await writer.submit(BatchWriteCommand(address, write, caller.scope)))


def _batch_body(payload: Any) -> BatchBody:
    """The parsed batch: 400 unless `{"items": [...]}` of well-formed items, each device once;
    413 past `MAX_BATCH` items (told before the items are looked at)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise bad_request('body must be an object {"items": [...]}')
    count = len(payload["items"])
    if count == 0:
        raise bad_request("items is empty")
    if count > MAX_BATCH:
        raise too_large(f"{count} items; at most {MAX_BATCH} per batch")
    try:
        body = BatchBody.model_validate(payload, by_alias=True, by_name=False)
    except ValidationError as error:
        raise bad_request(_validation_message(error)) from None
    seen: set[str] = set()
    for item in body.items:
        if item.device_id in seen:
            raise bad_request(f"device {item.device_id!r} appears twice in one batch; merge its items")
        seen.add(item.device_id)
    return body


def _validation_message(error: ValidationError) -> str:
    """The first problem, located like `items[3].deviceId: Field required`."""
    first = error.errors()[0]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: {first['msg']}{more}"


def _batch_result(item: BatchItem, effects: Effects) -> BatchResult:
    doc = effects.document
    if effects.error is not None:
        return _refused(item.device_id, effects.error, doc)
    assert doc is not None
    return BatchResult(
        device_id=item.device_id,
        status=201 if effects.created else 200,
        version=doc.version,
        unchanged=effects.unchanged,
        configurations=doc.configurations,
    )


def _refused(device_id: str, error: TwinError, doc: TwinDocument | None) -> BatchResult:
    return BatchResult(
        device_id=device_id,
        status=int(error.code),
        version=doc.version if doc is not None else None,
        configurations=doc.configurations if doc is not None else None,
        message=error.message,
    )


@router.get("/{device_id}", response_model=TwinView)
async def get_twin(state: State, caller: Caller, device_id: str, shadow: ShadowQuery = "") -> TwinView:
    """The twin: desired, reported, delta, metadata, version, tags."""
    address = _address(device_id, shadow)
    stored = await state.get(address.key)
    if stored.value is None:
        raise not_found(f"no twin exists for {device_id}")
    doc = TwinDocument.model_validate(stored.value)
    if not doc.exists:
        raise not_found(f"no twin exists for {device_id}")
    check_in_scope(f"device {device_id}", doc.tags, caller.scope)
    return twin_view(doc)


@router.put("/{device_id}", status_code=201, response_model=TwinView)
async def create_twin(writer: Writer, caller: Caller, device_id: str, shadow: ShadowQuery = "") -> TwinView:
    """Register an empty twin; 409 if it exists."""
    return twin_view(await _submit(writer, CreateTwin(_address(device_id, shadow), caller.scope)))


async def _require_strict_json(request: Request) -> Any:
    """The body as a JSON document, under the device payload rules: FastAPI's parser takes `NaN`,
    `Infinity` and lone surrogates, which no stored document may hold (400), and so is a body
    that is not JSON."""
    document, encoding = decode_payload(await request.body())
    if encoding is not WireEncoding.JSON:
        raise bad_request("the body must be JSON")
    return document


@router.patch("/{device_id}/desired", response_model=TwinView)
async def patch_desired(
    request: Request,
    writer: Writer,
    caller: Caller,
    device_id: str,
    patch: Annotated[JsonObject, Body(description="partial desired state; null deletes a key")],
    shadow: ShadowQuery = "",
    if_match: IfMatch = None,
) -> TwinView:
    """Merge a desired-state patch; `If-Match: "<version>"` makes it conditional (409)."""
    await _require_strict_json(request)
    command = DesiredPatch(_address(device_id, shadow), patch, _expected_version(if_match), caller.scope)
    return twin_view(await _submit(writer, command))


@router.patch("/{device_id}/tags", response_model=TwinView)
async def patch_tags(
    request: Request,
    writer: Writer,
    caller: Caller,
    device_id: str,
    patch: Annotated[JsonObject, Body(description="tags to set; null deletes one")],
    shadow: ShadowQuery = "",
    if_match: IfMatch = None,
) -> TwinView:
    """Merge tags (never sent to the device)."""
    await _require_strict_json(request)
    command = TagPatch(_address(device_id, shadow), patch, _expected_version(if_match), caller.scope)
    return twin_view(await _submit(writer, command))


@router.delete("/{device_id}", response_model=DeletedTwin)
async def delete_twin(
    writer: Writer, caller: Caller, device_id: str, shadow: ShadowQuery = "", if_match: IfMatch = None
) -> DeletedTwin:
    """Delete the twin; its version is kept, so a re-created twin continues above it."""
    command = DeleteTwin(_address(device_id, shadow), _expected_version(if_match), caller.scope)
    doc = await _submit(writer, command)
    return DeletedTwin(device_id=doc.device_id, shadow=doc.shadow, version=doc.version)
