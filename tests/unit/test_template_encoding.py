"""Template-driven encoding: any JSON document round-trips through any template (the same document
after decoding), a document that matches its template costs only its values, and malformed
payloads are 400s."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.documents import messages, update_request
from services.contracts.templates import MAX_TEMPLATES_PER_TWIN, FieldKind, TemplateField, WireTemplate
from services.contracts.topics import DEFAULT, Operation, TwinAddress
from services.contracts.wire import WireEncoding, encode_payload, sniff
from services.domain.errors import TwinError
from services.domain.json_values import json_equal
from services.domain.twin.commands import Context, DeviceRequest, apply_command
from services.domain.twin.document import TwinDocument
from services.domain.twin.limits import Limits
from services.domain.twin.template import decode, encode, is_templated, template_for

keys = st.text(alphabet="abcd", min_size=1, max_size=2)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(places=2, min_value=-10_000, max_value=10_000, allow_nan=False).map(float),
    st.text(max_size=4),
    st.uuids().map(str),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3))
)
documents: st.SearchStrategy[dict[str, Any]] = st.dictionaries(keys, values, max_size=4)
fields = st.builds(
    TemplateField,
    path=st.lists(keys, min_size=1, max_size=3),
    kind=st.sampled_from(list(FieldKind)),
    scale=st.integers(0, 6),
)
templates = st.builds(WireTemplate, name=st.just("t"), version=st.integers(1, 5), fields=st.lists(fields, min_size=1))


def same(a: Any, b: Any) -> bool:
    """JSON equality that also tells 1 from 1.0 and 0.0 from -0.0 (the same text after decoding)."""
    if not json_equal(a, b):
        return False
    if isinstance(a, dict):
        return all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (not isinstance(a, float) or repr(a) == repr(b))


@settings(max_examples=400, deadline=None)
@given(documents, templates)
def test_any_document_round_trips_through_any_template(document: dict[str, Any], template: WireTemplate) -> None:
    payload = encode(document, template)
    assert is_templated(payload)
    assert same(decode(payload, {template.name: template}), document)


def _paths(value: Any, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every path into `value`'s objects (each key at every depth)."""
    found: list[list[str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append([*path, key])
            found.extend(_paths(item, (*path, key)))
    return found


@settings(max_examples=500, deadline=None)
@given(st.data(), st.dictionaries(keys, values, min_size=1, max_size=4))
def test_any_document_round_trips_through_templates_naming_its_own_paths(
    data: st.DataObject, document: dict[str, Any]
) -> None:
    # Fields on the document's own paths (leaves, objects, ancestors of other fields) or one key
    # below them, with any kind and scale, so packing and the extras are exercised where they meet.
    chosen = data.draw(st.lists(st.sampled_from(_paths(document)), min_size=1, max_size=6))
    chosen = [[*p, *data.draw(st.lists(keys, max_size=1))] for p in chosen]  # some reach below the document
    kinds = data.draw(st.lists(st.sampled_from(list(FieldKind)), min_size=len(chosen), max_size=len(chosen)))
    scales = data.draw(st.lists(st.integers(0, 6), min_size=len(chosen), max_size=len(chosen)))
    template = WireTemplate(
        name="own",
        version=1,
        fields=[TemplateField(path=p, kind=k, scale=n) for p, k, n in zip(chosen, kinds, scales, strict=True)],
    )
    assert same(decode(encode(document, template), {template.name: template}), document)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=4))
def test_a_document_round_trips_through_its_own_template_with_no_extras(document: dict[str, Any]) -> None:
    template = template_for(document, "own", 1)
    payload = encode(document, template)
    assert len(cbor2.loads(payload)) == 3 + len(template.fields)  # every value, no extras, no keys
    assert same(decode(payload, {template.name: template}), document)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=4), documents)
def test_another_document_round_trips_through_a_template_made_for_the_first(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    template = template_for(first, "first", 2)
    assert same(decode(encode(second, template), {template.name: template}), second)


def test_templated_payloads_are_told_apart_from_json_and_cbor_maps() -> None:
    document = update_request()
    assert not is_templated(encode_payload(document, WireEncoding.JSON))
    assert not is_templated(encode_payload(document, WireEncoding.CBOR))
    assert sniff(encode_payload(document, WireEncoding.CBOR)) is WireEncoding.CBOR


def test_the_gateway_report_is_at_least_sixty_percent_smaller_than_json() -> None:
    # A size property (not a timing): the bar for template-driven encoding.
    for name, message in messages().items():
        template = template_for(message, "gateway", 1)
        templated = encode(message, template)
        assert same(decode(templated, {template.name: template}), message), name
    report = update_request()
    json_bytes = len(encode_payload(report, WireEncoding.JSON))
    templated = len(encode(report, template_for(report, "gateway", 1)))
    assert templated <= 0.4 * json_bytes, (templated, json_bytes)


def test_decimal_and_uuid_fields_pack_small() -> None:
    template = WireTemplate(
        name="t",
        version=3,
        fields=[
            TemplateField(path=["t"], kind=FieldKind.DECIMAL, scale=2),
            TemplateField(path=["id"], kind=FieldKind.UUID),
        ],
    )
    payload = encode({"t": 21.75, "id": "5f0c9d2e-7a41-4b8e-9c3d-2e6f1a8b4c07"}, template)
    assert cbor2.loads(payload) == ["t", 3, b"\x03", 2175, bytes.fromhex("5f0c9d2e7a414b8e9c3d2e6f1a8b4c07")]
    # Values that do not fit the kind are sent as they are.
    odd = {"t": 1 / 3, "id": "not-a-uuid"}
    assert same(decode(encode(odd, template), {template.name: template}), odd)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80", "must be [name, version, presence"),
        (cbor2.dumps(["t", 2, b"\x01", 1]), "at version 1, not 2"),
        (cbor2.dumps(["u", 1, b"\x01", 1]), "no template 'u' is registered"),
        (cbor2.dumps(["t", 1, b"\x04", 1]), "more fields than"),
        (cbor2.dumps(["t", 1, b"\x01"]), "1 values expected"),
        (cbor2.dumps(["t", 1, b"\x01", 1, 2]), "must be a map of the extras"),
        (cbor2.dumps(["t", 1, b"\x01", b"raw"]), "no JSON equivalent"),
        (b"\x81", "not valid CBOR"),
    ],
)
def test_malformed_payloads_are_400(payload: bytes, message: str) -> None:
    template = WireTemplate(name="t", version=1, fields=[TemplateField(path=["a"]), TemplateField(path=["b"])])
    with pytest.raises(TwinError) as raised:
        decode(payload, {template.name: template})
    assert raised.value.code == 400 and message in raised.value.message


# --- the twin-store: registration, then keyless updates -------------------------------------------

LIMITS = Limits()
ADDRESS = TwinAddress("gw-1")


def run(docs: dict[str, TwinDocument | None], op: Operation, payload: bytes, now: float = 1000.0) -> Any:
    return apply_command(docs, DeviceRequest(ADDRESS, op, payload), Context(DEFAULT, LIMITS, now, {}))


def register(docs: dict[str, TwinDocument | None], template: WireTemplate, **extra: Any) -> Any:
    body = {**template.model_dump(mode="json"), **extra}
    return run(docs, Operation.TEMPLATE, encode_payload(body, WireEncoding.JSON))


def test_a_registered_template_lets_the_device_send_values_without_keys() -> None:
    docs: dict[str, TwinDocument | None] = {}
    report = update_request()
    template = template_for(report, "gateway", 1)
    registered = register(docs, template, clientToken="r1")
    assert registered.error is None
    [(topic, answer, _)] = registered.replies
    assert topic == "gw-1/state/template/accepted" and answer["version"] == 1 and answer["clientToken"] == "r1"
    created = docs[ADDRESS.key]
    assert created is not None and created.exists and created.version == 1  # a new twin, created empty

    effects = run(docs, Operation.UPDATE, encode(report, template))
    assert effects.error is None, effects.error
    [(topic, accepted, wire)] = effects.replies
    assert topic == "gw-1/state/update/accepted" and wire is WireEncoding.CBOR
    assert accepted["clientToken"] == report["clientToken"]
    twin = docs[ADDRESS.key]
    assert twin is not None and twin.version == 2 and twin.wire is WireEncoding.CBOR
    assert same(twin.reported, report["state"]["reported"])  # the same document as sent in JSON
    # A redelivery is answered again, not applied.
    again = run(docs, Operation.UPDATE, encode(report, template))
    assert again.error is None and docs[ADDRESS.key] is twin


def test_registration_is_versioned() -> None:
    docs: dict[str, TwinDocument | None] = {}
    v1 = WireTemplate(name="t", version=1, fields=[TemplateField(path=["state", "reported", "a"])])
    assert register(docs, v1).error is None
    assert register(docs, v1).error is None  # the same again (a redelivery): accepted
    changed = WireTemplate(name="t", version=1, fields=[TemplateField(path=["state", "reported", "b"])])
    refused = register(docs, changed)
    assert refused.error is not None and refused.error.code == 409
    [(topic, _, _)] = refused.replies
    assert topic == "gw-1/state/template/rejected"
    v2 = changed.model_copy(update={"version": 2})
    assert register(docs, v2).error is None
    stale = run(docs, Operation.UPDATE, encode({"state": {"reported": {"a": 1}}}, v1))
    assert stale.error is not None and "version 2, not 1" in stale.error.message
    fresh = run(docs, Operation.UPDATE, encode({"state": {"reported": {"b": 1}}}, v2))
    assert fresh.error is None
    twin = docs[ADDRESS.key]
    assert twin is not None and twin.reported == {"b": 1}


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ({"name": "t", "version": 0, "fields": [{"path": ["a"]}]}, 400, "version"),
        ({"name": "t", "version": 1, "fields": []}, 400, "fields"),
        ({"name": "t", "version": 1, "fields": [{"path": ["a"], "kind": "nope"}]}, 400, "kind"),
        ({"name": "t", "version": 1, "fields": [{"path": ["a"]}], "extra": 1}, 400, "extra"),
        ([1, 2], 400, "must be an object"),
    ],
)
def test_bad_templates_are_refused_and_change_nothing(body: Any, code: int, fragment: str) -> None:
    docs: dict[str, TwinDocument | None] = {}
    effects = run(docs, Operation.TEMPLATE, encode_payload(body, WireEncoding.JSON))  # type: ignore[arg-type]
    assert effects.error is not None and effects.error.code == code and fragment in effects.error.message
    assert docs == {}


def test_values_for_an_unregistered_template_are_refused() -> None:
    docs: dict[str, TwinDocument | None] = {}
    template = template_for(update_request(), "gateway", 1)
    effects = run(docs, Operation.UPDATE, encode(update_request(), template))
    assert effects.error is not None and effects.error.code == 400 and "no template 'gateway'" in effects.error.message
    [(topic, _, wire)] = effects.replies
    assert topic == "gw-1/state/update/rejected" and wire is WireEncoding.CBOR
    assert docs == {}


def test_a_twin_keeps_at_most_a_few_templates() -> None:
    docs: dict[str, TwinDocument | None] = {}
    for n in range(MAX_TEMPLATES_PER_TWIN):
        assert register(docs, WireTemplate(name=f"t{n}", version=1, fields=[TemplateField(path=["a"])])).error is None
    effects = register(docs, WireTemplate(name="more", version=1, fields=[TemplateField(path=["a"])]))
    assert effects.error is not None and effects.error.code == 413
