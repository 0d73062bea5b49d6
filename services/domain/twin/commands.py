"""Commands the twin-store applies, and how each turns into a new document, replies and events.

Everything here is decided from the documents already read; the batch writer (`twin_store/writer.py`) does
the I/O around it. Refusals become `/rejected` replies (device requests) or errors (REST).

Device requests are JSON or CBOR (`services.contracts.wire`); every reply goes out in the request's
encoding, told by its first byte (so a payload that cannot be decoded is answered in JSON unless
it starts like a CBOR map). An empty payload (a bare `get` or `delete`) says nothing, so it is
answered in the encoding the twin remembers for the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.contracts.events import DeltaRequested, TwinChanged
from services.contracts.templates import MAX_TEMPLATES_PER_TWIN, WireTemplate
from services.contracts.topics import Operation, Reply, TopicProfile, TwinAddress
from services.contracts.wire import NotJsonCompatible, WireEncoding, decode_payload, sniff
from services.domain.access import UNSCOPED, Scope, check_in_scope
from services.domain.errors import (
    TwinError,
    bad_request,
    conflict,
    invalid,
    not_found,
    too_large,
    too_many_requests,
)
from services.domain.json_values import JsonObject
from services.domain.twin.document import TwinDocument
from services.domain.twin.limits import Limits
from services.domain.twin.ratelimit import TokenBucket, take_token
from services.domain.twin.template import decode as decode_templated
from services.domain.twin.template import is_templated, template_value
from services.domain.twin.update import (
    BatchWrite,
    UpdateOutcome,
    apply_batch_write,
    apply_delete,
    apply_update,
    create_twin,
    parse_client_token,
    parse_update,
    parse_version,
    patch_desired,
    patch_tags,
)


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A message from the device broker: `update`, `get` or `delete` on one twin."""

    address: TwinAddress
    op: Operation
    payload: bytes


@dataclass(frozen=True, slots=True)
class DesiredPatch:
    address: TwinAddress
    patch: JsonObject
    expected_version: int | None = None
    scope: Scope = field(default_factory=lambda: UNSCOPED)
    """The caller's tag scope: a twin outside it is refused (403), before and after the change."""


@dataclass(frozen=True, slots=True)
class TagPatch:
    address: TwinAddress
    patch: JsonObject
    expected_version: int | None = None
    scope: Scope = field(default_factory=lambda: UNSCOPED)


@dataclass(frozen=True, slots=True)
class DeleteTwin:
    address: TwinAddress
    expected_version: int | None = None
    scope: Scope = field(default_factory=lambda: UNSCOPED)


@dataclass(frozen=True, slots=True)
class CreateTwin:
    """Register an empty twin (a device provisioned before it first reports)."""

    address: TwinAddress
    scope: Scope = field(default_factory=lambda: UNSCOPED)


@dataclass(frozen=True, slots=True)
class BatchWriteCommand:
    """One item of a batch write (the rollout app's desired keys and marks; bulk provisioning).
    A system write: no per-twin rate limit."""

    address: TwinAddress
    write: BatchWrite
    scope: Scope = field(default_factory=lambda: UNSCOPED)


Command = DeviceRequest | DesiredPatch | TagPatch | DeleteTwin | CreateTwin | BatchWriteCommand


@dataclass(slots=True)
class Effects:
    """What applying one command produced."""

    document: TwinDocument | None = None
    error: TwinError | None = None
    replies: list[tuple[str, dict[str, Any], WireEncoding]] = field(default_factory=list)
    """(topic, payload, encoding) for the device."""
    events: list[TwinChanged | DeltaRequested] = field(default_factory=list)
    created: bool = False
    """A batch write created the twin."""
    unchanged: bool = False
    """A batch write changed nothing (no new version, no event)."""


@dataclass(slots=True)
class Context:
    profile: TopicProfile
    limits: Limits
    now: float
    buckets: dict[str, TokenBucket]


def decode_request(payload: bytes, limits: Limits, doc: TwinDocument | None = None) -> Any:
    """Decode a device request body: a JSON object or CBOR map (empty for get/delete), or values
    sent with one of the twin's registered templates; 400/413 otherwise. The size limit is on the
    wire bytes; the state limit later on the document."""
    if len(payload) > limits.max_payload_bytes:
        raise too_large(f"payload is {len(payload)} bytes; at most {limits.max_payload_bytes} allowed")
    if not payload or payload.isspace():
        return {}
    if is_templated(payload):
        stored = doc.templates if doc is not None else {}
        return decode_templated(payload, {name: WireTemplate.model_validate(t) for name, t in stored.items()})
    return decode_payload(payload)[0]


def request_encoding(payload: bytes) -> WireEncoding | None:
    """The encoding a request's payload shows (by its first byte); None for an empty payload. A
    templated payload is CBOR (and its device is answered in CBOR)."""
    if not payload or payload.isspace():
        return None
    return WireEncoding.CBOR if is_templated(payload) else sniff(payload)


def apply_command(docs: dict[str, TwinDocument | None], command: Command, ctx: Context) -> Effects:
    """Apply one command to `docs` (updated in place) and say what to reply and emit."""
    if isinstance(command, DeviceRequest):
        return _device_request(docs, command, ctx)
    key = command.address.key
    now = int(ctx.now)
    effects = Effects()
    try:
        doc = docs.get(key)
        if command.scope and not isinstance(command, CreateTwin):
            _check_scope(command.address, doc, command.scope)
        if isinstance(command, DesiredPatch):
            _take(ctx, key)
            outcome = patch_desired(
                doc,
                command.address.device_id,
                command.address.shadow,
                command.patch,
                command.expected_version,
                now,
                ctx.limits,
            )
            _changed(docs, key, outcome, "desired", None, effects)
        elif isinstance(command, BatchWriteCommand):
            _batch_write(docs, command, now, ctx, effects)
        elif isinstance(command, CreateTwin):
            created = create_twin(doc, command.address.device_id, command.address.shadow, now)
            docs[key] = created
            effects.document = created
            effects.events.append(_event(created, None, created, "update", None))
        elif isinstance(command, TagPatch):
            current = patch_tags(doc, command.patch, command.expected_version, now)
            docs[key] = current
            effects.document = current
            effects.events.append(_event(current, doc, current, "tags", None))
        else:
            tombstone, _ = apply_delete(doc, command.expected_version, None, now)
            docs[key] = tombstone
            effects.document = tombstone
            effects.events.append(_event(tombstone, doc, None, "delete", None))
        if command.scope and effects.document is not None:
            _check_scope(command.address, effects.document, command.scope)
    except TwinError as error:
        if docs.get(key) is not doc:  # refused after the change (it left the scope): undo it
            docs[key] = doc
            effects.events.clear()
            effects.document = doc if doc is not None and doc.exists else None
            effects.created = effects.unchanged = False
        effects.error = error
    return effects


def _check_scope(address: TwinAddress, doc: TwinDocument | None, scope: Scope) -> None:
    """403 unless the twin (as it is, or would become) is within the caller's scope."""
    check_in_scope(f"device {address.device_id}", doc.tags if doc is not None and doc.exists else None, scope)


def _batch_write(
    docs: dict[str, TwinDocument | None], command: BatchWriteCommand, now: int, ctx: Context, effects: Effects
) -> None:
    """Apply one batch item (no rate limit: a system write). A refused item leaves the current twin
    in `effects.document` (so its answer can tell the version); an unchanged one emits nothing."""
    key = command.address.key
    doc = docs.get(key)
    effects.document = doc if doc is not None and doc.exists else None
    batch = apply_batch_write(doc, command.address.device_id, command.write, now, ctx.limits)
    effects.document, effects.created, effects.unchanged = batch.current, batch.created, batch.unchanged
    if batch.unchanged:
        return
    docs[key] = batch.current
    cause = "desired" if batch.desired_changed else "configuration"
    effects.events.append(_event(batch.current, batch.previous, batch.current, cause, None))


def _take(ctx: Context, key: str) -> None:
    allowed, ctx.buckets[key] = take_token(
        ctx.buckets.get(key), ctx.now, ctx.limits.rate_per_second, ctx.limits.rate_burst
    )
    if not allowed:
        raise too_many_requests(f"more than {ctx.limits.rate_per_second:g} requests/s for this twin; slow down")


def _device_request(docs: dict[str, TwinDocument | None], req: DeviceRequest, ctx: Context) -> Effects:
    key = req.address.key
    now = int(ctx.now)
    effects = Effects()
    token: str | None = None
    doc = docs.get(key)
    shown = request_encoding(req.payload)
    encoding = shown or (doc.wire if doc is not None else WireEncoding.JSON)
    try:
        try:
            body = decode_request(req.payload, ctx.limits, doc)
        except NotJsonCompatible as error:
            token = _token_best_effort(error.value, ctx.limits)
            raise
        token = _token_best_effort(body, ctx.limits)
        if token is None:
            parse_client_token(body, ctx.limits)  # raises for a malformed token
        _take(ctx, key)
        if req.op is Operation.UPDATE:
            outcome = apply_update(
                doc,
                req.address.device_id,
                req.address.shadow,
                parse_update(body, ctx.limits),
                now,
                ctx.limits,
            )
            if shown is not None and not outcome.replayed and outcome.current.wire is not shown:
                outcome = dataclasses.replace(outcome, current=outcome.current.model_copy(update={"wire": shown}))
            _changed(docs, key, outcome, "update", token, effects)
            effects.replies.append(
                (ctx.profile.reply_topic(req.address, req.op, Reply.ACCEPTED), outcome.accepted, encoding)
            )
        elif req.op is Operation.TEMPLATE:
            registered, answer = register_template(doc, req.address, body, now)
            if registered is not doc:
                docs[key] = registered
                if doc is None or not doc.exists:  # a new (empty) twin; a template alone is no version
                    effects.events.append(_event(registered, doc, registered, "update", token))
            effects.document = registered
            if token is not None:
                answer["clientToken"] = token
            effects.replies.append((ctx.profile.reply_topic(req.address, req.op, Reply.ACCEPTED), answer, encoding))
        elif req.op is Operation.GET:
            if doc is None or not doc.exists:
                raise not_found(f"no twin exists for {req.address.device_id}")
            if doc.wire is not encoding:
                # The device switched encodings: remembered without a new version.
                doc = docs[key] = doc.model_copy(update={"wire": encoding})
            view = doc.state_view()
            if token is not None:
                view["clientToken"] = token
            effects.document = doc
            effects.replies.append((ctx.profile.reply_topic(req.address, req.op, Reply.ACCEPTED), view, encoding))
            effects.events.append(
                DeltaRequested(
                    device_id=doc.device_id,
                    shadow=doc.shadow,
                    version=doc.version,
                    client_token=token,
                    current=doc.snapshot(),
                    wire=encoding,
                )
            )
        else:
            expected = parse_version(body) if isinstance(body, dict) else None
            tombstone, accepted = apply_delete(doc, expected, token, now)
            if tombstone.wire is not encoding:
                tombstone = tombstone.model_copy(update={"wire": encoding})
            docs[key] = tombstone
            effects.document = tombstone
            effects.replies.append((ctx.profile.reply_topic(req.address, req.op, Reply.ACCEPTED), accepted, encoding))
            effects.events.append(_event(tombstone, doc, None, "delete", token))
    except TwinError as error:
        effects.error = error
        rejected: dict[str, Any] = {"code": int(error.code), "message": error.message, "timestamp": now}
        if token is not None:
            rejected["clientToken"] = token
        effects.replies.append((ctx.profile.reply_topic(req.address, req.op, Reply.REJECTED), rejected, encoding))
    return effects


def register_template(
    doc: TwinDocument | None, address: TwinAddress, body: Any, now: int
) -> tuple[TwinDocument, dict[str, Any]]:
    """Keep a template the device registers (`{"name", "version", "fields"}`, with an optional
    clientToken): a higher version replaces the stored one; the same version with the same fields
    is answered again (a redelivery); anything else is a 409. A twin that does not exist yet is
    created empty. Returns the twin (the same object when nothing changed) and the answer."""
    if not isinstance(body, dict):
        raise bad_request("a template must be an object: name, version, fields")
    fields = {k: v for k, v in body.items() if k != "clientToken"}
    try:
        template = WireTemplate.model_validate(fields)
    except ValidationError as error:
        raise invalid("template", error, "$") from None
    current = doc if doc is not None and doc.exists else create_twin(doc, address.device_id, address.shadow, now)
    value = template_value(template)
    stored = current.templates.get(template.name)
    answer: dict[str, Any] = {"name": template.name, "version": template.version, "timestamp": now}
    if stored is not None and stored["version"] >= template.version:
        if stored == value:
            return current, answer
        raise conflict(
            f"template {template.name!r} is registered at version {stored['version']}; "
            "register changed fields under a higher version"
        )
    if stored is None and len(current.templates) >= MAX_TEMPLATES_PER_TWIN:
        raise too_large(f"a twin keeps at most {MAX_TEMPLATES_PER_TWIN} templates")
    registered = current.model_copy(update={"templates": {**current.templates, template.name: value}})
    return registered, answer


def _token_best_effort(body: Any, limits: Limits) -> str | None:
    """The clientToken to echo in a rejection even when the token itself is the problem's cause."""
    try:
        return parse_client_token(body, limits)
    except TwinError:
        return None


def _changed(
    docs: dict[str, TwinDocument | None],
    key: str,
    outcome: UpdateOutcome,
    cause: str,
    token: str | None,
    effects: Effects,
) -> None:
    effects.document = outcome.current
    if outcome.replayed:
        # A redelivered request: nothing changes; re-emit the change only if it is still current,
        # so an event lost to a crash between write and publish is recovered.
        if outcome.current.version_for_token(token) == outcome.current.version:
            effects.events.append(_event(outcome.current, None, outcome.current, cause, token))
        return
    docs[key] = outcome.current
    effects.events.append(_event(outcome.current, outcome.previous, outcome.current, cause, token))


def _event(
    changed: TwinDocument,
    previous: TwinDocument | None,
    current: TwinDocument | None,
    cause: Any,
    token: str | None,
) -> TwinChanged:
    return TwinChanged(
        device_id=changed.device_id,
        shadow=changed.shadow,
        version=changed.version,
        timestamp=changed.timestamp,
        cause=cause,
        client_token=token,
        previous=previous.snapshot() if previous is not None and previous.exists else None,
        current=current.snapshot() if current is not None else None,
        wire=changed.wire,
        tags=current.tags if current is not None and current.exists else {},
        configurations=current.configurations if current is not None and current.exists else {},
    )
