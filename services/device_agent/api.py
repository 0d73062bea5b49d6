"""The device agent's routes: its local REST API (apps on the device post events and read status;
`services.contracts.agent`) and the routes daprd delivers cloud messages to (replies, deltas,
commands, events acknowledgements)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from services.contracts.agent import (
    MAX_EVENTS_PER_REQUEST,
    AgentStatus,
    ConsentAnswer,
    ConsentBody,
    LocalEvent,
    QueuedEvents,
    SoftwareStatus,
)
from services.contracts.commands import CommandMessage
from services.contracts.device_events import EventsAck
from services.contracts.topics import Reply
from services.contracts.wire import decode_payload
from services.device_agent.agent import DeviceAgent
from services.device_agent.software import NotWaiting, SoftwareHandler
from services.domain.errors import TwinError, bad_request, conflict, not_found
from services.platform.cloudevents import event_payload
from services.platform.http import provided

router = APIRouter(prefix="/v1", tags=["agent"])
deliveries = APIRouter(prefix="/cloud", include_in_schema=False)
Agent = Annotated[DeviceAgent, provided(DeviceAgent)]
REPLIES_ROUTE, DELTA_ROUTE, COMMANDS_ROUTE, EVENTS_ACK_ROUTE = "/replies", "/delta", "/commands", "/events-ack"


@router.post("/events", status_code=202, response_model=QueuedEvents)
async def record_events(agent: Agent, events: LocalEvent | list[LocalEvent]) -> QueuedEvents:
    """Queue one event or a list of them (apps on the device post telemetry here); they are sent
    in order once the cloud is reachable."""
    batch = events if isinstance(events, list) else [events]
    if len(batch) > MAX_EVENTS_PER_REQUEST:
        raise bad_request(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    return QueuedEvents(seqs=[await agent.record_event(e.type, e.data, e.ts) for e in batch])


@router.get("/status", response_model=AgentStatus)
async def status(agent: Agent) -> AgentStatus:
    """Whether the cloud is reachable, what the agent knows of its twin, the outbox."""
    return agent.status()


def _software(agent: DeviceAgent) -> SoftwareHandler:
    handler = agent.handlers.get("software")
    if not isinstance(handler, SoftwareHandler):
        raise not_found("this device has no software handler (TWINFLEET_SOFTWARE_INSTALLER)")
    return handler


@router.get("/software", response_model=SoftwareStatus)
async def software_status(agent: Agent) -> SoftwareStatus:
    """The software handler's report: what runs, and how the last attempt stands."""
    handler = _software(agent)
    return SoftwareStatus(software=await handler.current(), require_consent=handler.require_consent)


@router.post("/software/consent", response_model=ConsentAnswer)
async def software_consent(agent: Agent, body: ConsentBody) -> ConsentAnswer:
    """Local consent for the update waiting for it (WAITING_FOR_CONSENT): install it, or refuse it.
    409 when none waits."""
    try:
        artifact = await _software(agent).consent(body.artifact, body.accept)
    except NotWaiting as error:
        raise conflict(str(error)) from None
    return ConsentAnswer(artifact=artifact, accepted=body.accept)


def _decode(event: dict[str, Any]) -> Any:
    try:
        return decode_payload(event_payload(event))[0]
    except TwinError:
        return None


@deliveries.post(REPLIES_ROUTE)
async def on_reply(request: Request, agent: Agent) -> dict[str, str]:
    event = await request.json()
    payload = _decode(event)
    kind = str(event.get("topic", "")).rsplit("/", 1)[-1]
    if isinstance(payload, dict) and kind in (Reply.ACCEPTED, Reply.REJECTED):
        agent.on_reply(Reply(kind), payload)
    return {"status": "SUCCESS"}


@deliveries.post(DELTA_ROUTE)
async def on_delta(request: Request, agent: Agent) -> dict[str, str]:
    payload = _decode(await request.json())
    if not isinstance(payload, dict):
        return {"status": "DROP"}
    await agent.on_delta(payload)
    return {"status": "SUCCESS"}


@deliveries.post(COMMANDS_ROUTE)
async def on_command(request: Request, agent: Agent) -> dict[str, str]:
    event = await request.json()
    if str(event.get("topic", "")).endswith("/sync"):  # our own sync request, seen on `commands/+`
        return {"status": "SUCCESS"}
    try:
        command = CommandMessage.model_validate(_decode(event))
    except ValidationError:
        return {"status": "DROP"}
    await agent.on_command(command)
    return {"status": "SUCCESS"}


@deliveries.post(EVENTS_ACK_ROUTE)
async def on_events_ack(request: Request, agent: Agent) -> dict[str, str]:
    try:
        ack = EventsAck.model_validate(_decode(await request.json()))
    except ValidationError:
        return {"status": "DROP"}
    await agent.outbox.on_ack(ack.next_seq)
    return {"status": "SUCCESS"}
