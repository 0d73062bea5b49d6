"""HTTP glue shared by the apps: domain errors to responses, typed dependencies, liveness,
readiness and metrics endpoints."""

from __future__ import annotations

from typing import Any, TypeVar

import svcs
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.domain.errors import TwinError

T = TypeVar("T")


def provided(kind: type[T]) -> Any:
    """A route's dependency on the service of type `kind` the app's lifespan registered:
    `Writer = Annotated[TwinWriter, provided(TwinWriter)]` (tests register another)."""

    async def get(services: svcs.fastapi.DepContainer) -> T:
        return await services.aget(kind)

    return Depends(get)


def install_common(app: FastAPI) -> None:
    """Map `TwinError` to its status code; add `/healthz` (liveness: the process answers),
    `/readyz` (readiness: every registered service's ping — the sidecar, the store — passes) and
    `/metrics`."""

    @app.exception_handler(TwinError)
    async def twin_error(_: Request, error: TwinError) -> JSONResponse:
        return JSONResponse({"code": int(error.code), "message": error.message}, status_code=int(error.code))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(services: svcs.fastapi.DepContainer) -> JSONResponse:
        checks: dict[str, str] = {}
        for ping in services.get_pings():
            name = ping.name.rsplit(".", 1)[-1]
            try:
                await ping.aping()
                checks[name] = "ok"
            except Exception as error:  # noqa: BLE001 - any failure means not ready, and says why
                checks[name] = f"failed: {error!r}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
