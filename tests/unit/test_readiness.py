"""Readiness reports every registered service's ping: a sidecar that does not answer is a 503
naming it, while liveness still answers."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
import svcs
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.devtools.processes import free_port
from services.platform.http import install_common
from services.platform.sidecar import Sidecar, SidecarTimeout


def app_with(sidecar: Sidecar) -> FastAPI:
    @svcs.fastapi.lifespan
    async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
        registry.register_value(Sidecar, sidecar, ping=Sidecar.ping)
        yield

    app = FastAPI(lifespan=lifespan)
    install_common(app, {}, "test")
    return app


def test_a_sidecar_that_does_not_answer_makes_the_app_not_ready() -> None:
    port = free_port()  # nothing listens there
    with TestClient(app_with(Sidecar(f"127.0.0.1:{port}", port))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready" and "ConnectError" in ready.json()["checks"]["Sidecar"]


async def test_a_call_that_timed_out_before_the_sidecar_came_up_does_not_break_later_calls() -> None:
    """A call made while the sidecar is still starting gives up after its timeout; the client the
    sidecar gets afterwards still serves every later call (the shared wait is not cancelled)."""
    port = free_port()
    sidecar = Sidecar(f"127.0.0.1:{port}", port, call_timeout=0.05)
    with pytest.raises(SidecarTimeout):
        await sidecar.call("get_state", "store", "key")

    class Client:
        async def get_state(self, store: str, key: str) -> str:
            return f"{store}/{key}"

    assert sidecar._client_ready is not None and not sidecar._client_ready.cancelled()
    sidecar._client_ready.set_result(Client())  # type: ignore[arg-type]
    assert await sidecar.call("get_state", "store", "key") == "store/key"
