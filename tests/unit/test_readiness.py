"""Readiness reports every registered service's ping: a sidecar that does not answer is a 503
naming it, while liveness still answers."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import svcs
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.devtools.processes import free_port
from services.platform.http import install_common
from services.platform.sidecar import Sidecar


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
