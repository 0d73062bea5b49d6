"""Devices for tests, provisioned with their own broker credentials on a running suite: links
speaking the device contract, and simulated devices that apply what they are told."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection

from services.contracts.topics import profile
from services.devtools.fleet.fleet import SimulatedDevice, initial_state
from services.devtools.fleet.link import DeviceLink
from tests.support.suites import RunningSuite


def new_device_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def link(
    stack: RunningSuite, device_id: str, shadow: str = "", *, provision: bool = True, **kwargs: object
) -> DeviceLink:
    if provision:
        stack.provision_devices([device_id])
    return DeviceLink(
        device_id,
        stack.device_password(device_id),
        stack.mqtt_host,
        stack.mqtts_port if kwargs.get("tls") else stack.mqtt_port,
        profile(stack.topic_profile),
        shadow,
        **kwargs,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def simulated_devices(
    stack: RunningSuite, ids: list[str], refusing: Collection[str] = frozenset()
) -> AsyncIterator[None]:
    """Simulated devices (own MQTT connection each) that apply their desired state and report it;
    those in `refusing` report the `config` key FAILED instead."""
    passwords = stack.provision_devices(ids)
    async with contextlib.AsyncExitStack() as exits:
        runs = []
        for device_id in ids:
            device_link = DeviceLink(
                device_id, passwords[device_id], stack.mqtt_host, stack.mqtt_port, profile(stack.topic_profile)
            )
            await exits.enter_async_context(device_link)
            refuses = frozenset({"config"}) if device_id in refusing else frozenset()
            device = SimulatedDevice(device_link, 0, initial_state(device_id), refuses=refuses)
            runs.append(asyncio.create_task(device.run()))
        try:
            yield
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
