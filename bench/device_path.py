"""The device path under load: accepted updates/s (closed loop), accept latency at a fixed rate,
and CPU per accepted update per process, for the suite and two floors measured in the same run.

Floors: `floorgo` (Go: MQTT in → one Redis round trip → MQTT reply, the machine's limit for that
echo) and `bench/floor.py` (the same echo in single-threaded Python with aiomqtt). All three are
driven by the same load generator (`bench/loadgen`, Go, one MQTT connection and credentials per
device). CPU is read from /proc for every process of the stack (and the load generator, from
the children's rusage) around the closed-loop phase, so "µs per update" adds up to where the
machine's time went.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.devtools.broker import SERVICE_USER
from services.devtools.processes import ManagedProcess
from services.devtools.stack import Stack

CACHE_BIN = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet")) / "bin"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    """What `bench/loadgen` reports."""

    accepted: int
    rejected: int
    rate: float
    p50_ms: float
    p99_ms: float


@dataclass
class PathFigures:
    """One system's figures: closed-loop throughput, fixed-rate latency, CPU µs per update."""

    name: str
    throughput: LoadResult
    latency: LoadResult
    cpu_us: dict[str, float] = field(default_factory=dict)
    """Process → CPU µs per accepted update during the closed-loop phase."""

    @property
    def rejected(self) -> int:
        return self.throughput.rejected + self.latency.rejected


def binary(env: str, name: str) -> str:
    return os.environ.get(env) or str(CACHE_BIN / name)


def loadgen(
    port: int, creds: Path, mode: str, seconds: float, rate: float = 0, extra: list[str] | None = None
) -> LoadResult:
    args = [binary("TWINFLEET_LOADGEN", "loadgen"), "-port", str(port), "-creds", str(creds), "-mode", mode]
    args += ["-seconds", str(seconds), *(extra or [])]
    if rate:
        args += ["-rate", str(rate)]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return LoadResult(out["accepted"], out["rejected"], out["rate"], out["p50_ms"], out["p99_ms"])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@contextmanager
def cpu_meter(processes: dict[str, int], into: dict[str, float]) -> Iterator[None]:
    """CPU seconds each process (and our children: the load generator) spent inside the block."""
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield
    for name, pid in processes.items():
        into[name] = cpu_seconds(pid) - before[name]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    into["loadgen"] = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime


def measure(
    name: str, stack: Stack, processes: dict[str, int], devices: int, seconds: float, rate: float
) -> PathFigures:
    creds = stack.run_dir / f"{name}-creds.json"
    creds.write_text(json.dumps(stack.provision_devices(f"{name}-{i:05d}" for i in range(devices))))
    time.sleep(0.3)
    loadgen(stack.mqtt_port, creds, "closed", 2)  # warm-up (also creates the twins)
    spent: dict[str, float] = {}
    with cpu_meter(processes, spent):
        throughput = loadgen(stack.mqtt_port, creds, "closed", seconds)
    time.sleep(1)
    latency = loadgen(stack.mqtt_port, creds, "open", seconds, rate)
    per_update = {k: v / throughput.accepted * 1e6 for k, v in spent.items()} if throughput.accepted else {}
    return PathFigures(name, throughput, latency, per_update)


def stack_processes(stack: Stack) -> dict[str, int]:
    return {name: proc.pid for name, proc in stack.procs.items() if proc.pid is not None and proc.alive()}


def measure_floor(
    kind: str, base: Path, devices: int, seconds: float, rate: float, *, tcp_nodelay: bool = True
) -> PathFigures:
    """One floor (`go` or `python`) on its own Mosquitto and Redis."""
    label = f"floor-{kind}" + ("" if tcp_nodelay else "-nagle")
    stack = Stack(base / label, apps=[], tcp_nodelay=tcp_nodelay)
    stack.start()
    password = stack.secrets["service"]
    if kind == "go":
        args = [binary("TWINFLEET_FLOORGO", "floorgo"), "-mqtt-port", str(stack.mqtt_port)]
        args += ["-redis-port", str(stack.redis_port), "-user", SERVICE_USER, "-password", password]
    else:
        args = [
            sys.executable,
            "-m",
            "bench.floor",
            str(stack.mqtt_port),
            str(stack.redis_port),
            SERVICE_USER,
            password,
        ]
    server = ManagedProcess(label, args, stack.run_dir / "logs" / "floor.log")
    try:
        server.start()
        deadline = time.monotonic() + 20
        while "ready" not in server.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.pid is not None
        return measure(label, stack, {**stack_processes(stack), "floor": server.pid}, devices, seconds, rate)
    finally:
        server.stop()
        stack.stop()
