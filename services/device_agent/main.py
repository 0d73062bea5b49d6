"""device-agent: the Dapr app on the device (K3s pod with its own sidecar) that keeps the device
in step with its twin, queues its events, and runs its durable commands.

Served on Starlette alone (`edge.py`: its guard, probes and error answers): the cloud apps' guard
brings OIDC, JWT and audit publishing, none of which a device takes, and FastAPI's models cost
memory a device does not have (issue 12's budget)."""

from __future__ import annotations

# isort: off
from services.device_agent import lean  # noqa: F401 - first: keeps unused optional integrations out
# isort: on

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.contracts.agent import MAX_REQUEST_BYTES
from services.contracts.topics import DeviceChannels, Operation, Reply, TwinAddress
from services.device_agent.api import CLOUD, COMMANDS_ROUTE, DELTA_ROUTE, EVENTS_ACK_ROUTE, REPLIES_ROUTE, ROUTES
from services.device_agent.build import build_agent
from services.device_agent.edge import AgentGuard, healthz, limited, metrics, readyz
from services.device_agent.settings import get_agent_settings
from services.domain.errors import TwinError
from services.platform.cloudevents import subscription
from services.platform.lifecycle import running_sidecar
from services.platform.names import AGENT_BROKER, DEVICE_AGENT_APP
from services.platform.responses import failure, twin_error


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    agent = build_agent(get_agent_settings())
    async with running_sidecar(DEVICE_AGENT_APP, agent.sidecar, traces=False):
        app.state.agent = agent
        await agent.start()
        yield
        await agent.stop()


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
    exception_handlers={TwinError: twin_error, HTTPException: limited, Exception: failure},
)
# inside the guard: a chunked body is cut off as it streams past the limit (a 413 from `http_error`)
app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_REQUEST_BYTES)
app.add_middleware(AgentGuard, routes=routes, app_token=get_agent_settings().app_api_token)
