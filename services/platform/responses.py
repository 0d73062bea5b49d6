"""The pieces of every app's HTTP edge that need nothing but Starlette: the one error body, the
message for a malformed request, a refusal sent before the app runs, and the sidecar's app-token
check. The cloud apps' guard (`services.platform.auth`) and the device agent's lean one share them;
keeping them here keeps the agent's process free of FastAPI, JWT and the audit machinery."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import Scope, Send

from services.domain.errors import TwinError, unauthorized

log = structlog.get_logger()


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one error body of every app."""
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


async def twin_error(_: Request, error: Exception) -> JSONResponse:
    """Exception handler: a refusal raised by a route (`TwinError`) as the error body."""
    assert isinstance(error, TwinError)
    return error_response(int(error.code), error.message)


async def http_error(_: Request, error: Exception) -> JSONResponse:
    """Exception handler: Starlette's own refusals (404, 405, 413, …) as the error body."""
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail), error.headers)


async def failure(request: Request, error: Exception) -> JSONResponse:
    """Exception handler: anything else is a 500 saying what failed (logged)."""
    log.error("request failed", path=request.url.path, error=repr(error))
    return error_response(500, f"internal error ({type(error).__name__}); the call may be retried")


def validation_message(errors: Any) -> str:
    """The first problem of a malformed request, located (`query.limit: Input should be …`)."""
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def route_template(routes: list[BaseRoute], scope: Scope) -> str | None:
    """The path template of the route `scope` reaches, or of one whose path it matches with another
    method (its rule then decides: none for that method is a 403); None when no path matches."""
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", ""))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", ""))
    return partial


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def check_app_token(scope: Scope, app_token: bytes) -> None:
    """Only the app's own sidecar knows its app token; without one configured, nobody passes."""
    sent = header(scope, b"dapr-api-token")
    if not app_token:
        raise unauthorized("this app has no app token configured (APP_API_TOKEN), so it takes no sidecar calls")
    if sent is None or not hmac.compare_digest(sent.encode("latin-1"), app_token):
        raise unauthorized("calls reach this app only through its Dapr sidecar (app token missing or wrong)")


async def refuse(send: Send, error: TwinError) -> None:
    """Answer with `error` before the app runs (the guards' refusals)."""
    body = json.dumps({"code": int(error.code), "message": error.message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if int(error.code) == 401:
        headers.append((b"www-authenticate", b'Bearer realm="twinfleet"'))
    await send({"type": "http.response.start", "status": int(error.code), "headers": headers})
    await send({"type": "http.response.body", "body": body})
