"""Fixtures that start the real parts (Redis, Mosquitto, daprd, the apps) and always stop them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.devstack.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A whole suite on free loopback ports, private to one test module."""
    run = Stack(Path(tmp_path_factory.mktemp("stack")))
    try:
        run.start()
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=20) as client:
        yield client
