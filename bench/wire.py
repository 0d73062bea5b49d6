"""Wire encodings measured on the realistic gateway messages (`bench/documents.py`): bytes in JSON,
in CBOR and template-driven (`domain/twin/template.py`, each message's own template), and what one
message costs to encode and decode (the code paths the twin-store, the delta app and the device
link use)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.documents import messages
from services.contracts.wire import WireEncoding, decode_payload, encode_payload
from services.domain.json_values import json_equal
from services.domain.twin.template import decode, encode, template_for


@dataclass(frozen=True, slots=True)
class WireFigures:
    message: str
    json_bytes: int
    cbor_bytes: int
    json_us: float
    """Encode + decode of one message, µs (best of several runs)."""
    cbor_us: float
    template_bytes: int
    """Template-driven (the message's own template registered, values sent without keys)."""
    template_us: float

    @property
    def saved_percent(self) -> float:
        return 100 * (1 - self.cbor_bytes / self.json_bytes)

    @property
    def template_saved_percent(self) -> float:
        return 100 * (1 - self.template_bytes / self.json_bytes)


def _per_call_us(fn: Callable[[], Any], budget_s: float = 0.15, repeats: int = 5) -> float:
    """Best per-call time over `repeats` runs, each about `budget_s` long."""
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < budget_s / 10:
        fn()
        calls += 1
    number = max(1, calls * 10)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


def _round_trip(value: dict[str, Any], encoding: WireEncoding) -> Callable[[], Any]:
    def run() -> Any:
        return decode_payload(encode_payload(value, encoding))

    return run


def measure_wire() -> list[WireFigures]:
    figures = []
    for name, value in messages().items():
        sizes = {}
        for encoding in WireEncoding:
            payload = encode_payload(value, encoding)
            decoded, got = decode_payload(payload)
            assert got is encoding and json_equal(decoded, value), f"{name} does not round-trip in {encoding}"
            sizes[encoding] = len(payload)
        template = template_for(value, "gateway", 1)
        templated = encode(value, template)
        assert json_equal(decode(templated, {template.name: template}), value), f"{name} does not round-trip templated"
        figures.append(
            WireFigures(
                name,
                sizes[WireEncoding.JSON],
                sizes[WireEncoding.CBOR],
                _per_call_us(_round_trip(value, WireEncoding.JSON)),
                _per_call_us(_round_trip(value, WireEncoding.CBOR)),
                len(templated),
                _per_call_us(lambda: decode(encode(value, template), {template.name: template})),  # noqa: B023 - called here
            )
        )
    return figures
