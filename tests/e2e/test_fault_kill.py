"""Kill parts mid-stream of 1,000 updates from 50 devices; afterwards every twin must equal its
device's last reported state, with version == number of updates (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
import contextlib
import random

import aiomqtt
import httpx
import pytest

from services.contracts.topics import Operation
from services.devtools.fleet.link import DeviceLink
from services.devtools.stack import Stack
from tests.support.devices import link, new_device_id

pytestmark = pytest.mark.slow
STACK_ENV = {"TWINFLEET_RATE_PER_SECOND": "1000", "TWINFLEET_RATE_BURST": "1000"}
STACK_REDIS_FSYNC = "always"  # an acknowledged write must survive the store being killed
DEVICES = 50
UPDATES = 20


class ResilientDevice:
    """A device that re-sends the same request (same clientToken) until it is answered, and
    reconnects when the broker goes away — what a well-behaved device does."""

    def __init__(self, stack: Stack, device_id: str) -> None:
        self.stack = stack
        self.device_id = device_id
        self.link: DeviceLink | None = None

    async def send_until_accepted(self, body: dict[str, object]) -> None:
        for _ in range(120):
            try:
                if self.link is None:
                    self.link = await link(self.stack, self.device_id, provision=False).__aenter__()
                await self.link.request(Operation.UPDATE, dict(body), timeout=3)
                return
            except TimeoutError:
                continue
            except aiomqtt.MqttError:
                await self.close()
                await asyncio.sleep(0.5)
        raise AssertionError(f"{self.device_id}: update never accepted")

    async def close(self) -> None:
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.__aexit__(None, None, None)
            self.link = None


async def stream(stack: Stack, progress: list[int]) -> list[str]:
    ids = [new_device_id(f"f{i:02d}") for i in range(DEVICES)]
    stack.provision_devices(ids)

    async def device(device_id: str) -> None:
        dev = ResilientDevice(stack, device_id)
        try:
            for seq in range(UPDATES):
                body = {
                    "state": {"reported": {"seq": seq, "payload": random.random()}},
                    "clientToken": f"{device_id}-{seq}",
                }
                await dev.send_until_accepted(body)
                progress[0] += 1
            await dev.send_until_accepted(
                {"state": {"reported": {"payload": None, "done": True}}, "clientToken": f"{device_id}-end"}
            )
        finally:
            await dev.close()

    await asyncio.gather(*(device(d) for d in ids))
    return ids


async def kill_midway(stack: Stack, name: str, progress: list[int], killed: list[int]) -> None:
    total = DEVICES * UPDATES
    while progress[0] < total * 0.3:  # noqa: ASYNC110 - polls a counter the devices bump
        await asyncio.sleep(0.01)
    killed.append(progress[0])
    stack.procs[name].kill()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(stack.restart, name)
    if name == "twin-store":
        await asyncio.to_thread(stack.wait_app, name)


async def check(stack: Stack, ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=20) as api:
        for device_id in ids:
            twin = (await api.get(f"/v1/twins/{device_id}")).json()
            assert twin["state"]["reported"] == {"seq": UPDATES - 1, "done": True}, device_id
            assert twin["version"] == UPDATES + 1, (device_id, twin["version"])


@pytest.mark.parametrize("victim", ["twin-store", "twin-store-daprd", "redis", "mosquitto"])
async def test_kill_mid_stream(stack: Stack, victim: str) -> None:
    progress: list[int] = [0]
    killed: list[int] = []
    killer = asyncio.create_task(kill_midway(stack, victim, progress, killed))
    try:
        ids = await asyncio.wait_for(stream(stack, progress), 240)
    finally:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
    assert killed and killed[0] < DEVICES * UPDATES, "the victim was not killed mid-stream"
    await check(stack, ids)
