"""Traces on the real suite: a device's MQTT update is one trace from the twin-store (the update)
through Dapr pub/sub to the delta app (its `/documents` and `/delta` published to the device),
found in the local tracing backend (an OpenTelemetry Collector built from its Go modules,
`scripts/build-otelcol.sh`, writing the spans it receives to a file)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.devtools.processes import ManagedProcess, built_binary, free_port, wait_for_port
from services.devtools.stack import Stack
from services.platform.names import DELTA_APP, TWIN_STORE_APP
from tests.support.devices import link, new_device_id
from tests.support.waiting import eventually

OTLP_PORT = free_port()
STACK_APPS = (TWIN_STORE_APP, DELTA_APP)
STACK_ENV = {"TWINFLEET_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP_PORT}"}


def collector_binary() -> str:
    return built_binary("TWINFLEET_OTELCOL", "otelcol-twinfleet-*", "the tracing backend is not built: `make tracing`")


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = Path(tmp_path_factory.mktemp("otelcol"))
    out = directory / "spans.jsonl"
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{OTLP_PORT}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"file": {"path": str(out)}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["file"]}},
        },
    }
    (directory / "config.yaml").write_text(json.dumps(config))
    process = ManagedProcess(
        "otelcol", [collector_binary(), "--config", f"file:{directory / 'config.yaml'}"], directory / "otelcol.log"
    )
    process.start()
    try:
        try:
            wait_for_port(OTLP_PORT, 30, process.process)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"the collector did not start: {error}\n{process.log_tail()}") from error
        yield out
    finally:
        process.stop()


def traces(path: Path) -> dict[str, set[tuple[str, str]]]:
    """trace id → {(service, span name)} of every span the backend wrote."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        for resource in json.loads(line).get("resourceSpans", []):
            attributes = {a["key"]: a["value"].get("stringValue") for a in resource["resource"]["attributes"]}
            for scope in resource.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    found[span["traceId"]].add((str(attributes.get("service.name")), span["name"]))
    return found


async def test_one_trace_spans_the_twin_store_and_the_delta_from_an_mqtt_update(
    spans_file: Path, stack: Stack, api: httpx.AsyncClient
) -> None:
    device_id = new_device_id("traced")
    async with link(stack, device_id) as device:
        await device.report({"fan": "off"})
        assert (await api.patch(f"/v1/twins/{device_id}/desired", json={"fan": "on"})).status_code == 200
        await device.next_delta()
        await device.report({"fan": "off", "temp": 21})  # the MQTT update traced below

        async def spanning() -> set[tuple[str, str]] | None:
            for spans in traces(spans_file).values():
                services = {service for service, _ in spans}
                if {TWIN_STORE_APP, DELTA_APP} <= services and ("twin-store", "twin-store update") in spans:
                    return spans
            return None

        spans = await eventually(spanning, timeout=30, what="a trace spanning twin-store and delta")
        assert (DELTA_APP, "delta publish") in spans
