"""Device links for the bench's latency probes (the load itself comes from `bench/loadgen`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.contracts.topics import profile
from services.devtools.fleet.link import DeviceLink
from services.devtools.stack import Stack


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
