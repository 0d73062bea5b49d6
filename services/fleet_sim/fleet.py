"""The fleet simulator: many devices in one process, each with its own MQTT connection and
credentials, reporting state and applying the deltas they receive (then reporting them back)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

import structlog

from services.domain.merge import merge_patch
from services.domain.topics import TopicProfile
from services.fleet_sim.link import DeviceLink, Rejected

log = structlog.get_logger()


def fleet_ids(size: int, prefix: str = "sim") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(size)]


def initial_state(device_id: str) -> dict[str, Any]:
    rng = random.Random(device_id)
    return {
        "firmware": {"version": "1.0.0"},
        "config": {"sampleRate": 10, "fan": "auto"},
        "telemetry": {"temperature": round(rng.uniform(15, 30), 1)},
    }


@dataclass
class SimulatedDevice:
    """A device that applies every delta to its state at once and reports the result."""

    link: DeviceLink
    report_interval: float
    state: dict[str, Any]

    async def run(self) -> None:
        await self.link.report(self.state)
        await self.link.get()  # asks for the full delta too
        telemetry = asyncio.create_task(self._telemetry())
        try:
            while True:
                delta = await self.link.deltas.get()
                self.state = merge_patch(self.state, delta["state"])
                with contextlib.suppress(Rejected, TimeoutError):
                    await self.link.report(delta["state"])
        finally:
            telemetry.cancel()

    async def _telemetry(self) -> None:
        if self.report_interval <= 0:
            return
        rng = random.Random()
        await asyncio.sleep(rng.uniform(0, self.report_interval))
        while True:
            temperature = round(self.state["telemetry"]["temperature"] + rng.uniform(-0.5, 0.5), 1)
            self.state["telemetry"]["temperature"] = temperature
            with contextlib.suppress(Rejected, TimeoutError):
                await self.link.report({"telemetry": {"temperature": temperature}})
            await asyncio.sleep(self.report_interval)


async def run_fleet(
    ids: list[str],
    passwords: dict[str, str],
    host: str,
    port: int,
    profile: TopicProfile,
    report_interval: float,
    connect_concurrency: int = 50,
) -> None:
    """Connect every device (a few at a time) and run them until cancelled."""
    limit = asyncio.Semaphore(connect_concurrency)
    async with contextlib.AsyncExitStack() as stack:
        devices = []

        async def connect(device_id: str) -> None:
            async with limit:
                link = DeviceLink(device_id, passwords[device_id], host, port, profile)
                await stack.enter_async_context(link)
                devices.append(SimulatedDevice(link, report_interval, initial_state(device_id)))

        await asyncio.gather(*(connect(d) for d in ids))
        log.info("fleet connected", devices=len(devices))
        await asyncio.gather(*(d.run() for d in devices))
