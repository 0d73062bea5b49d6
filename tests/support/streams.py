"""A stream of reported updates from many devices, interrupted mid-way (a part killed or
restarted); afterwards every twin must equal its device's last reported state, with version ==
number of updates (nothing lost, nothing applied twice)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import aiomqtt
import httpx

from services.contracts.topics import Operation
from services.devtools.fleet.link import DeviceLink
from tests.support.devices import link, new_device_id
from tests.support.suites import RunningSuite


class ResilientDevice:
    """A device that re-sends the same request (same clientToken) until it is answered, and
    reconnects when the broker goes away — what a well-behaved device does."""

    def __init__(self, stack: RunningSuite, device_id: str) -> None:
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


async def stream(stack: RunningSuite, progress: list[int], devices: int, updates: int) -> list[str]:
    """`devices` devices each report `updates` updates and a last one; `progress[0]` counts them."""
    ids = [new_device_id(f"f{i:02d}") for i in range(devices)]
    stack.provision_devices(ids)

    async def device(device_id: str) -> None:
        dev = ResilientDevice(stack, device_id)
        try:
            for seq in range(updates):
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


async def check(stack: RunningSuite, ids: list[str], updates: int) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=20) as api:
        for device_id in ids:
            answer = await api.get(f"/v1/twins/{device_id}")
            assert answer.status_code == 200, (device_id, answer.status_code, answer.text)
            twin = answer.json()
            assert twin["state"]["reported"] == {"seq": updates - 1, "done": True}, device_id
            assert twin["version"] == updates + 1, (device_id, twin["version"])


async def interrupted_stream(
    stack: RunningSuite,
    interrupt: Callable[[], Awaitable[None]],
    devices: int,
    updates: int,
    timeout: float = 240,
) -> None:
    """Run the stream, `interrupt` once 30% of it is accepted, then check every twin."""
    progress: list[int] = [0]
    interrupted: list[int] = []

    async def midway() -> None:
        while progress[0] < devices * updates * 0.3:  # noqa: ASYNC110 - polls a counter the devices bump
            await asyncio.sleep(0.01)
        interrupted.append(progress[0])
        await interrupt()

    interrupting = asyncio.create_task(midway())
    try:
        ids = await asyncio.wait_for(stream(stack, progress, devices, updates), timeout)
    finally:
        interrupting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await interrupting
    assert interrupted and interrupted[0] < devices * updates, "not interrupted mid-stream"
    await check(stack, ids, updates)
