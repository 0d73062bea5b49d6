"""Request validation against the configured limits (pure; raises `TwinError`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.domain.errors import bad_request, too_large
from services.domain.json_values import JsonObject


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds every twin request is held to; defaults follow AWS IoT Device Shadow."""

    max_state_bytes: int = 8192
    """Merged desired+reported JSON, compact, UTF-8 (413 past it)."""
    max_payload_bytes: int = 131072
    """One request on the wire (413 past it)."""
    max_depth: int = 8
    """Nesting levels inside `desired` or `reported` (400 past it)."""
    max_client_token_bytes: int = 64
    max_key_bytes: int = 128
    rate_per_second: float = 20.0
    """Sustained requests per twin (429 past it)."""
    rate_burst: int = 40


def check_section(name: str, section: JsonObject, limits: Limits) -> None:
    """Refuse nesting deeper than `limits.max_depth`, empty or oversized keys, and nulls in arrays."""
    _check_value(name, section, 1, limits, in_array=False)


def _check_value(path: str, value: Any, depth: int, limits: Limits, *, in_array: bool) -> None:
    if isinstance(value, dict):
        if depth > limits.max_depth:
            raise bad_request(f"{path}: nesting deeper than {limits.max_depth} levels")
        for key, item in value.items():
            if not key or len(key.encode()) > limits.max_key_bytes:
                raise bad_request(f"{path}: keys must be 1..{limits.max_key_bytes} bytes")
            _check_value(f"{path}.{key}", item, depth + 1, limits, in_array=False)
    elif isinstance(value, list):
        if depth > limits.max_depth:
            raise bad_request(f"{path}: nesting deeper than {limits.max_depth} levels")
        for index, item in enumerate(value):
            if item is None:
                raise bad_request(f"{path}[{index}]: arrays may not contain null")
            _check_value(f"{path}[{index}]", item, depth + 1, limits, in_array=True)
    elif value is None and in_array:
        raise bad_request(f"{path}: arrays may not contain null")


def state_size(desired: JsonObject, reported: JsonObject) -> int:
    """Bytes the merged state takes: compact JSON of both sections, as the size limit counts it."""
    encoded = json.dumps({"desired": desired, "reported": reported}, separators=(",", ":"), ensure_ascii=False)
    return len(encoded.encode())


def check_state_size(desired: JsonObject, reported: JsonObject, limits: Limits) -> None:
    size = state_size(desired, reported)
    if size > limits.max_state_bytes:
        raise too_large(
            f"state would be {size} bytes; desired+reported may hold at most {limits.max_state_bytes} bytes"
        )
