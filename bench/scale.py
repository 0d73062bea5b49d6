"""The scale curve: the suite with 1,000, 10,000, ... devices connected at once (each its own MQTT
connection and credentials, spread over several loopback source addresses), each having sent one
update (so each has a twin), then a fixed share of them active: accepted updates/s (closed loop
over the active ones) and p50/p99 at a fixed rate. Memory per connected device of the twin-store,
the delta app and the broker (RSS with the fleet connected minus RSS before it connected), and
Redis bytes per twin (`MEMORY USAGE` of a sample of twin documents, and Redis's whole growth).

A process may hold at most RLIMIT_NOFILE descriptors (one per connection at the broker), so the
largest fleet measured is capped below that limit; the figures say so when a size was capped.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.agent_footprint import footprint
from bench.device_path import LoadResult, binary
from services.devtools.stack import Stack
from services.platform.names import DELTA_APP, TWIN_STORE_APP

ACTIVE_SHARE = 0.1
SOURCES = 8
"""Loopback source addresses (127.0.0.1 .. 127.0.0.8): 28k ephemeral ports each."""
MEASURED = ("twin-store", "delta", "mosquitto")


@dataclass
class ScalePoint:
    devices: int
    requested: int
    """The size asked for (larger than `devices` when capped by the descriptor limit)."""
    active: int
    throughput: LoadResult
    latency: LoadResult
    rate: float
    kib_per_device: dict[str, float]
    redis_twin_bytes: float
    """Mean `MEMORY USAGE` of a twin document."""
    redis_bytes_per_twin: float
    """Redis's whole growth (documents, listing, event streams) per twin."""


def descriptor_cap() -> int:
    """Devices one broker process can hold here (its descriptor limit, less some headroom)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard - 500


def measure_point(base: Path, requested: int, seconds: float, rate: float) -> ScalePoint:
    devices = min(requested, descriptor_cap())
    active = max(1, int(devices * ACTIVE_SHARE))
    stack = Stack(base / f"scale-{devices}", apps=[TWIN_STORE_APP, DELTA_APP])
    stack.start()
    try:
        creds = stack.run_dir / "creds.json"
        creds.write_text(json.dumps(stack.provision_devices(f"scale-{i:06d}" for i in range(devices))))
        time.sleep(0.5)
        store = redis.Redis(port=stack.redis_port)
        pids = {name: stack.procs[name].pid for name in MEASURED}
        before = {name: footprint(pid).rss_mib for name, pid in pids.items() if pid is not None}
        redis_before = int(store.info("memory")["used_memory"])
        args = [binary("TWINFLEET_LOADGEN", "loadgen"), "-port", str(stack.mqtt_port), "-creds", str(creds)]
        args += ["-sources", str(SOURCES), "-active", str(active)]
        # One process: connect all, one update each, hold idle while sampled, then the closed loop.
        proc = subprocess.Popen(
            [*args, "-hello", "-settle", "3", "-mode", "closed", "-seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        connected = json.loads(proc.stdout.readline() or "{}")
        if connected.get("connected") != devices:
            proc.kill()
            raise RuntimeError(f"loadgen connected {connected} of {devices} devices")
        time.sleep(1)
        after = {name: footprint(pid).rss_mib for name, pid in pids.items() if pid is not None}
        redis_after = int(store.info("memory")["used_memory"])
        keys = [k for _, k in zip(range(200), store.scan_iter(match="twin-store||scale-*", count=1000), strict=False)]
        sizes = [store.memory_usage(k) or 0 for k in keys]
        throughput = _result(proc.communicate(timeout=seconds + 300)[0])
        latency = _result(
            subprocess.run(
                [*args, "-mode", "open", "-seconds", str(seconds), "-rate", str(rate)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        per_device = {name: (after[name] - before[name]) * 1024 / devices for name in after}
        return ScalePoint(
            devices,
            requested,
            active,
            throughput,
            latency,
            rate,
            per_device,
            sum(sizes) / len(sizes) if sizes else 0.0,
            (redis_after - redis_before) / devices,
        )
    finally:
        stack.stop()


def _result(stdout: str) -> LoadResult:
    out = json.loads(stdout.strip().splitlines()[-1])
    return LoadResult(out["accepted"], out["rejected"], out["rate"], out["p50_ms"], out["p99_ms"])


def measure_scale(base: Path, sizes: list[int], seconds: float, rate: float) -> list[ScalePoint]:
    """One point per fleet size; the latency phase runs at the same total `rate` at every size."""
    return [measure_point(base, size, seconds, rate) for size in sizes]
