"""`make bench`: end-to-end figures of the suite next to the raw floor measured in the same run.

Figures: accepted reported updates/s (closed loop: each device sends its next update once the
previous one is accepted), p50/p99 publish→accepted latency at a fixed 1,000 updates/s, and
desired (REST) → delta (at the device) latency, sampled once every event of the load before has
been delivered (the time that took is printed: how far the subscribers were behind). The floor is
Mosquitto + one Redis round trip with no Dapr and no twin logic (`bench/floor.py`), driven by the
same load generator (`bench/loadgen`, Go, one MQTT connection and credentials per device). Then
the wire encodings: bytes of a realistic gateway's messages in JSON and CBOR, and encode+decode µs
per message (`bench/wire.py`; `--wire-only` measures just that). Last, the device agent's resident
memory, agent and daprd apart, after boot and after 1,000 events and a few desired changes, next
to a bare Python interpreter (`bench/agent_footprint.py`). Then a configuration rolled out to
100,000 twins and the rollout planner's evaluations/s, each next to its floor (`bench/rollout.py`;
`--rollout-only` measures just that). Then firmware: one artifact downloaded by 100 and by 1,000
devices at once straight from the object store (Azurite; and by 100 through the firmware app for
stores that cannot pre-sign), each next to the same bytes read from disk and hashed by as many
readers, and a 1 GiB upload with the firmware app's peak memory; each measured twice
(`bench/firmware.py`; `--firmware-only` measures just that). Last, the console with 100,000 twins:
the fleet page loaded in chromium next to one raw page of twins read through the same ingress, the
fleet index's rebuild after a restart, one counts request (`bench/console.py`; `--console-only`
measures just that).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import redis
import typer
from rich.console import Console
from rich.table import Table

from bench.agent_footprint import Footprint, measure_agent
from bench.console import ConsoleFigures, measure_console
from bench.device_path import PathFigures, measure, measure_floor, stack_processes
from bench.firmware import FirmwareFigures, measure_firmware
from bench.load import fleet
from bench.rollout import RolloutFigures, measure_rollout
from bench.scale import ACTIVE_SHARE, MEASURED, ScalePoint, measure_scale
from bench.wire import WireFigures, measure_wire
from services.devtools.broker import SERVICE_USER
from services.devtools.stack import Stack, daprd_binary
from services.platform.names import DELTA_APP, TWIN_STORE_APP

console = Console(width=150)
app = typer.Typer(add_completion=False)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave this process's heap out of garbage collections while sampling: after a load phase a
    full collection of it paused a probe sampling as this does for 96 to 123 ms, its slowest samples."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


def settle(stack: Stack, timeout: float = 120) -> float:
    """Wait until every event on the internal pub/sub was delivered and acknowledged (each Redis
    stream's consumer groups that someone reads: nothing unread, nothing pending); the seconds it
    took."""
    store = redis.Redis(port=stack.redis_port)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            streams = list(store.scan_iter(_type="STREAM"))
            groups = [g for stream in streams for g in store.xinfo_groups(stream)]
            if all(g["pending"] == 0 and not g.get("lag") for g in groups if g["consumers"]):
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"events still undelivered {timeout:.0f} s after the load")
    finally:
        store.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def wire_table(figures: list[WireFigures]) -> Table:
    table = Table(
        title="Wire encoding: a gateway's messages, JSON vs CBOR vs template-driven (same run)",
        caption="reported state of a gateway (bench/documents.py); accepted = the state as sent + per-leaf "
        "metadata; delta and documents after a rollout; µs = encode + decode of one message",
    )
    table.add_column("message")
    table.add_column("JSON bytes", justify="right")
    table.add_column("CBOR bytes", justify="right")
    table.add_column("saved", justify="right")
    table.add_column("templated bytes", justify="right")
    table.add_column("saved", justify="right")
    table.add_column("JSON µs", justify="right")
    table.add_column("CBOR µs", justify="right")
    table.add_column("templated µs", justify="right")
    for f in figures:
        table.add_row(
            f.message,
            f"{f.json_bytes:,}",
            f"{f.cbor_bytes:,}",
            f"{f.saved_percent:.0f} %",
            f"{f.template_bytes:,}",
            f"{f.template_saved_percent:.0f} %",
            f"{f.json_us:.1f}",
            f"{f.cbor_us:.1f}",
            f"{f.template_us:.1f}",
        )
    return table


def wire_verdict(figures: list[WireFigures]) -> str:
    report = figures[0]
    return verdict(
        f"template-driven encoding of the gateway's report: bytes saved vs JSON ({report.message})",
        report.template_saved_percent,
        "≥",
        60,
        "%",
        f"; {report.json_bytes:,} → {report.template_bytes:,} bytes (CBOR {report.saved_percent:.0f} %)",
    )


@app.command()
def main(
    devices: int = typer.Option(1000, help="simulated devices, each with its own connection"),
    seconds: float = typer.Option(10, help="duration of each load phase"),
    rate: float = typer.Option(1000, help="fixed rate for the latency phase (updates/s)"),
    samples: int = typer.Option(200, help="desired→delta samples"),
    wire_only: bool = typer.Option(False, "--wire-only", help="only the wire-encoding figures (no processes)"),
    rollout_only: bool = typer.Option(False, "--rollout-only", help="only the configuration-rollout figures"),
    rollout_twins: int = typer.Option(100_000, help="twins a configuration is rolled out to"),
    firmware_only: bool = typer.Option(False, "--firmware-only", help="only the firmware download figures"),
    firmware_mib: float = typer.Option(2, help="size of the downloaded firmware artifact, MiB"),
    firmware_devices: str = typer.Option("100,1000", help="devices downloading at once, per measurement (≤ 1,000)"),
    firmware_upload_mib: int = typer.Option(1024, help="size of the uploaded artifact, MiB"),
    device_only: bool = typer.Option(False, "--device-only", help="only the device-path figures"),
    agent_only: bool = typer.Option(False, "--agent-only", help="only the device agent's footprint"),
    scale_only: bool = typer.Option(False, "--scale-only", help="only the scale curve"),
    scale_sizes: str = typer.Option("1000,10000,100000", help="connected devices at each point of the scale curve"),
    scale_rate: float = typer.Option(500, help="total updates/s of the scale curve's latency phase"),
    repeat: int = typer.Option(2, help="runs of the device path (each with its floors)"),
    console_only: bool = typer.Option(False, "--console-only", help="only the console's page-load figures"),
    console_twins: int = typer.Option(100_000, help="twins in the store when the console's pages load"),
) -> None:
    counts = tuple(int(n) for n in firmware_devices.split(","))
    # Measured first, while nothing else runs on the machine.
    wire = measure_wire()
    if wire_only:
        console.print(wire_table(wire))
        console.print(wire_verdict(wire))
        return
    base = Path(tempfile.mkdtemp(prefix="twinfleet-bench-"))
    if rollout_only:
        rolled = measure_rollout(base, rollout_twins)
        console.print(rollout_table(rolled))
        console.print(verdict(f"rollout to {rolled.twins:,} twins", rolled.write_seconds, "<", 30, "s"))
        return
    if console_only:
        figures = measure_console(base, console_twins)
        console.print(console_table(figures))
        console.print(console_verdict(figures))
        return
    sizes = [int(s) for s in scale_sizes.split(",") if s.strip()]
    if scale_only:
        console.print(scale_table(measure_scale(base, sizes, seconds, scale_rate), scale_rate))
        return
    if agent_only:
        agent = agent_footprint(base)
        console.print(agent_table(agent))
        console.print(verdict("device agent + its daprd RSS after load", agent_total(agent), "<", 100, "MiB"))
        return
    if firmware_only:
        console.print(firmware_table(measure_firmware(base, firmware_mib, counts, firmware_upload_mib)))
        return
    console.print(f"[bold]Twinfleet bench[/] — {os.cpu_count()} cores, {devices} devices, {seconds:g}s phases")
    runs = [device_path_run(base / f"run{n}", devices, seconds, rate, samples) for n in range(1, repeat + 1)]
    for n, run in enumerate(runs, 1):
        console.print(device_table(run, rate, n))
        console.print(cpu_table(run, n))
    if device_only:
        console.print(device_verdicts(runs, rate))
        return
    agent = agent_footprint(base)
    console.print(agent_table(agent))
    scale = measure_scale(base, sizes, seconds, scale_rate)
    rollout = measure_rollout(base, rollout_twins)
    firmware = measure_firmware(base, firmware_mib, counts, firmware_upload_mib)
    pages = measure_console(base, console_twins)
    console.print(wire_table(wire))
    console.print(scale_table(scale, scale_rate))
    console.print(rollout_table(rollout))
    console.print(firmware_table(firmware))
    console.print(device_verdicts(runs, rate))
    console.print(wire_verdict(wire))
    console.print(verdict("device agent + its daprd RSS after load", agent_total(agent), "<", 100, "MiB"))
    console.print(verdict(f"rollout to {rollout.twins:,} twins", rollout.write_seconds, "<", 30, "s"))
    console.print(console_table(pages))
    console.print(console_verdict(pages))


@dataclass
class DeviceRun:
    """One run of the device path: the suite and its floors on the same machine, one after another."""

    suites: list[PathFigures]
    """The suite with one twin-store process, then with two (replicas splitting the requests)."""
    floors: list[PathFigures]
    suite_delta: list[float]
    floor_delta: list[float]
    drained: float
    """Seconds after the load until every subscriber had taken every event (the delta samples
    start then, as the floor's do on a quiet machine)."""


def device_path_run(base: Path, devices: int, seconds: float, rate: float, samples: int) -> DeviceRun:
    floors = [
        measure_floor("go", base, devices, seconds, rate),
        measure_floor("go", base, devices, seconds, rate, tcp_nodelay=False),
        measure_floor("python", base, devices, seconds, rate),
    ]
    probe = Stack(base / "floor-delta", apps=[])
    probe.start()
    try:
        with frozen_heap():
            floor_delta = asyncio.run(floor_delta_latency(probe, samples))
    finally:
        probe.stop()
    suite = Stack(base / "suite")
    suite.start()
    try:
        one = measure("suite", suite, stack_processes(suite), devices, seconds, rate)
        drained = settle(suite)
        with frozen_heap():
            suite_delta = asyncio.run(delta_latency(suite, samples))
        suite.add_replica(TWIN_STORE_APP)
        two = measure("suite-2-twin-stores", suite, stack_processes(suite), devices, seconds, rate)
    finally:
        suite.stop()
    return DeviceRun([one, two], floors, suite_delta, floor_delta, drained)


def device_table(run: DeviceRun, rate: float, n: int) -> Table:
    table = Table(title=f"Device path, run {n}: suite vs floors (same run, same machine)")
    table.add_column("measure")
    for figures in (*run.suites, *run.floors):
        table.add_column(figures.name, justify="right")
    table.add_column(f"suite/{run.floors[0].name}", justify="right")

    def row(name: str, value: Callable[[PathFigures], float], fmt: str) -> None:
        values = [value(f) for f in (*run.suites, *run.floors)]
        floor = values[len(run.suites)]
        ratio = values[0] / floor if floor else float("nan")
        table.add_row(name, *(format(v, fmt) for v in values), f"{ratio:.2f}")

    row("accepted updates/s (closed loop)", lambda f: f.throughput.rate, ",.0f")
    row("  p50 accept latency under max load, ms", lambda f: f.throughput.p50_ms, ".1f")
    row("  p99 accept latency under max load, ms", lambda f: f.throughput.p99_ms, ".1f")
    row(f"p50 accept latency @ {rate:g}/s, ms", lambda f: f.latency.p50_ms, ".1f")
    row(f"p99 accept latency @ {rate:g}/s, ms", lambda f: f.latency.p99_ms, ".1f")
    row(f"achieved rate @ {rate:g}/s target", lambda f: f.latency.rate, ",.0f")
    row("rejected / timed out", lambda f: f.rejected, ",.0f")
    row("CPU µs per accepted update (all processes)", lambda f: sum(f.cpu_us.values()), ",.0f")
    table.add_row(
        "desired→delta p50 / p99, ms",
        f"{pct(run.suite_delta, 50):.1f} / {pct(run.suite_delta, 99):.1f}",
        "",
        f"{pct(run.floor_delta, 50):.1f} / {pct(run.floor_delta, 99):.1f} (one MQTT hop)",
    )
    table.add_row("  events still undelivered after the load, s", f"{run.drained:.1f}", "", "")
    return table


def cpu_table(run: DeviceRun, n: int) -> Table:
    table = Table(title=f"Run {n}: CPU µs per accepted update, by process (closed-loop phase, /proc)")
    table.add_column("process")
    table.add_column("µs/update", justify="right")
    for figures in (*run.suites, *run.floors):
        for name, us in sorted(figures.cpu_us.items(), key=lambda item: -item[1]):
            table.add_row(f"{figures.name}: {name}", f"{us:,.0f}")
    return table


def verdict(name: str, value: float, op: str, target: float, unit: str, note: str = "") -> str:
    ok = value < target if op == "<" else value >= target
    mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
    return f"{mark} {name}: {value:,.1f} {unit} (target {op} {target:,g} {unit}){note}"


def device_verdicts(runs: list[DeviceRun], rate: float) -> str:
    def each(value: Callable[[DeviceRun], float], fmt: str) -> str:
        return " / ".join(format(value(r), fmt) for r in runs)

    def best(r: DeviceRun) -> PathFigures:
        return max(r.suites, key=lambda f: f.throughput.rate)

    names = sorted({best(r).name for r in runs})
    top = max(best(r).throughput.rate for r in runs)
    p99 = max(min(f.latency.p99_ms for f in r.suites) for r in runs)
    delta = max(pct(r.suite_delta, 99) for r in runs)
    lines = [
        verdict(
            f"accepted updates/s, closed loop (best run; {' / '.join(names)})",
            top,
            "≥",
            5000,
            "/s",
            f"; runs {each(lambda r: best(r).throughput.rate, ',.0f')}, Go floor "
            f"{each(lambda r: r.floors[0].throughput.rate, ',.0f')}",
        ),
        verdict(
            f"p99 accept latency at {rate:g}/s (worst run, better suite of each)",
            p99,
            "<",
            50,
            "ms",
            f"; runs {each(lambda r: min(f.latency.p99_ms for f in r.suites), '.1f')}, Go floor "
            f"{each(lambda r: r.floors[0].latency.p99_ms, '.1f')}",
        ),
        verdict(
            "desired→delta p99 (worst run)",
            delta,
            "<",
            20,
            "ms",
            f"; runs {each(lambda r: pct(r.suite_delta, 99), '.1f')}, floor "
            f"{each(lambda r: pct(r.floor_delta, 99), '.1f')}",
        ),
    ]
    return "\n".join(lines)


def scale_table(points: list[ScalePoint], rate: float) -> Table:
    capped = [p for p in points if p.devices < p.requested]
    caption = f"{ACTIVE_SHARE:.0%} of the devices active; every device sent one update first (so each has a twin)"
    if capped:
        caption += (
            f"\n[red]capped: {', '.join(f'{p.requested:,} asked, {p.devices:,} measured' for p in capped)} — the "
            "broker holds one descriptor per connection and RLIMIT_NOFILE here is "
            f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,} (not raisable without privileges)[/]"
        )
    table = Table(title="Scale curve: connected devices (same run)", caption=caption)
    for column in ("connected", "active", "accepted/s closed loop", f"p50 / p99 ms @ {rate:g}/s"):
        table.add_column(column, justify="right")
    for name in MEASURED:
        table.add_column(f"{name} KiB/device", justify="right")
    table.add_column("Redis bytes/twin: document / all", justify="right")
    for p in points:
        table.add_row(
            f"{p.devices:,}",
            f"{p.active:,}",
            f"{p.throughput.rate:,.0f}",
            f"{p.latency.p50_ms:.1f} / {p.latency.p99_ms:.1f}",
            *(f"{p.kib_per_device.get(name, 0):.1f}" for name in MEASURED),
            f"{p.redis_twin_bytes:,.0f} / {p.redis_bytes_per_twin:,.0f}",
        )
    return table


def agent_footprint(base: Path) -> dict[str, Footprint]:
    """The agent with the device's daprd, then (for comparison) the same agent with the cloud's."""
    suite = Stack(base / "agent", apps=[TWIN_STORE_APP, DELTA_APP])
    suite.start()
    try:
        figures = measure_agent(suite)
        previous = os.environ.get("TWINFLEET_DEVICE_DAPRD")
        os.environ["TWINFLEET_DEVICE_DAPRD"] = daprd_binary()
        try:
            cloud = measure_agent(suite, device="bench-agent-cloud-daprd")
        finally:
            if previous is None:
                del os.environ["TWINFLEET_DEVICE_DAPRD"]
            else:
                os.environ["TWINFLEET_DEVICE_DAPRD"] = previous
        figures["daprd, the cloud build (after load)"] = cloud["daprd (after load)"]
        return figures
    finally:
        suite.stop()


def agent_total(figures: dict[str, Footprint]) -> float:
    return figures["agent (after load)"].rss_mib + figures["daprd (after load)"].rss_mib


def console_table(f: ConsoleFigures) -> Table:
    table = Table(
        title=f"Console with {f.twins:,} twins (same run, chromium, {len(f.page_ms)} loads)",
        caption=f"seeding (batch API, not timed) {f.seeded_seconds:.1f} s; fleet index rebuilt after a restart "
        f"in {f.rebuild_seconds:.1f} s; one counts request {f.counts_ms:.1f} ms (no scan: counters)",
    )
    table.add_column("measure")
    table.add_column("median, ms", justify="right")
    table.add_column("max, ms", justify="right")
    table.add_row(
        "fleet page: navigation → counts + 50 devices on screen", f"{f.page_median:.0f}", f"{max(f.page_ms):.0f}"
    )
    table.add_row(
        "floor: one raw page of 50 twins through the ingress", f"{f.floor_median:.0f}", f"{max(f.floor_ms):.0f}"
    )
    return table


def console_verdict(f: ConsoleFigures) -> str:
    note = f" (floor {f.floor_median:.0f} ms: page/floor {f.page_median / max(f.floor_median, 0.1):.1f})"
    return verdict(f"fleet page load with {f.twins:,} twins (median)", f.page_median, "<", 1000, "ms", note)


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
    table = Table(title="Device agent resident memory (the agent and its daprd, the device build, measured apart)")
    table.add_column("process")
    table.add_column("RSS MiB", justify="right")
    table.add_column("peak MiB", justify="right")
    table.add_column("of RSS: private (RssAnon) MiB", justify="right")
    for name, figure in figures.items():
        table.add_row(name, f"{figure.rss_mib:.1f}", f"{figure.peak_mib:.1f}", f"{figure.anon_mib:.1f}")
    return table


if __name__ == "__main__":
    app()
