"""Traces: each app exports its spans over OTLP/HTTP when `TWINFLEET_OTLP_ENDPOINT` is set (the
local collector, `scripts/build-otelcol.sh`; any OTLP backend in a cluster). A span's context
crosses the internal pub/sub inside the event (`traceparent`, W3C Trace Context), so one trace
runs from a device's MQTT update in the twin-store to the delta it causes, whatever daprd does
with its own spans."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARIABLE = "TWINFLEET_OTLP_ENDPOINT"
_PROPAGATOR = TraceContextTextMapPropagator()


def setup(app: str) -> None:
    """Export this process's spans as `app` (nothing when no endpoint is configured)."""
    endpoint = os.environ.get(ENDPOINT_VARIABLE, "")
    if not endpoint:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": app}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def traceparent() -> str | None:
    """The current span's context as a W3C `traceparent` (None outside a recorded span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_of(parent: str | None) -> Context | None:
    return _PROPAGATOR.extract({"traceparent": parent}) if parent else None


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, parent: str | None = None, **attributes: str) -> Iterator[Span]:
    """A span named `name`, child of the current one or of `parent` (a `traceparent`)."""
    tracer = trace.get_tracer("twinfleet")
    with tracer.start_as_current_span(name, context=context_of(parent), kind=kind, attributes=attributes) as current:
        yield current
