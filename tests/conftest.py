"""Fixtures that start the real parts (Redis, Mosquitto, daprd, the apps) and always stop them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from services.devtools.stack import Stack
from services.platform.names import FIRMWARE_APP, ROLLOUT_APP
from tests.support.hydra import Hydra

# Test data generation time depends on what else the machine runs (the suite starts real
# processes); no deadline and no "too slow" verdicts, so a loaded CI machine gives the same result.
settings.register_profile("twinfleet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("twinfleet")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A whole suite on free loopback ports, private to one test module.

    A module may set `STACK_PROFILE` (topic profile), `STACK_ENV` (app settings),
    `STACK_ARTIFACTS` (`azure`: Azurite, the default; `binding`: chunk objects on disk) and
    `STACK_IDENTITY`, the name of a fixture giving the identity provider (default: the stack's own
    issuer), and `STACK_APPS` (the apps to run), to vary it.
    """
    identity_fixture = getattr(request.module, "STACK_IDENTITY", None)
    run = Stack(
        Path(tmp_path_factory.mktemp("stack")),
        topic_profile=getattr(request.module, "STACK_PROFILE", "default"),
        app_env=getattr(request.module, "STACK_ENV", None),
        redis_fsync=getattr(request.module, "STACK_REDIS_FSYNC", "everysec"),
        identity=request.getfixturevalue(identity_fixture) if identity_fixture else None,
        artifact_store=getattr(request.module, "STACK_ARTIFACTS", "azure"),
        **({"apps": request.module.STACK_APPS} if hasattr(request.module, "STACK_APPS") else {}),
    )
    try:
        run.start()
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def hydra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hydra]:
    """A Hydra of its own for a test module (`STACK_IDENTITY = "hydra"` makes the stack trust it)."""
    provider = Hydra(Path(tmp_path_factory.mktemp("hydra")))
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
async def firmware(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.app_url(FIRMWARE_APP), headers=stack.headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def rollouts(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.app_url(ROLLOUT_APP), headers=stack.headers, timeout=30) as client:
        yield client
