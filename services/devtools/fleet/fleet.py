"""The fleet simulator: many devices in one process, each with its own MQTT connection and
credentials, reporting state and applying the deltas they receive (then reporting them back)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from services.contracts.device_events import DeviceEvent, EventBatch
from services.contracts.topics import DeviceChannels, TopicProfile
from services.devtools.fleet.link import DeviceLink, Rejected
from services.devtools.fleet.software import SimulatedSoftware
from services.devtools.pki import TlsIdentity
from services.domain.device.core import (
    Applied,
    ApplyPlan,
    DeviceView,
    Failed,
    apply_in_memory,
    plan_apply,
    report_for,
    take_delta,
    take_document,
    took_report,
)
from services.domain.software.twin_key import SOFTWARE_KEY

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


def refuse(plan: ApplyPlan, keys: frozenset[str]) -> ApplyPlan:
    """`plan` without the keys a device refuses."""
    if not keys:
        return plan
    return ApplyPlan({k: v for k, v in plan.apply.items() if k not in keys}, plan.unsupported)


@dataclass
class SimulatedDevice:
    """A device that applies what its twin desires at once and reports the result, driven by the
    same device core as the agent (versions filter stale deltas; every key is supported)."""

    link: DeviceLink
    report_interval: float
    state: dict[str, Any]
    view: DeviceView = field(default_factory=DeviceView)
    refuses: frozenset[str] = frozenset()
    """Keys this device refuses to apply (it reports them FAILED): faulty devices for rollouts."""
    software: SimulatedSoftware | None = None
    """Takes the `software` key like the agent does (download-only, retries, failures on demand);
    an unhealthy version is reported under `health` and announced with an `error` event."""
    events_sent: int = 0

    def __post_init__(self) -> None:
        if self.software is not None:
            self.state = {**self.state, SOFTWARE_KEY: self.software.report, "health": {"errors": 0}}

    async def run(self) -> None:
        await self._report(self.state)
        document = await self.link.get()
        telemetry = asyncio.create_task(self._telemetry())
        try:
            await self._converge(take_document(self.view, document))
            while True:
                await self._converge(take_delta(self.view, await self.link.deltas.get()))
        finally:
            telemetry.cancel()

    async def _converge(self, view: DeviceView | None) -> None:
        if view is None:  # stale: not newer than what this device already took
            return
        self.view = view
        done = {SOFTWARE_KEY: self.software.satisfied} if self.software is not None else None
        plan = plan_apply(view, self.state, supported=view.desired.keys() | self.state.keys(), satisfied=done)
        update = plan.apply.get(SOFTWARE_KEY) if self.software is not None else None
        plain = ApplyPlan(
            {k: v for k, v in plan.apply.items() if k != SOFTWARE_KEY or update is None}, plan.unsupported
        )
        if update is not None:
            plain = ApplyPlan({k: v for k, v in plain.apply.items() if k != SOFTWARE_KEY}, plan.unsupported)
        self.state, outcomes = apply_in_memory(self.state, refuse(plain, self.refuses))
        outcomes |= {key: Failed("refused by this simulated device") for key in plain.apply if key in self.refuses}
        if update is not None and self.software is not None:
            value = await self.software.apply(update)
            self.state[SOFTWARE_KEY] = value
            outcomes[SOFTWARE_KEY] = Applied(value)
            if self.software.unhealthy and self.state["health"]["errors"] == 0:
                self.state["health"] = {"errors": 1}
                await self.emit("error", {"after": value.get("version")})
        patch = report_for(view, self.state, outcomes, plan.unsupported)
        if patch:
            with contextlib.suppress(Rejected, TimeoutError):
                await self._report(patch)

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Send one device event (the next sequence number; the cloud's acknowledgement is not
        waited for: a simulated device does not resend)."""
        self.events_sent += 1
        batch = EventBatch(events=[DeviceEvent(seq=self.events_sent, ts=time.time(), type=kind, data=data)])
        await self.link.send(DeviceChannels(self.link.address.device_id).events, batch.model_dump(mode="json"))

    async def _report(self, patch: dict[str, Any]) -> None:
        await self.link.report(patch)
        self.view = took_report(self.view, patch)

    async def _telemetry(self) -> None:
        if self.report_interval <= 0:
            return
        rng = random.Random()
        await asyncio.sleep(rng.uniform(0, self.report_interval))
        while True:
            temperature = round(self.state["telemetry"]["temperature"] + rng.uniform(-0.5, 0.5), 1)
            self.state["telemetry"]["temperature"] = temperature
            with contextlib.suppress(Rejected, TimeoutError):
                await self._report({"telemetry": {"temperature": temperature}})
            await asyncio.sleep(self.report_interval)


async def run_fleet(
    ids: list[str],
    passwords: dict[str, str],
    host: str,
    port: int,
    profile: TopicProfile,
    report_interval: float,
    connect_concurrency: int = 50,
    certificates: Callable[[str], TlsIdentity] | None = None,
) -> None:
    """Connect every device (a few at a time) and run them until cancelled; with `certificates`,
    each over TLS with its own client certificate (`port` is then the TLS listener's)."""
    limit = asyncio.Semaphore(connect_concurrency)
    async with contextlib.AsyncExitStack() as stack:
        devices = []

        async def connect(device_id: str) -> None:
            async with limit:
                tls = certificates(device_id) if certificates is not None else None
                link = DeviceLink(device_id, passwords.get(device_id, ""), host, port, profile, tls=tls, presence=True)
                await stack.enter_async_context(link)
                state = {**initial_state(device_id), "connection": "connected"}
                devices.append(SimulatedDevice(link, report_interval, state))

        await asyncio.gather(*(connect(d) for d in ids))
        log.info("fleet connected", devices=len(devices))
        await asyncio.gather(*(d.run() for d in devices))
