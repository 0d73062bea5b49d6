"""Kill parts mid-stream of 1,000 updates from 50 devices; afterwards every twin must equal its
device's last reported state, with version == number of updates (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio

import pytest

from services.devtools.stack import Stack
from tests.support.streams import interrupted_stream

pytestmark = pytest.mark.slow
STACK_ENV = {"TWINFLEET_RATE_PER_SECOND": "1000", "TWINFLEET_RATE_BURST": "1000"}
STACK_REDIS_FSYNC = "always"  # an acknowledged write must survive the store being killed
DEVICES = 50
UPDATES = 20


async def kill_and_restart(stack: Stack, name: str) -> None:
    stack.procs[name].kill()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(stack.restart, name)
    if name == "twin-store":
        await asyncio.to_thread(stack.wait_app, name)


@pytest.mark.parametrize("victim", ["twin-store", "twin-store-daprd", "redis", "mosquitto"])
async def test_kill_mid_stream(stack: Stack, victim: str) -> None:
    await interrupted_stream(stack, lambda: kill_and_restart(stack, victim), DEVICES, UPDATES)
