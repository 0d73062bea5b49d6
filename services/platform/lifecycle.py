"""What every app does around its life: structured logs under its name, its sidecar client
connected in the background (daprd only turns healthy once the app listens) and closed at the end,
the platform services registered for its routes and readiness, and its background work."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from services.platform.logging import configure_logging

if TYPE_CHECKING:  # the Dapr SDK and svcs stay out of processes that never use them (the device agent)
    import svcs

    from services.platform.sidecar import Sidecar
    from services.platform.state import StateRepository


class SidecarClient(Protocol):
    async def connect(self) -> None: ...
    async def close(self) -> None: ...


S = TypeVar("S", bound=SidecarClient)


@asynccontextmanager
async def running_sidecar(app_name: str, sidecar: S, *, traces: bool = True) -> AsyncIterator[S]:
    """Configure logging (and, unless `traces` is false, traces) for `app_name`, connect `sidecar`
    in the background, close it (and flush the spans) on exit. The device agent exports no traces
    of its own (its sidecar traces its calls), so OpenTelemetry stays out of its process."""
    configure_logging(app_name)
    if traces:
        from services.platform import tracing

        tracing.setup(app_name)
    connecting = asyncio.create_task(sidecar.connect())
    try:
        yield sidecar
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        await sidecar.close()
        if traces:
            from services.platform import tracing

            tracing.shutdown()


def register_platform(registry: svcs.Registry, sidecar: Sidecar, *, state: bool = True) -> StateRepository:
    """Register the sidecar and (unless `state` is false) the state repository over it, each with
    its readiness ping; returns the repository."""
    from services.platform.sidecar import Sidecar
    from services.platform.state import StateRepository

    registry.register_value(Sidecar, sidecar, ping=Sidecar.ping)
    repository = StateRepository(sidecar)
    if state:
        registry.register_value(StateRepository, repository, ping=StateRepository.ping)
    return repository


@asynccontextmanager
async def running(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` (a loop that runs for ever) as a task while the block runs; cancel it after."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class TimeSlices:
    """Long CPU-bound loops (evaluating conditions over a page of twins) hand the event loop back
    every `slice_seconds`, so requests and deliveries are answered meanwhile rather than after."""

    def __init__(self, slice_seconds: float = 0.005) -> None:
        self.slice_seconds = slice_seconds
        self._since = time.monotonic()

    async def pause(self) -> None:
        now = time.monotonic()
        if now - self._since >= self.slice_seconds:
            await asyncio.sleep(0)
            self._since = time.monotonic()
