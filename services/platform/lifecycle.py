"""What every app does around its life: structured logs under its name, and its sidecar client
connected in the background (daprd only turns healthy once the app listens) and closed at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from services.platform.logging import configure_logging
from services.platform.sidecar import Sidecar

S = TypeVar("S", bound=Sidecar)


@asynccontextmanager
async def running_sidecar(app_name: str, sidecar: S) -> AsyncIterator[S]:
    """Configure logging for `app_name`, connect `sidecar` in the background, close it on exit."""
    configure_logging(app_name)
    connecting = asyncio.create_task(sidecar.connect())
    try:
        yield sidecar
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        await sidecar.close()
