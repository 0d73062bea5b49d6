"""Wire encodings: JSON and JSON-compatible CBOR carry the same documents; the twin-store answers
each request in its encoding and remembers the device's; the delta app follows it."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contracts.events import DeltaRequested, TwinChanged
from services.contracts.topics import DEFAULT, Operation, TwinAddress
from services.contracts.wire import NotJsonCompatible, WireEncoding, decode_payload, encode_payload, sniff
from services.delta.fanout import device_encodings
from services.domain.errors import ErrorCode, TwinError
from services.domain.json_values import json_equal
from services.domain.twin.commands import Context, DesiredPatch, DeviceRequest, apply_command
from services.domain.twin.document import TwinDocument
from services.domain.twin.limits import Limits

JSON, CBOR = WireEncoding.JSON, WireEncoding.CBOR

# --- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", JSON),
        (b"{}", JSON),
        (b'  {"a":1}', JSON),
        (b"\xa0", CBOR),  # empty map
        (b"\xa1\x61a\x01", CBOR),
        (b"\xbf\xff", CBOR),  # indefinite-length map
        (b"\x80", JSON),  # a CBOR array is not a request: treated (and refused) as JSON
        (b"\xc0", JSON),  # a tag
        (b"\x00garbage", JSON),
    ],
)
def test_sniff_by_first_byte(payload: bytes, expected: WireEncoding) -> None:
    assert sniff(payload) is expected


def test_content_types() -> None:
    assert JSON.content_type == "application/json" and CBOR.content_type == "application/cbor"
    assert WireEncoding("cbor") is CBOR


@pytest.mark.parametrize(
    ("payload", "value", "encoding"),
    [
        (b'{"state":{"reported":{"t":21.5}}}', {"state": {"reported": {"t": 21.5}}}, JSON),
        (b'\xef\xbb\xbf{"a":1}', {"a": 1}, JSON),  # UTF-8 BOM, as json.loads allows
        (b'{"a":"\\ud83d\\ude00"}', {"a": "\U0001f600"}, JSON),  # a surrogate pair is fine
        (cbor2.dumps({"state": {"reported": {"t": 21.5}}}), {"state": {"reported": {"t": 21.5}}}, CBOR),
        (bytes.fromhex("bf6161f5ff"), {"a": True}, CBOR),  # indefinite-length map
        (bytes.fromhex("a16161c24101"), {"a": 1}, CBOR),  # a small bignum is just an integer
        (bytes.fromhex("a16161d9d9f701"), {"a": 1}, CBOR),  # self-described CBOR tag is transparent
        (bytes.fromhex("a16161d81c01"), {"a": 1}, CBOR),  # a shareable scalar is just a value
    ],
)
def test_decode_valid_payloads(payload: bytes, value: Any, encoding: WireEncoding) -> None:
    decoded, got = decode_payload(payload)
    assert json_equal(decoded, value) and got is encoding


def _cbor(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


# Each: a CBOR map holding something JSON cannot, and the path the 400 must name.
INCOMPATIBLE = [
    pytest.param(cbor2.dumps({"state": {"reported": {"blob": b"\x00\x01"}}}), "$.state.reported.blob", "byte string"),
    pytest.param(cbor2.dumps({"state": {"reported": {"l": [1, bytearray(b"x")]}}}), "$.state.reported.l[1]", "byte"),
    pytest.param(cbor2.dumps({"a": cbor2.CBORTag(4242, "x")}), "$.a", "tag 4242"),
    pytest.param(_cbor("a1 6161 c1 1a514b67b0"), "$.a", "tagged item"),  # epoch date/time (tag 1)
    pytest.param(_cbor("a1 6161 f7"), "$.a", "undefined"),
    pytest.param(_cbor("a1 6161 f0"), "$.a", "simple value 16"),
    pytest.param(_cbor("a1 6161 a1 01 02"), "$.a", "map keys must be text strings"),
    pytest.param(_cbor("a1 6161 a1 41 6b 02"), "$.a", "map keys must be text strings"),
    pytest.param(_cbor("a1 6161 f97e00"), "$.a", "finite"),  # NaN (half)
    pytest.param(_cbor("a1 6161 fa7f800000"), "$.a", "finite"),  # +Infinity (single)
    pytest.param(_cbor("a1 6161 fbfff0000000000000"), "$.a", "finite"),  # -Infinity (double)
    pytest.param(_cbor("a1 6161 c2 49 010000000000000000"), "$.a", "64 bits"),  # 2**64: bignum
    pytest.param(_cbor("a1 6161 c3 49 010000000000000000"), "$.a", "64 bits"),  # -2**64 - 1
    pytest.param(_cbor("a1 6161 d81c 81 d81d 00"), "$.a[0]", "shared references"),  # a cycle
    pytest.param(_cbor("a1 6161 83 d81c 80 d81d 00 d81d 00"), "$.a[1]", "shared references"),  # a DAG
    pytest.param(_cbor("a1 6161 d9 0102 82 01 02"), "$.a", "tagged item (decoded as set)"),  # tag 258
]


@pytest.mark.parametrize(("payload", "path", "fragment"), INCOMPATIBLE)
def test_cbor_without_a_json_equivalent_is_a_400_naming_the_path(payload: bytes, path: str, fragment: str) -> None:
    assert sniff(payload) is CBOR
    with pytest.raises(NotJsonCompatible) as info:
        decode_payload(payload)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.message.startswith(f"{path}: "), info.value.message
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (_cbor("a2 6161"), "not valid CBOR"),  # truncated
        (_cbor("a1 6161 01 ff"), "1 byte(s) after the map"),  # trailing bytes
        (_cbor("a1 6161 01") + cbor2.dumps({"b": 2}), "after the map"),  # two data items
        (_cbor("a1 61 ff 01"), "not valid CBOR"),  # a text string that is not UTF-8
        (_cbor("a1 6161 1c"), "not valid CBOR"),  # reserved additional information
        (_cbor("a1 6161") + b"\x81" * 500 + b"\x01", "not valid CBOR"),  # nested past the decoder's depth
        (_cbor("bb ffffffffffffffff"), "not valid CBOR"),  # claims 2**64-1 pairs
        (b"{not json", "not valid JSON"),
        (b'{"a":NaN}', "NaN is not a JSON number"),
        (b'{"a":-Infinity}', "Infinity is not a JSON number"),
        (b'{"a":1e400}', "out of range"),
        (b'{"a":"\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"a":1} x', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"\x00\x01", "not valid JSON (or a CBOR map)"),
    ],
)
def test_malformed_payloads_are_400(payload: bytes, fragment: str) -> None:
    with pytest.raises(TwinError) as info:
        decode_payload(payload)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert fragment in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        ("f93e00", 1.5),  # half
        ("f98000", -0.0),
        ("f97bff", 65504.0),  # largest half
        ("f90001", 5.960464477539063e-08),  # smallest half subnormal
        ("fa47c35000", 100000.0),  # single
        ("fa7f7fffff", 3.4028234663852886e38),  # largest single
        ("fb4035b33333333333", 21.7),  # double
        ("fb48078287f49c4a1d", 1e39),
    ],
)
def test_cbor_floats_of_every_width_are_accepted_and_sent_back_exactly(encoded: str, value: float) -> None:
    decoded = decode_payload(_cbor("a1 6176") + bytes.fromhex(encoded))[0]["v"]
    assert decoded == value and math.copysign(1, decoded) == math.copysign(1, value)
    sent = encode_payload({"v": decoded}, CBOR)
    assert sent[3] == 0xFB and len(sent) == 12  # 64-bit on the way out (see encode_payload)
    back = decode_payload(sent)[0]["v"]
    assert back == value and math.copysign(1, back) == math.copysign(1, value)


def test_cbor_keeps_key_order_and_types() -> None:
    value = {"z": 1, "a": 1.0, "m": True, "n": None, "l": [1, "x"], "big": 2**64 - 1, "neg": -(2**64)}
    decoded = decode_payload(encode_payload(value, CBOR))[0]
    assert list(decoded) == list(value)
    assert type(decoded["a"]) is float and type(decoded["z"]) is int and decoded["m"] is True
    assert decoded == value


# Documents JSON can carry (and so CBOR must): no NaN/Infinity, text without lone surrogates,
# integers in 64 bits.
json_keys = st.text(st.characters(codec="utf-8"), min_size=0, max_size=8)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(json_keys, children, max_size=4)),
    max_leaves=25,
)
json_documents = st.dictionaries(json_keys, json_values, max_size=6)


@given(json_documents)
def test_round_trip_through_both_encodings_gives_the_same_document(document: dict[str, Any]) -> None:
    decoded = {}
    for encoding in (JSON, CBOR):
        payload = encode_payload(document, encoding)
        assert sniff(payload) is encoding
        decoded[encoding], got = decode_payload(payload)
        assert got is encoding
        assert json_equal(decoded[encoding], document)
    assert json_equal(decoded[JSON], decoded[CBOR])
    # Re-encoding what was decoded gives the same bytes (nothing is lost or reinterpreted).
    assert encode_payload(decoded[CBOR], CBOR) == encode_payload(document, CBOR)
    assert encode_payload(decoded[JSON], JSON) == encode_payload(document, JSON)


@given(json_documents)
def test_json_text_decoded_then_sent_as_cbor_is_the_same_document(document: dict[str, Any]) -> None:
    from_json = decode_payload(encode_payload(document, JSON))[0]
    assert json_equal(decode_payload(encode_payload(from_json, CBOR))[0], document)


# --- twin-store: replies in the request's encoding, the device's encoding remembered ----------

LIMITS = Limits(max_state_bytes=1024)
ADDRESS = TwinAddress("dev1")


def run(docs: dict[str, TwinDocument | None], op: Operation, payload: bytes, now: float = 1000.0) -> Any:
    ctx = Context(DEFAULT, LIMITS, now, {})
    return apply_command(docs, DeviceRequest(ADDRESS, op, payload), ctx)


def update(reported: dict[str, Any], encoding: WireEncoding, **extra: Any) -> bytes:
    return encode_payload({"state": {"reported": reported}, **extra}, encoding)


def test_cbor_update_is_answered_in_cbor_and_remembered() -> None:
    docs: dict[str, TwinDocument | None] = {}
    effects = run(docs, Operation.UPDATE, update({"t": 21.5}, CBOR, clientToken="c1"))
    assert effects.error is None
    [(topic, accepted, encoding)] = effects.replies
    assert topic == "dev1/state/update/accepted" and encoding is CBOR and accepted["clientToken"] == "c1"
    doc = docs[ADDRESS.key]
    assert doc is not None and doc.wire is CBOR and doc.version == 1
    [event] = effects.events
    assert isinstance(event, TwinChanged) and event.wire is CBOR
    assert "wire" not in (event.current or {})  # snapshots (the /documents shape) stay as they were
    # Persisted and read back like every other field; documents stored before it are JSON devices.
    assert TwinDocument.model_validate(doc.model_dump(mode="json")).wire is CBOR
    assert TwinDocument.model_validate({"device_id": "old"}).wire is JSON


def test_switching_encoding_on_update_keeps_version_semantics() -> None:
    docs: dict[str, TwinDocument | None] = {}
    run(docs, Operation.UPDATE, update({"a": 1}, JSON))
    effects = run(docs, Operation.UPDATE, update({"a": 1}, CBOR))
    doc = docs[ADDRESS.key]
    assert doc is not None and doc.wire is CBOR and doc.version == 2  # the update itself, not the switch
    assert effects.replies[0][2] is CBOR


def test_get_in_another_encoding_is_remembered_without_a_new_version() -> None:
    docs: dict[str, TwinDocument | None] = {}
    run(docs, Operation.UPDATE, update({"a": 1}, JSON))
    before = docs[ADDRESS.key]
    effects = run(docs, Operation.GET, encode_payload({"clientToken": "g1"}, CBOR))
    after = docs[ADDRESS.key]
    assert after is not None and before is not None
    assert after is not before and after.wire is CBOR and after.version == before.version == 1
    assert effects.replies[0][2] is CBOR and effects.replies[0][1]["clientToken"] == "g1"
    [requested] = effects.events
    assert isinstance(requested, DeltaRequested) and requested.wire is CBOR
    # The same encoding again writes nothing.
    run(docs, Operation.GET, encode_payload({}, CBOR))
    assert docs[ADDRESS.key] is after


def test_empty_payload_is_answered_in_the_remembered_encoding() -> None:
    docs: dict[str, TwinDocument | None] = {}
    run(docs, Operation.UPDATE, update({"a": 1}, CBOR))
    remembered = docs[ADDRESS.key]
    effects = run(docs, Operation.GET, b"")
    assert effects.replies[0][2] is CBOR and docs[ADDRESS.key] is remembered
    rejected = run(docs, Operation.UPDATE, b" ")
    assert rejected.error is not None and rejected.replies[0][2] is CBOR
    # With nothing remembered, JSON.
    assert run({}, Operation.GET, b"").replies[0][2] is JSON


def test_delete_tombstone_keeps_the_encoding_and_the_device_gets_it_back() -> None:
    docs: dict[str, TwinDocument | None] = {}
    run(docs, Operation.UPDATE, update({"a": 1}, CBOR))
    effects = run(docs, Operation.DELETE, b"")
    assert effects.replies[0][2] is CBOR and effects.events[0].wire is CBOR
    tombstone = docs[ADDRESS.key]
    assert tombstone is not None and tombstone.deleted and tombstone.wire is CBOR
    # A component re-creating the twin through REST keeps the device's encoding for its delta.
    ctx = Context(DEFAULT, LIMITS, 1001.0, {})
    patched = apply_command(docs, DesiredPatch(ADDRESS, {"fan": "on"}), ctx)
    assert patched.document is not None and patched.document.wire is CBOR and patched.events[0].wire is CBOR


@pytest.mark.parametrize(
    ("payload", "encoding", "fragment"),
    [
        (_cbor("a2 6161"), CBOR, "not valid CBOR"),  # undecodable, but starts like a CBOR map
        (b"\x00\x01", JSON, "not valid JSON"),  # undecodable and not CBOR by its first byte
        (b"{nope", JSON, "not valid JSON"),
        (cbor2.dumps({"state": {"reported": {"b": b"x"}}, "clientToken": "t9"}), CBOR, "$.state.reported.b"),
    ],
)
def test_rejections_go_out_in_the_encoding_the_first_byte_shows_and_change_nothing(
    payload: bytes, encoding: WireEncoding, fragment: str
) -> None:
    docs: dict[str, TwinDocument | None] = {}
    run(docs, Operation.UPDATE, update({"keep": True}, JSON if encoding is CBOR else CBOR))
    before = docs[ADDRESS.key]
    effects = run(docs, Operation.UPDATE, payload)
    [(topic, rejected, got)] = effects.replies
    assert topic.endswith("/update/rejected") and got is encoding
    assert rejected["code"] == 400 and fragment in rejected["message"]
    assert docs[ADDRESS.key] is before and effects.events == []
    if b"t9" in payload:
        assert rejected["clientToken"] == "t9"  # echoed even though the document was refused


def test_state_limit_counts_the_document_not_the_cbor_bytes() -> None:
    # 300 control characters: ~300 bytes of CBOR, ~1,800 of JSON (each escaped as \u00XX).
    payload = update({"s": "\x01" * 300}, CBOR, clientToken="big")
    assert len(payload) < LIMITS.max_state_bytes
    effects = run({}, Operation.UPDATE, payload)
    assert effects.error is not None and effects.error.code is ErrorCode.TOO_LARGE
    assert effects.replies[0][2] is CBOR and effects.replies[0][1]["clientToken"] == "big"


def test_payload_limit_counts_the_wire_bytes() -> None:
    payload = update({"s": "x" * 200}, CBOR)
    ctx = Context(DEFAULT, Limits(max_payload_bytes=100), 1000.0, {})
    effects = apply_command({}, DeviceRequest(ADDRESS, Operation.UPDATE, payload), ctx)
    assert effects.error is not None and effects.error.code is ErrorCode.TOO_LARGE
    assert effects.replies[0][2] is CBOR


# --- delta app: each twin's messages in its device's encoding -----------------------------------


def test_delta_app_takes_each_twins_encoding_from_its_newest_event() -> None:
    snapshot = {"state": {}, "metadata": {}, "version": 1, "timestamp": 1}

    def changed(device: str, version: int, wire: WireEncoding) -> TwinChanged:
        return TwinChanged(device_id=device, version=version, timestamp=1, cause="update", current=snapshot, wire=wire)

    events: list[TwinChanged | DeltaRequested] = [
        changed("a", 2, CBOR),
        changed("a", 1, JSON),  # older, arrived later
        changed("b", 1, JSON),
        changed("b", 2, CBOR),
        DeltaRequested(device_id="c", version=3, current=snapshot),
    ]
    assert device_encodings(events) == {TwinAddress("a"): CBOR, TwinAddress("b"): CBOR, TwinAddress("c"): JSON}
    # A get in a new encoding at the same version as the last change is answered in it.
    tie: list[TwinChanged | DeltaRequested] = [
        changed("d", 5, JSON),
        DeltaRequested(device_id="d", version=5, current=snapshot, wire=CBOR),
    ]
    assert device_encodings(tie) == {TwinAddress("d"): CBOR}


def test_events_without_wire_mean_json() -> None:
    event = TwinChanged.model_validate({"device_id": "x", "version": 1, "timestamp": 1, "cause": "update"})
    assert event.wire is JSON
    assert TwinChanged.model_validate_json(event.model_copy(update={"wire": CBOR}).model_dump_json()).wire is CBOR
