"""HTTP glue shared by the apps: one error body everywhere (`{"code", "message"}`, for domain
errors, malformed requests, unknown routes and failures alike), typed dependencies, the access
guard, liveness, readiness and metrics endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import svcs
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from services.domain.access import Rule
from services.domain.errors import TwinError
from services.platform.auth import AccessPolicy, Guard
from services.platform.responses import error_response, failure, http_error, twin_error, validation_message
from services.platform.settings import Settings

T = TypeVar("T")


def provided(kind: type[T]) -> Any:
    """A route's dependency on the service of type `kind` the app's lifespan registered:
    `Writer = Annotated[TwinWriter, provided(TwinWriter)]` (tests register another)."""

    async def get(services: svcs.fastapi.DepContainer) -> T:
        return await services.aget(kind)

    return Depends(get)


def install_common(app: FastAPI, rules: Mapping[str, Rule], app_name: str, settings: Settings | None = None) -> None:
    """Guard every route by its rule in `rules` (`services.platform.auth`); answer every error with
    `{"code", "message"}` (a malformed request is a 400, not FastAPI's 422); add `/healthz`
    (liveness: the process answers), `/readyz` (readiness: every registered service's ping — the
    sidecar, the store — passes) and `/metrics`."""
    app.add_middleware(Guard, api=app, policy=AccessPolicy(rules), app_name=app_name, settings=settings or Settings())

    app.add_exception_handler(TwinError, twin_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, failure)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(error.errors()))

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
