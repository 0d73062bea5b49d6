"""The device agent's HTTP edge: its guard, probes and error answers. An agent has two kinds of
caller — apps on the device (`PUBLIC` routes) and its own sidecar with the app token (`SIDECAR`) —
so the guard knows just those, and shares the app-token check and the refusal body with the cloud
apps' guard (`services.platform.responses`); OIDC, JWT and audit publishing stay out of a device."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from services.contracts.agent import MAX_REQUEST_BYTES
from services.device_agent.access import RULES
from services.domain.access import COMMON_RULES, Access
from services.domain.errors import TwinError, bad_request, forbidden, too_large
from services.platform.responses import check_app_token, error_response, header, http_error, refuse, route_template


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the agent's sidecar answers."""
    try:
        await request.app.state.agent.sidecar.ping()
    except Exception as error:  # noqa: BLE001 - any failure means not ready, and says why
        return JSONResponse({"status": "not ready", "checks": {"sidecar": f"failed: {error!r}"}}, status_code=503)
    return JSONResponse({"status": "ready", "checks": {"sidecar": "ok"}})


async def metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class AgentGuard:
    """Every route by its rule (`access.py`, and the probes' common ones): `PUBLIC` routes serve
    apps on the device, `SIDECAR` routes only a caller with the app token; a route without a rule,
    or with any other kind, is refused for everyone (a device agent authenticates no people)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], app_token: str) -> None:
        self.app, self.routes, self.app_token = app, routes, app_token.encode()
        self.rules = {**COMMON_RULES, **RULES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        template = route_template(self.routes, scope) if scope["type"] == "http" else None
        if template is not None:  # no such route: Starlette answers 404/405
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            rule = self.rules.get(f"{method} {template}")
            try:
                if _announced_length(scope) > MAX_REQUEST_BYTES:
                    # announced too large: refused unread (a chunked body is cut off as it streams)
                    raise too_large(f"the request body may hold at most {MAX_REQUEST_BYTES} bytes")
                if rule is None:
                    raise forbidden(f"{method} {template} has no access rule, so nobody may call it")
                if rule.access is Access.SIDECAR:
                    check_app_token(scope, self.app_token)
                elif rule.access is not Access.PUBLIC:
                    raise forbidden(f"{method} {template}: the agent takes calls from its device and sidecar only")
            except TwinError as error:
                await refuse(send, error)
                return
        await self.app(scope, receive, send)


async def limited(request: Request, error: Exception) -> Response:
    """Starlette's refusals as the error body; a 413 says the agent's limit."""
    if isinstance(error, HTTPException) and error.status_code == 413:
        return error_response(413, f"the request body may hold at most {MAX_REQUEST_BYTES} bytes")
    return await http_error(request, error)


def _announced_length(scope: Scope) -> int:
    value = header(scope, b"content-length")
    try:
        return int(value) if value is not None else 0
    except ValueError:
        raise bad_request(f"Content-Length {value!r} is not a number") from None
