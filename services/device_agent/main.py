"""device-agent: the Dapr app on the device (K3s pod with its own sidecar) that keeps the device
in step with its twin, queues its events, and runs its durable commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from services.contracts.topics import DeviceChannels, Operation, Reply, TwinAddress, valid_id
from services.contracts.wire import WireEncoding, decode_payload
from services.device_agent.agent import DeviceAgent
from services.device_agent.handlers import AgentInfoHandler, ConfigMapWriter, ConfigurationHandler, Handler
from services.device_agent.link import AgentSidecar
from services.device_agent.outbox import Outbox
from services.device_agent.software import (
    CommandHealth,
    CommandInstaller,
    DeploymentInstaller,
    FileSwapInstaller,
    Firmware,
    Installer,
    SoftwareHandler,
)
from services.domain.errors import TwinError, bad_request
from services.domain.json_values import JsonObject
from services.domain.software.metadata import trusted_keys
from services.platform.cloudevents import event_payload, subscription
from services.platform.http import install_common
from services.platform.lifecycle import running_sidecar
from services.platform.names import AGENT_BROKER, DEVICE_AGENT_APP
from services.platform.settings import AgentSettings, get_agent_settings

AGENT_VERSION = "0.1.0"


def software_handler(settings: AgentSettings, data_dir: Path) -> SoftwareHandler:
    """The software handler with the installer the settings name (`file`, `command`, `k3s`)."""
    if not settings.software_firmware_url or not settings.software_trusted_keys:
        raise ValueError("software updates need TWINFLEET_SOFTWARE_FIRMWARE_URL and TWINFLEET_SOFTWARE_TRUSTED_KEYS")
    health = CommandHealth(settings.software_health_command)
    installer: Installer
    if settings.software_installer == "file":
        installer = FileSwapInstaller(Path(settings.software_target), health)
    elif settings.software_installer == "command":
        installer = CommandInstaller(
            settings.software_install_command,
            settings.software_commit_command,
            settings.software_rollback_command,
            health,
        )
    elif settings.software_installer == "k3s":
        installer = DeploymentInstaller(
            settings.agent_namespace, settings.software_deployment, settings.software_container
        )
    else:
        raise ValueError(f"TWINFLEET_SOFTWARE_INSTALLER {settings.software_installer!r}: file, command or k3s")
    return SoftwareHandler(
        Firmware(settings.software_firmware_url, settings.device_id, settings.device_password),
        trusted_keys([k for k in settings.software_trusted_keys.split(",") if k.strip()]),
        installer,
        data_dir / "software",
        settings.software_version,
    )


def build_agent(settings: AgentSettings) -> DeviceAgent:
    if not valid_id(settings.device_id):
        raise ValueError(f"TWINFLEET_DEVICE_ID {settings.device_id!r} is not a valid device id")
    data_dir = Path(settings.agent_data_dir)
    sidecar = AgentSidecar(
        *settings.sidecar_args(), WireEncoding(settings.wire_encoding), settings.agent_publish_timeout
    )
    configmap = (
        ConfigMapWriter(settings.agent_configmap, settings.agent_namespace) if settings.agent_configmap else None
    )
    config_file = Path(settings.agent_config_file) if settings.agent_config_file else data_dir / "config.json"
    handlers: list[Handler] = [
        ConfigurationHandler(settings.agent_config_key, config_file, configmap, settings.agent_apply_delay)
    ]
    if settings.software_installer:
        handlers.append(software_handler(settings, data_dir))
    info = {"version": AGENT_VERSION, "wire": settings.wire_encoding, "handles": [h.key for h in handlers]}
    handlers.append(AgentInfoHandler("agent", info))
    outbox = Outbox(
        sidecar,
        DeviceChannels(settings.device_id).events,
        settings.agent_outbox_max,
        settings.agent_event_batch,
        settings.agent_ack_timeout,
    )
    return DeviceAgent(
        settings.device_id,
        settings.topics(),
        sidecar,
        handlers,
        outbox,
        probe_interval=settings.agent_probe_interval,
        request_timeout=settings.agent_request_timeout,
        resync_interval=settings.agent_resync_interval,
        heartbeat_interval=settings.agent_heartbeat_interval,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    agent = build_agent(get_agent_settings())
    async with running_sidecar(DEVICE_AGENT_APP, agent.sidecar):
        app.state.agent = agent
        await agent.start()
        yield
        await agent.stop()


app = FastAPI(title="Twinfleet device agent", version=AGENT_VERSION, lifespan=lifespan)
install_common(app)


def _agent(request: Request) -> DeviceAgent:
    agent: DeviceAgent = request.app.state.agent
    return agent


@app.get("/dapr/subscribe", include_in_schema=False)
async def subscriptions() -> list[dict[str, Any]]:
    settings = get_agent_settings()
    profile, address = settings.topics(), TwinAddress(settings.device_id)
    topics = [profile.reply_topic(address, op, r) for op in Operation for r in (Reply.ACCEPTED, Reply.REJECTED)]
    entries = [subscription(AGENT_BROKER, t, "/cloud/replies", raw=True) for t in topics]
    entries.append(
        subscription(
            AGENT_BROKER, profile.reply_topic(address, Operation.UPDATE, Reply.DELTA), "/cloud/delta", raw=True
        )
    )
    channels = DeviceChannels(settings.device_id)
    entries.append(subscription(AGENT_BROKER, channels.commands_filter, "/cloud/commands", raw=True))
    entries.append(subscription(AGENT_BROKER, channels.events_ack, "/cloud/events-ack", raw=True))
    return entries


def _decode(event: dict[str, Any]) -> Any:
    try:
        return decode_payload(event_payload(event))[0]
    except TwinError:
        return None


@app.post("/cloud/replies", include_in_schema=False)
async def on_reply(request: Request) -> dict[str, str]:
    event = await request.json()
    payload = _decode(event)
    kind = str(event.get("topic", "")).rsplit("/", 1)[-1]
    if isinstance(payload, dict) and kind in (Reply.ACCEPTED, Reply.REJECTED):
        _agent(request).on_reply(Reply(kind), payload)
    return {"status": "SUCCESS"}


@app.post("/cloud/delta", include_in_schema=False)
async def on_delta(request: Request) -> dict[str, str]:
    payload = _decode(await request.json())
    if not isinstance(payload, dict):
        return {"status": "DROP"}
    await _agent(request).on_delta(payload)
    return {"status": "SUCCESS"}


@app.post("/cloud/commands", include_in_schema=False)
async def on_command(request: Request) -> dict[str, str]:
    event = await request.json()
    if str(event.get("topic", "")).endswith("/sync"):  # our own sync request, seen on `commands/+`
        return {"status": "SUCCESS"}
    payload = _decode(event)
    if not isinstance(payload, dict) or not payload.get("id"):
        return {"status": "DROP"}
    await _agent(request).on_command(payload)
    return {"status": "SUCCESS"}


@app.post("/cloud/events-ack", include_in_schema=False)
async def on_events_ack(request: Request) -> dict[str, str]:
    payload = _decode(await request.json())
    if not isinstance(payload, dict) or not isinstance(payload.get("next_seq"), int):
        return {"status": "DROP"}
    await _agent(request).outbox.on_ack(payload["next_seq"])
    return {"status": "SUCCESS"}


class EventIn(BaseModel):
    type: str = Field(min_length=1, max_length=64)
    data: JsonObject = Field(default_factory=dict)
    ts: float | None = None


@app.post("/v1/events", status_code=202)
async def record_events(request: Request, events: EventIn | list[EventIn]) -> dict[str, Any]:
    """Queue one event or a list of them (apps on the device post telemetry here); they are sent
    in order once the cloud is reachable."""
    batch = events if isinstance(events, list) else [events]
    if len(batch) > 1000:
        raise bad_request("at most 1000 events per request")
    seqs = [await _agent(request).record_event(e.type, e.data, e.ts) for e in batch]
    return {"seqs": seqs}


@app.get("/v1/status")
async def status(request: Request) -> JsonObject:
    """Whether the cloud is reachable, what the agent knows of its twin, the outbox."""
    return _agent(request).status()
