"""Load generation with simulated devices (each its own connection and credentials)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.devstack.stack import Stack
from services.domain.topics import Operation, profile
from services.fleet_sim.link import DeviceLink, Rejected


@dataclass
class Result:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


@contextlib.asynccontextmanager
async def fleet(stack: Stack, size: int, prefix: str) -> AsyncIterator[list[DeviceLink]]:
    ids = [f"{prefix}-{i:05d}" for i in range(size)]
    creds = stack.provision_devices(ids)
    await asyncio.sleep(0.3)
    limit = asyncio.Semaphore(50)
    async with contextlib.AsyncExitStack() as exits:
        links: list[DeviceLink] = []

        async def connect(device_id: str) -> None:
            async with limit:
                link = DeviceLink(
                    device_id, creds[device_id], "127.0.0.1", stack.mqtt_port, profile(stack.topic_profile)
                )
                links.append(await exits.enter_async_context(link))

        await asyncio.gather(*(connect(d) for d in ids))
        yield links


async def _one(link: DeviceLink, result: Result, seq: int) -> None:
    started = time.perf_counter()
    result.sent += 1
    try:
        await link.request(
            Operation.UPDATE,
            {"state": {"reported": {"seq": seq, "temperature": 20 + seq % 10}}, "clientToken": uuid.uuid4().hex},
            timeout=30,
        )
        result.accepted += 1
        result.latencies.append(time.perf_counter() - started)
    except (Rejected, TimeoutError):
        result.rejected += 1


async def closed_loop(links: list[DeviceLink], seconds: float) -> Result:
    """Every device sends its next update as soon as the previous one is answered."""
    result = Result()
    deadline = time.perf_counter() + seconds

    async def device(link: DeviceLink) -> None:
        seq = 0
        while time.perf_counter() < deadline:
            await _one(link, result, seq)
            seq += 1

    started = time.perf_counter()
    await asyncio.gather(*(device(link) for link in links))
    result.elapsed = time.perf_counter() - started
    return result


async def open_loop(links: list[DeviceLink], rate: float, seconds: float) -> Result:
    """Send `rate` updates/s spread over the devices, whatever the replies do."""
    result = Result()
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    started = time.perf_counter()
    for n in range(total):
        target = started + n / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one(links[n % len(links)], result, n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - started
    return result
