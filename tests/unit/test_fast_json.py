"""orjson on the hot path reads and writes exactly what the standard library does: the same values
(integers beyond 64 bits stay exact), and refusals fall to the strict decoder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contracts.wire import decode_payload
from services.domain.errors import TwinError
from services.domain.json_values import fast_dumps, fast_loads

values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
)


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@given(values)
def test_fast_loads_reads_what_the_standard_library_reads(value: Any) -> None:
    text = json.dumps(value).encode()
    assert same(fast_loads(text), json.loads(text))
    assert same(fast_loads(fast_dumps(value)), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [b"18446744073709551616", b'{"a": 123456789012345678901234567890}', b"-9223372036854775809", b"1e400"],
)
def test_numbers_orjson_would_read_differently_go_to_the_standard_library(text: bytes) -> None:
    assert same(fast_loads(text), json.loads(text))


@pytest.mark.parametrize("payload", [b"[NaN]", b'{"a": 1e400}', b'"\\ud800"', b"{"])
def test_device_payloads_orjson_refuses_still_get_the_strict_decoders_answer(payload: bytes) -> None:
    with pytest.raises(TwinError) as raised:
        decode_payload(payload)
    assert raised.value.code == 400


def test_utf16_payloads_are_still_read() -> None:
    assert decode_payload('{"a": 1}'.encode("utf-16"))[0] == {"a": 1}
