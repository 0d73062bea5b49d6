"""The MQTT payload parser tried wholesale (JSON and CBOR, well-formed or not): every payload is
applied or refused with a code and a message, nothing raises, and a refusal changes no twin."""

from __future__ import annotations

import json
import math
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.topics import Operation, TwinAddress, profile
from services.domain.twin.commands import Context, DeviceRequest, apply_command
from services.domain.twin.document import TwinDocument
from services.domain.twin.limits import Limits
from tests.fuzz.conftest import TRIED

ADDRESS = TwinAddress("fuzz-dev")
LIMITS = Limits()
json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
cbor_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.text(max_size=20),
        st.binary(max_size=8), st.just(cbor2.undefined), st.builds(cbor2.CBORSimpleValue, st.integers(0, 19)),
        st.builds(cbor2.CBORTag, st.integers(0, 300), st.integers()),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=4)), inner, max_size=4),
    ),
    max_leaves=20,
)  # fmt: skip
updates = st.fixed_dictionaries(
    {"state": st.one_of(json_values, st.fixed_dictionaries({"reported": json_values, "desired": json_values}))},
    optional={"version": json_values, "clientToken": json_values},
)


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


payloads = st.one_of(
    st.binary(max_size=64),
    json_values.map(_json),
    updates.map(_json),
    cbor_values.map(cbor2.dumps),
    updates.map(cbor2.dumps),
    updates.map(lambda u: cbor2.dumps(u) + b"\x00"),
    st.text(max_size=40).map(str.encode),
    st.sampled_from([b"{", b"[]", b"\xa1", b"\xbf", b"NaN", b'{"state":{"reported":{"t":NaN}}}', b"\xa0" * 3]),
)


def existing_twin() -> TwinDocument:
    docs: dict[str, TwinDocument | None] = {ADDRESS.key: None}
    ctx = Context(profile("default"), LIMITS, 1000.0, {})
    body = json.dumps({"state": {"reported": {"temp": 20}, "desired": {"fan": "on"}}}).encode()
    effects = apply_command(docs, DeviceRequest(ADDRESS, Operation.UPDATE, body), ctx)
    assert effects.error is None and effects.document is not None
    return effects.document


BASE = existing_twin()


@settings(max_examples=1500)
@given(payload=payloads, op=st.sampled_from(list(Operation)))
def test_every_device_payload_is_applied_or_refused_with_a_code(payload: bytes, op: Operation) -> None:
    TRIED["mqtt payloads (JSON, CBOR, bytes) to update/get/delete"] += 1
    docs: dict[str, TwinDocument | None] = {ADDRESS.key: BASE}
    ctx = Context(profile("default"), LIMITS, 2000.0, {})
    effects = apply_command(docs, DeviceRequest(ADDRESS, op, payload), ctx)
    if effects.error is not None:
        assert int(effects.error.code) in (400, 404, 409, 413, 429) and effects.error.message
        assert docs[ADDRESS.key] == BASE  # a refusal changes nothing
        assert any(topic.endswith("/rejected") for topic, _, _ in effects.replies)
        for _, reply, _ in effects.replies:
            assert reply["code"] == int(effects.error.code) and reply["message"]
    for _, reply, _ in effects.replies:  # every reply can go out in either encoding
        json.dumps(reply, allow_nan=False)
    document = docs[ADDRESS.key]
    if document is not None:
        json.dumps(document.model_dump(mode="json"), allow_nan=False)
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(document.reported))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]
