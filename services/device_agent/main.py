"""device-agent: the Dapr app on the device (K3s pod with its own sidecar) that keeps the device
in step with its twin, queues its events, and runs its durable commands.

Served on Starlette alone, with a guard of its own that knows the two kinds of caller an agent has
(apps on the device, and its sidecar with the app token): the cloud apps' guard brings OIDC, JWT
and audit publishing, none of which a device takes, and FastAPI's models cost memory a device
does not have (issue 12's budget)."""

from __future__ import annotations

# isort: off
from services.device_agent import lean  # noqa: F401 - first: keeps unused optional integrations out
# isort: on

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.contracts.agent import MAX_REQUEST_BYTES
from services.contracts.topics import DeviceChannels, Operation, Reply, TwinAddress
from services.device_agent.access import RULES
from services.device_agent.api import CLOUD, COMMANDS_ROUTE, DELTA_ROUTE, EVENTS_ACK_ROUTE, REPLIES_ROUTE, ROUTES
from services.device_agent.build import AGENT_VERSION, build_agent
from services.device_agent.settings import get_agent_settings
from services.domain.access import COMMON_RULES, Access
from services.domain.errors import TwinError, forbidden, too_large
from services.platform.cloudevents import subscription
from services.platform.lifecycle import running_sidecar
from services.platform.names import AGENT_BROKER, DEVICE_AGENT_APP
from services.platform.responses import check_app_token, error_response, header, refuse

log = structlog.get_logger()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    agent = build_agent(get_agent_settings())
    async with running_sidecar(DEVICE_AGENT_APP, agent.sidecar, traces=False):
        app.state.agent = agent
        await agent.start()
        yield
        await agent.stop()


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


async def subscriptions(_: Request) -> Response:
    settings = get_agent_settings()
    profile, address = settings.topics(), TwinAddress(settings.device_id)
    channels = DeviceChannels(settings.device_id)
    topics = [profile.reply_topic(address, op, r) for op in Operation for r in (Reply.ACCEPTED, Reply.REJECTED)]
    return JSONResponse(
        [
            *(subscription(AGENT_BROKER, t, CLOUD + REPLIES_ROUTE, raw=True) for t in topics),
            subscription(
                AGENT_BROKER, profile.reply_topic(address, Operation.UPDATE, Reply.DELTA), CLOUD + DELTA_ROUTE, raw=True
            ),
            subscription(AGENT_BROKER, channels.commands_filter, CLOUD + COMMANDS_ROUTE, raw=True),
            subscription(AGENT_BROKER, channels.events_ack, CLOUD + EVENTS_ACK_ROUTE, raw=True),
        ]
    )


class AgentGuard:
    """Every route by its rule (`access.py`, and the probes' common ones): `PUBLIC` routes serve
    apps on the device, `SIDECAR` routes only a caller with the app token; a route without a rule,
    or with any other kind, is refused for everyone (a device agent authenticates no people)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], app_token: str) -> None:
        self.app, self.routes, self.app_token = app, routes, app_token.encode()
        self.rules = {**COMMON_RULES, **RULES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        template = self._template(scope) if scope["type"] == "http" else None
        if template is not None:  # no such route: Starlette answers 404/405
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            rule = self.rules.get(f"{method} {template}")
            try:
                if int(header(scope, b"content-length") or 0) > MAX_REQUEST_BYTES:
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

    def _template(self, scope: Scope) -> str | None:
        """The path of the route `scope` reaches (or whose path it matches with another method)."""
        partial: str | None = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", ""))
            if match is Match.PARTIAL and partial is None:
                partial = str(getattr(route, "path", ""))
        return partial


async def twin_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, TwinError)
    return error_response(int(error.code), error.message)


async def http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 413:
        return error_response(413, f"the request body may hold at most {MAX_REQUEST_BYTES} bytes")
    return error_response(error.status_code, str(error.detail), error.headers)


async def failure(request: Request, error: Exception) -> Response:
    log.error("request failed", path=request.url.path, error=repr(error))
    return error_response(500, f"internal error ({type(error).__name__}); the call may be retried")


routes: list[BaseRoute] = [
    *ROUTES,
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/dapr/subscribe", subscriptions, methods=["GET"]),
]
app = Starlette(
    routes=routes,
    lifespan=lifespan,
    exception_handlers={TwinError: twin_error, HTTPException: http_error, Exception: failure},
)
# inside the guard: a chunked body is cut off as it streams past the limit (a 413 from `http_error`)
app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_REQUEST_BYTES)
app.add_middleware(AgentGuard, routes=routes, app_token=get_agent_settings().app_api_token)
app.state.version = AGENT_VERSION
