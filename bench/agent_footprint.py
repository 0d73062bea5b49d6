"""The device agent's footprint on a device: resident memory of the agent process and of its
daprd, measured separately after boot and after a workload (1,000 events through the outbox and a
few desired changes applied), and the raw floor: a bare Python interpreter's resident memory."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.devtools.agent import LocalAgent
from services.devtools.stack import Stack


@dataclass
class Footprint:
    rss_mib: float
    peak_mib: float
    anon_mib: float
    """The private part of the RSS (RssAnon: heap, stacks); the rest is file pages (the program's
    code and libraries as mapped from disk, shared and reclaimable)."""


def footprint(pid: int) -> Footprint:
    """VmRSS, VmHWM (peak) and RssAnon of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Footprint(*(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon")))


def python_floor() -> Footprint:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(1)
        return footprint(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def measure_agent(stack: Stack, events: int = 1000, device: str = "bench-agent") -> dict[str, Footprint]:
    password = stack.provision_devices([device])[device]
    agent = LocalAgent(stack.run_dir / "agents" / device, device, password, stack.mqtt_port, {})
    agent.start()
    try:
        _wait_connected(agent)
        assert agent.app.pid is not None and agent.daprd.pid is not None
        figures = {"agent (boot)": footprint(agent.app.pid), "daprd (boot)": footprint(agent.daprd.pid)}
        with httpx.Client(headers=stack.headers, timeout=30) as client:
            for start in range(0, events, 100):
                batch = [{"type": "telemetry", "data": {"i": i, "t": 21.5}} for i in range(start, start + 100)]
                client.post(f"{agent.url}/v1/events", json=batch).raise_for_status()
            for rate in range(5):
                client.patch(f"{stack.api_url}/v1/twins/{device}/desired", json={"config": {"rate": rate}})
                time.sleep(0.3)
        time.sleep(2)
        figures["agent (after load)"] = footprint(agent.app.pid)
        figures["daprd (after load)"] = footprint(agent.daprd.pid)
        figures["floor: bare python"] = python_floor()
        return figures
    finally:
        agent.stop()


def _wait_connected(agent: LocalAgent, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{agent.url}/v1/status").json()["connected"]:
            return
        time.sleep(0.2)
    raise TimeoutError("agent did not connect")
