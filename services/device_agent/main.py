"""device-agent: the Dapr app on the device (K3s pod with its own sidecar) that keeps the device
in step with its twin, queues its events, and runs its durable commands."""

from __future__ import annotations

# isort: off
from services.device_agent import lean  # noqa: F401 - first: keeps unused optional integrations out
# isort: on

from collections.abc import AsyncGenerator
from typing import Any

import svcs
from fastapi import FastAPI

from services.contracts.topics import DeviceChannels, Operation, Reply, TwinAddress
from services.device_agent.access import RULES
from services.device_agent.agent import DeviceAgent
from services.device_agent.api import COMMANDS_ROUTE, DELTA_ROUTE, EVENTS_ACK_ROUTE, REPLIES_ROUTE, deliveries, router
from services.device_agent.build import AGENT_VERSION, build_agent
from services.device_agent.link import AgentSidecar
from services.device_agent.settings import get_agent_settings
from services.platform.cloudevents import subscription
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import AGENT_BROKER, DEVICE_AGENT_APP


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    agent = build_agent(get_agent_settings())
    async with running_sidecar(DEVICE_AGENT_APP, agent.sidecar):
        registry.register_value(AgentSidecar, agent.sidecar, ping=AgentSidecar.ping)
        registry.register_value(DeviceAgent, agent)
        await agent.start()
        yield
        await agent.stop()


app = FastAPI(title="Twinfleet device agent", version=AGENT_VERSION, lifespan=lifespan)
install_common(app, RULES, DEVICE_AGENT_APP)
app.include_router(router)
app.include_router(deliveries)


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    settings = get_agent_settings()
    profile, address = settings.topics(), TwinAddress(settings.device_id)
    channels = DeviceChannels(settings.device_id)
    route = deliveries.prefix
    topics = [profile.reply_topic(address, op, r) for op in Operation for r in (Reply.ACCEPTED, Reply.REJECTED)]
    return [
        *(subscription(AGENT_BROKER, t, route + REPLIES_ROUTE, raw=True) for t in topics),
        subscription(
            AGENT_BROKER, profile.reply_topic(address, Operation.UPDATE, Reply.DELTA), route + DELTA_ROUTE, raw=True
        ),
        subscription(AGENT_BROKER, channels.commands_filter, route + COMMANDS_ROUTE, raw=True),
        subscription(AGENT_BROKER, channels.events_ack, route + EVENTS_ACK_ROUTE, raw=True),
    ]
