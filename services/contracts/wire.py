"""Wire encodings of device messages: JSON, or CBOR (RFC 8949) carrying the same document.

A payload says which it is by its first byte: a CBOR map starts with major type 5 (0xa0..0xbf),
which no JSON text starts with. Decoded CBOR must hold only what JSON can (text-string keys,
finite numbers, integers in CBOR's 64-bit range, no byte strings, tags, simple values or shared
references), so both encodings carry exactly the same documents. Decoded JSON is held to the same
rule from its side: no NaN/Infinity, no number that overflows to infinity, no lone surrogates.
"""

from __future__ import annotations

import io
import json
import math
from enum import StrEnum
from typing import Any, TypeAlias

import cbor2

from services.domain.errors import ErrorCode, TwinError, bad_request
from services.domain.json_values import fast_dumps, fast_loads

_CBOR_INT_MIN, _CBOR_INT_MAX = -(2**64), 2**64 - 1
"""Integers CBOR encodes natively (major types 0 and 1); larger ones would need bignum tags."""


class WireEncoding(StrEnum):
    JSON = "json"
    CBOR = "cbor"

    @property
    def content_type(self) -> str:
        return "application/cbor" if self is WireEncoding.CBOR else "application/json"


class NotJsonCompatible(TwinError):
    """Well-formed CBOR holding something JSON cannot (400); `value` is what was decoded, so a
    rejection can still echo the request's clientToken."""

    def __init__(self, message: str, value: Any) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message)
        self.value = value


def sniff(data: bytes) -> WireEncoding:
    """The encoding of a payload, by its first byte."""
    return WireEncoding.CBOR if data and 0xA0 <= data[0] <= 0xBF else WireEncoding.JSON


def decode_payload(data: bytes) -> tuple[Any, WireEncoding]:
    """The document a payload carries and its encoding; a payload that is neither valid JSON nor
    one JSON-compatible CBOR data item raises a 400 `TwinError` (`NotJsonCompatible` when it is
    well-formed CBOR that JSON cannot hold)."""
    encoding = sniff(data)
    if encoding is WireEncoding.JSON:
        return _decode_json(data), encoding
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as error:
        raise bad_request(f"payload is not valid CBOR: {error}") from None
    if stream.tell() != len(data):
        raise bad_request(f"payload is not valid CBOR: {len(data) - stream.tell()} byte(s) after the map")
    check_json_compatible(value)
    return value, encoding


def encode_payload(value: Any, encoding: WireEncoding) -> bytes:
    """`value` (a JSON-compatible document) in `encoding`. CBOR keeps map key order and sends
    floats as 64-bit: shortest-form floats (RFC 8949 §4.1 preferred serialization) would save
    about 1.5 % on a realistic document but cost 2.5x the encode time, because cbor2's C encoder
    leaves its fast path once any custom encoder is given. Any float width is accepted on input."""
    if encoding is WireEncoding.CBOR:
        return cbor2.dumps(value)
    return fast_dumps(value)


# --- JSON -------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _decode_json(data: bytes) -> Any:
    # orjson first (what it accepts, this decoder accepts as the same value); the strict decoder
    # for the rest, which also reads UTF-16/32 and names what is wrong.
    return fast_loads(data, _decode_json_strictly)


def _decode_json_strictly(data: bytes) -> Any:
    try:
        value = _JSON.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise bad_request(f"payload is not valid JSON (or a CBOR map): {error}") from None
    # A `\udXXX` escape may leave a lone surrogate, which no UTF-8 text (or CBOR) can carry;
    # the scan runs only for payloads that hold such an escape at all.
    if b"\\u" in data:
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise bad_request("payload is not valid JSON: a string holds a lone UTF-16 surrogate") from None
    return value


# --- CBOR -------------------------------------------------------------------------------------

_CBOR_NAMES: dict[type, str] = {
    bytes: "byte string",
    bytearray: "byte string",
    cbor2.CBORTag: "tagged item",
    cbor2.CBORSimpleValue: "simple value",
    type(cbor2.undefined): "undefined",
}


def _cbor_name(value: Any) -> str:
    name = _CBOR_NAMES.get(type(value))
    if name is None:
        name = f"tagged item (decoded as {type(value).__name__})"
    elif isinstance(value, cbor2.CBORTag):
        name = f"tag {value.tag}"
    elif isinstance(value, cbor2.CBORSimpleValue):
        name = f"simple value {value.value}"
    return name


_Path: TypeAlias = "tuple[_Path, str | int] | None"
"""A place in the document as a linked list (parent, key or index), rendered only for errors."""


def _render(path: _Path) -> str:
    steps: list[str] = []
    while path is not None:
        path, step = path
        steps.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "$" + "".join(reversed(steps))


def check_json_compatible(document: Any) -> None:
    """Raise `NotJsonCompatible` naming the first place in `document` JSON cannot hold."""
    if not _json_compatible(document):
        _explain_incompatible(document)
        raise NotJsonCompatible("$: the document holds something JSON cannot", document)  # not reached


def _json_compatible(document: Any) -> bool:
    """The fast check: iterative, no paths. Every container may occur once: CBOR shared references
    (tags 28/29) could otherwise make cycles, or exponentially large documents from small payloads."""
    seen: set[int] = set()
    stack = [document]
    while stack:
        value = stack.pop()
        count = len(seen)
        seen.add(id(value))
        if len(seen) == count:
            return False
        if type(value) is dict:
            for key in value:
                if type(key) is not str:
                    return False
            items = value.values()
        else:
            items = value
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append(item)
            elif kind is str or kind is bool or item is None:
                pass
            elif kind is float:
                if item - item != 0.0:  # NaN or infinite
                    return False
            elif kind is int:
                if not _CBOR_INT_MIN <= item <= _CBOR_INT_MAX:
                    return False
            else:
                return False
    return True


def _explain_incompatible(document: Any) -> None:
    """The slow check, run once the fast one failed: walks in document order, raising for the first
    problem with its path."""
    seen: set[int] = set()
    stack: list[tuple[Any, _Path]] = [(document, None)]
    while stack:
        value, path = stack.pop()
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if kind is int:
            if not _CBOR_INT_MIN <= value <= _CBOR_INT_MAX:
                raise NotJsonCompatible(f"{_render(path)}: integers must fit in 64 bits (no bignums)", document)
            continue
        if kind is float:
            if not math.isfinite(value):
                raise NotJsonCompatible(f"{_render(path)}: numbers must be finite (as in JSON)", document)
            continue
        if kind is dict or kind is list:
            if id(value) in seen:
                raise NotJsonCompatible(
                    f"{_render(path)}: shared references (CBOR tags 28/29) have no JSON equivalent", document
                )
            seen.add(id(value))
            if kind is list:
                stack.extend((value[i], (path, i)) for i in range(len(value) - 1, -1, -1))
                continue
            for key in value:
                if type(key) is not str:
                    raise NotJsonCompatible(
                        f"{_render(path)}: map keys must be text strings (as in JSON), not {key!r}", document
                    )
            stack.extend((item, (path, key)) for key, item in reversed(value.items()))
            continue
        raise NotJsonCompatible(
            f"{_render(path)}: a CBOR {_cbor_name(value)} has no JSON equivalent; send text, numbers, "
            "booleans, null, maps and arrays",
            document,
        )
