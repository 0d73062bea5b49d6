"""HTTP glue shared by the apps: domain errors to responses, health and metrics endpoints."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.domain.errors import TwinError


def install_common(app: FastAPI) -> None:
    """Map `TwinError` to its status code and add `/healthz` and `/metrics`."""

    @app.exception_handler(TwinError)
    async def twin_error(_: Request, error: TwinError) -> JSONResponse:
        return JSONResponse({"code": int(error.code), "message": error.message}, status_code=int(error.code))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
