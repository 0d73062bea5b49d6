"""Wire encodings of device messages: JSON, or CBOR (RFC 8949) carrying the same document.

A payload says which it is by its first byte: a CBOR map starts with major type 5 (0xa0..0xbf),
which no JSON text starts with. Decoded CBOR must hold only what JSON can (string keys, finite
numbers, no byte strings or tags), so both encodings carry exactly the same documents.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any

import cbor2

from services.domain.errors import bad_request


class WireEncoding(StrEnum):
    JSON = "json"
    CBOR = "cbor"

    @property
    def content_type(self) -> str:
        return "application/cbor" if self is WireEncoding.CBOR else "application/json"


def sniff(data: bytes) -> WireEncoding:
    """The encoding of a payload, by its first byte."""
    return WireEncoding.CBOR if data and 0xA0 <= data[0] <= 0xBF else WireEncoding.JSON


def decode_payload(data: bytes) -> tuple[Any, WireEncoding]:
    """The document a payload carries and its encoding; a payload that is neither valid JSON nor
    JSON-compatible CBOR raises a 400 `TwinError`."""
    encoding = sniff(data)
    if encoding is WireEncoding.JSON:
        try:
            return json.loads(data), encoding
        except (ValueError, UnicodeDecodeError) as error:
            raise bad_request(f"payload is not valid JSON (or a CBOR map): {error}") from None
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as error:
        raise bad_request(f"payload is not valid CBOR: {error}") from None
    _check_json_compatible(value, "$")
    return value, encoding


def encode_payload(value: Any, encoding: WireEncoding) -> bytes:
    """`value` (a JSON-compatible document) in `encoding`; CBOR uses the shortest float forms."""
    if encoding is WireEncoding.CBOR:
        return cbor2.dumps(value, canonical=False)
    return json.dumps(value, separators=(",", ":")).encode()


def _check_json_compatible(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad_request(f"{path}: CBOR payloads may hold only finite numbers (as JSON)")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_compatible(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise bad_request(f"{path}: CBOR map keys must be text strings (as JSON), got {key!r}")
            _check_json_compatible(item, f"{path}.{key}")
        return
    raise bad_request(f"{path}: CBOR {type(value).__name__} has no JSON equivalent; send text, numbers, maps, arrays")
