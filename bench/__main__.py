"""`make bench`: end-to-end figures of the suite next to the raw floor measured in the same run.

Figures: accepted reported updates/s (closed loop: each device sends its next update once the
previous one is accepted), p50/p99 publish→accepted latency at a fixed 1,000 updates/s, and
desired (REST) → delta (at the device) latency. The floor is Mosquitto + one Redis round trip
with no Dapr and no twin logic (`bench/floor.py`), driven by the same load generator
(`bench/loadgen`, Go, one MQTT connection and credentials per device). Then the wire encodings:
bytes of a realistic gateway's messages in JSON and CBOR, and encode+decode µs per message
(`bench/wire.py`; `--wire-only` measures just that). Last, the device agent's resident memory,
agent and daprd apart, after boot and after 1,000 events and a few desired changes, next to a bare
Python interpreter (`bench/agent_footprint.py`). Then a configuration rolled out to 100,000 twins
and the rollout planner's evaluations/s, each next to its floor (`bench/rollout.py`;
`--rollout-only` measures just that). Then firmware: one artifact downloaded by 100 and by 1,000
devices at once straight from the object store (Azurite; and by 100 through the firmware app for
stores that cannot pre-sign), each next to the same bytes read from disk and hashed by as many
readers, and a 1 GiB upload with the firmware app's peak memory; each measured twice
(`bench/firmware.py`; `--firmware-only` measures just that).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import typer
from rich.console import Console
from rich.table import Table

from bench.agent_footprint import Footprint, measure_agent
from bench.firmware import FirmwareFigures, measure_firmware
from bench.load import fleet
from bench.rollout import RolloutFigures, measure_rollout
from bench.wire import WireFigures, measure_wire
from services.devtools.broker import SERVICE_USER
from services.devtools.processes import ManagedProcess
from services.devtools.stack import Stack

console = Console()
app = typer.Typer(add_completion=False)


@dataclass
class LoadResult:
    """What `bench/loadgen` (Go, so the load generator takes little CPU) reports."""

    accepted: int
    rejected: int
    rate: float
    p50_ms: float
    p99_ms: float


def loadgen(stack: Stack, creds: Path, mode: str, seconds: float, rate: float = 0) -> LoadResult:
    binary = os.environ.get("TWINFLEET_LOADGEN") or str(Path.home() / ".cache" / "twinfleet" / "bin" / "loadgen")
    args = [binary, "-port", str(stack.mqtt_port), "-creds", str(creds), "-mode", mode, "-seconds", str(seconds)]
    if rate:
        args += ["-rate", str(rate)]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return LoadResult(out["accepted"], out["rejected"], out["rate"], out["p50_ms"], out["p99_ms"])


def measure(stack: Stack, devices: int, seconds: float, rate: float, prefix: str) -> tuple[LoadResult, LoadResult]:
    creds = stack.run_dir / f"{prefix}-creds.json"
    creds.write_text(json.dumps(stack.provision_devices(f"{prefix}-{i:05d}" for i in range(devices))))
    time.sleep(0.3)
    loadgen(stack, creds, "closed", 2)  # warm-up
    throughput = loadgen(stack, creds, "closed", seconds)
    time.sleep(1)
    latency = loadgen(stack, creds, "open", seconds, rate)
    return throughput, latency


async def delta_latency(stack: Stack, samples: int) -> list[float]:
    timings = []
    async with (
        fleet(stack, 10, "bench-delta") as links,
        httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers) as api,
    ):
        for link in links:
            await link.report({"setpoint": -1})
        for i in range(samples):
            link = links[i % len(links)]
            started = time.perf_counter()
            response = await api.patch(f"/v1/twins/{link.address.device_id}/desired", json={"setpoint": i})
            response.raise_for_status()
            while (await link.next_delta())["state"].get("setpoint") != i:
                pass
            timings.append(time.perf_counter() - started)
    return timings


async def floor_delta_latency(stack: Stack, samples: int) -> list[float]:
    timings = []
    async with (
        fleet(stack, 1, "floor-delta") as links,
        aiomqtt.Client(
            "127.0.0.1", stack.mqtt_port, username=SERVICE_USER, password=stack.secrets["service"]
        ) as service,
    ):
        link = links[0]
        topic = f"{link.address.device_id}/state/update/delta"
        for i in range(samples):
            started = time.perf_counter()
            await service.publish(topic, json.dumps({"state": {"setpoint": i}}), qos=1)
            await link.next_delta()
            timings.append(time.perf_counter() - started)
    return timings


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def wire_table(figures: list[WireFigures]) -> Table:
    table = Table(
        title="Wire encoding: a gateway's messages, JSON vs CBOR (same run)",
        caption="reported state of a gateway (bench/documents.py); accepted = the state as sent + per-leaf "
        "metadata; delta and documents after a rollout; µs = encode + decode of one message",
    )
    table.add_column("message")
    table.add_column("JSON bytes", justify="right")
    table.add_column("CBOR bytes", justify="right")
    table.add_column("saved", justify="right")
    table.add_column("JSON µs", justify="right")
    table.add_column("CBOR µs", justify="right")
    for f in figures:
        table.add_row(
            f.message,
            f"{f.json_bytes:,}",
            f"{f.cbor_bytes:,}",
            f"{f.saved_percent:.0f} %",
            f"{f.json_us:.1f}",
            f"{f.cbor_us:.1f}",
        )
    return table


@app.command()
def main(
    devices: int = typer.Option(1000, help="simulated devices, each with its own connection"),
    seconds: float = typer.Option(15, help="duration of each load phase"),
    rate: float = typer.Option(1000, help="fixed rate for the latency phase (updates/s)"),
    samples: int = typer.Option(200, help="desired→delta samples"),
    wire_only: bool = typer.Option(False, "--wire-only", help="only the wire-encoding figures (no processes)"),
    rollout_only: bool = typer.Option(False, "--rollout-only", help="only the configuration-rollout figures"),
    rollout_twins: int = typer.Option(100_000, help="twins a configuration is rolled out to"),
    firmware_only: bool = typer.Option(False, "--firmware-only", help="only the firmware download figures"),
    firmware_mib: float = typer.Option(2, help="size of the downloaded firmware artifact, MiB"),
    firmware_devices: str = typer.Option("100,1000", help="devices downloading at once, per measurement (≤ 1,000)"),
    firmware_upload_mib: int = typer.Option(1024, help="size of the uploaded artifact, MiB"),
) -> None:
    counts = tuple(int(n) for n in firmware_devices.split(","))
    # Measured first, while nothing else runs on the machine.
    wire = measure_wire()
    if wire_only:
        console.print(wire_table(wire))
        return
    base = Path(tempfile.mkdtemp(prefix="twinfleet-bench-"))
    if rollout_only:
        console.print(rollout_table(measure_rollout(base, rollout_twins)))
        return
    if firmware_only:
        console.print(firmware_table(measure_firmware(base, firmware_mib, counts, firmware_upload_mib)))
        return
    console.print(f"[bold]Twinfleet bench[/] — {os.cpu_count()} cores, {devices} devices, {seconds:g}s phases")

    floor_stack = Stack(base / "floor", apps=[])
    floor_stack.start()
    server = ManagedProcess(
        "floor",
        [
            sys.executable,
            "-m",
            "bench.floor",
            str(floor_stack.mqtt_port),
            str(floor_stack.redis_port),
            SERVICE_USER,
            floor_stack.secrets["service"],
        ],
        base / "floor" / "logs" / "floor.log",
    )
    try:
        server.start()
        deadline = time.monotonic() + 20
        while "ready" not in server.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        floor_tp, floor_lat = measure(floor_stack, devices, seconds, rate, "floor")
        floor_delta = asyncio.run(floor_delta_latency(floor_stack, samples))
    finally:
        server.stop()
        floor_stack.stop()

    suite = Stack(base / "suite")
    suite.start()
    try:
        suite_tp, suite_lat = measure(suite, devices, seconds, rate, "bench")
        suite_delta = asyncio.run(delta_latency(suite, samples))
        agent = measure_agent(suite)
    finally:
        suite.stop()
    rollout = measure_rollout(base, rollout_twins)
    firmware = measure_firmware(base, firmware_mib, counts, firmware_upload_mib)

    table = Table(title="Twinfleet end-to-end vs raw floor (same run, same machine)")
    table.add_column("measure")
    table.add_column("suite", justify="right")
    table.add_column("raw floor", justify="right")
    table.add_column("suite/floor", justify="right")

    def row(name: str, suite_value: float, floor_value: float, fmt: str) -> None:
        ratio = suite_value / floor_value if floor_value else float("nan")
        table.add_row(name, format(suite_value, fmt), format(floor_value, fmt), f"{ratio:.2f}")

    row("accepted updates/s (closed loop)", suite_tp.rate, floor_tp.rate, ",.0f")
    row("  p50 accept latency under max load, ms", suite_tp.p50_ms, floor_tp.p50_ms, ".1f")
    row(f"p50 accept latency @ {rate:g}/s, ms", suite_lat.p50_ms, floor_lat.p50_ms, ".1f")
    row(f"p99 accept latency @ {rate:g}/s, ms", suite_lat.p99_ms, floor_lat.p99_ms, ".1f")
    row(f"achieved rate @ {rate:g}/s target", suite_lat.rate, floor_lat.rate, ",.0f")
    row("p50 desired→delta latency, ms", pct(suite_delta, 50), pct(floor_delta, 50), ".1f")
    row("p99 desired→delta latency, ms", pct(suite_delta, 99), pct(floor_delta, 99), ".1f")
    console.print(table)
    failed_suite = suite_tp.rejected + suite_lat.rejected
    console.print(f"rejected/timeouts: suite {failed_suite}, floor {floor_tp.rejected + floor_lat.rejected}")
    console.print("targets (issue): ≥ 5,000 accepted updates/s; p99 < 50 ms at 1,000 updates/s")
    console.print(wire_table(wire))
    console.print(agent_table(agent))
    console.print(rollout_table(rollout))
    console.print(firmware_table(firmware))


def rollout_table(f: RolloutFigures) -> Table:
    table = Table(
        title=f"Configuration rollout to {f.twins:,} twins (same run)",
        caption=f"seeding the twins (batch API, not timed) took {f.seed_seconds:.1f} s; "
        f"{f.verified}/{f.sampled} sampled twins read back with the content",
    )
    table.add_column("measure")
    table.add_column("suite", justify="right")
    table.add_column("raw floor", justify="right")
    table.add_column("suite/floor", justify="right")
    table.add_row(
        f"activation → {f.twins:,} desired written, s",
        f"{f.write_seconds:.1f}",
        f"{f.floor_seconds:.1f}",
        f"{f.write_seconds / f.floor_seconds:.1f}",
    )
    table.add_row(
        "  twins written/s",
        f"{f.twins / f.write_seconds:,.0f}",
        f"{f.twins / f.floor_seconds:,.0f}",
        f"{f.floor_seconds / f.write_seconds:.2f}",
    )
    table.add_row(
        "planner: condition evaluations/s (3 configurations)",
        f"{f.planner_evaluations_per_s:,.0f}",
        f"{f.floor_evaluations_per_s:,.0f}",
        f"{f.planner_evaluations_per_s / f.floor_evaluations_per_s:.2f}",
    )
    table.add_row("planner: twins evaluated + planned/s", f"{f.planner_twins_per_s:,.0f}", "", "")
    return table


def firmware_table(f: FirmwareFigures) -> Table:
    size = f.downloads[0].size / (1 << 20) if f.downloads else 0
    caption = (
        f"a {size:g} MiB artifact; each measured twice (shared machine); MB = 10^6 bytes; floor: the same "
        "bytes read from a file just written (page cache) by as many threads, 1 MiB blocks + sha256; "
        "RSS peaks sampled every 50 ms"
    )
    failures = [d for d in f.downloads if d.verified < d.devices]
    for d in failures:
        kinds = ", ".join(f"{n} × {kind}" for kind, n in sorted(d.failures.items()))
        caption += (
            f"\n[red]{d.path} {d.devices} run {d.run}: {d.devices - d.verified} failed: {kinds}; {d.first_failure}[/]"
        )
    table = Table(title="Firmware downloads and upload (same run)", caption=caption)
    for column in ("measure", "run", "suite", "raw floor", "suite/floor", "p50 / p99 s", "peak RSS MiB", "CPU s"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for d in f.downloads:
        where = "from the store (Azurite, SAS)" if d.path == "store" else "through the firmware app (binding)"
        table.add_row(
            f"download {where}, {d.devices} devices, MB/s",
            str(d.run),
            f"{d.mb_s:,.0f}",
            f"{d.floor_mb_s:,.0f}",
            f"{d.mb_s / d.floor_mb_s:.2f}" if d.floor_mb_s else "",
            f"{d.p50_s:.2f} / {d.p99_s:.2f}",
            ", ".join(f"{name} {peak:.0f}" for name, peak in d.peaks_mib.items()),
            ", ".join(f"{name} {cpu:.1f}" for name, cpu in d.cpu_s.items()),
        )
    for u in f.uploads:
        table.add_row(
            f"upload {u.size / (1 << 30):g} GiB into the store, MB/s",
            str(u.run),
            f"{u.mb_s:,.0f}",
            "",
            "",
            "",
            f"app {u.app_rss_before_mib:.0f} → {u.app_rss_peak_mib:.0f}",
            "",
        )
    return table


def agent_table(figures: dict[str, Footprint]) -> Table:
    table = Table(title="Device agent resident memory (agent and its daprd measured apart)")
    table.add_column("process")
    table.add_column("RSS MiB", justify="right")
    table.add_column("peak MiB", justify="right")
    for name, figure in figures.items():
        table.add_row(name, f"{figure.rss_mib:.1f}", f"{figure.peak_mib:.1f}")
    return table


if __name__ == "__main__":
    app()
