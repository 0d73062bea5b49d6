"""The device agent's routes: its local REST API (apps on the device post events and read status;
`services.contracts.agent`) and the routes daprd delivers cloud messages to (replies, deltas,
commands, events acknowledgements).

Plain Starlette endpoints, not FastAPI: leaving FastAPI, the cloud apps' guard and what they
pulled in out of the agent was part of its fall from 98 to 54 MiB (issue 12's budget). The
bodies are still the shared pydantic contracts, validated the same way (a malformed body is a 400
saying where)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.contracts.agent import (
    MAX_EVENTS_PER_REQUEST,
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
from services.domain.errors import TwinError, bad_request, conflict, not_found
from services.platform.cloudevents import event_payload
from services.platform.responses import validation_message

if TYPE_CHECKING:  # the software handler (and TUF with it) loads only on a device that updates software
    from services.device_agent.software import SoftwareHandler

REPLIES_ROUTE, DELTA_ROUTE, COMMANDS_ROUTE, EVENTS_ACK_ROUTE = "/replies", "/delta", "/commands", "/events-ack"
CLOUD = "/cloud"
EVENTS = TypeAdapter(LocalEvent | list[LocalEvent])
CONSENT = TypeAdapter(ConsentBody)
M = TypeVar("M")


def agent_of(request: Request) -> DeviceAgent:
    agent: DeviceAgent = request.app.state.agent
    return agent


def answer(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code, media_type="application/json")


async def body_of(request: Request, adapter: TypeAdapter[M]) -> M:
    """The request's JSON body as `adapter`'s type; 400 with the first problem located."""
    try:
        return adapter.validate_json(await request.body())
    except ValidationError as error:
        raise bad_request(validation_message(error.errors())) from None


async def record_events(request: Request) -> Response:
    """Queue one event or a list of them (apps on the device post telemetry here); they are sent
    in order once the cloud is reachable."""
    events = await body_of(request, EVENTS)
    batch = events if isinstance(events, list) else [events]
    if len(batch) > MAX_EVENTS_PER_REQUEST:
        raise bad_request(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    agent = agent_of(request)
    return answer(QueuedEvents(seqs=[await agent.record_event(e.type, e.data, e.ts) for e in batch]), 202)


async def status(request: Request) -> Response:
    """Whether the cloud is reachable, what the agent knows of its twin, the outbox."""
    return answer(agent_of(request).status())


def _software(agent: DeviceAgent) -> SoftwareHandler:
    handler = agent.handlers.get("software")
    if handler is None:
        raise not_found("this device has no software handler (TWINFLEET_SOFTWARE_INSTALLER)")
    from services.device_agent.software import SoftwareHandler  # loaded already: the handler is one

    if not isinstance(handler, SoftwareHandler):
        raise not_found("this device's `software` key is not handled by the software handler")
    return handler


async def software_status(request: Request) -> Response:
    """The software handler's report: what runs, and how the last attempt stands."""
    handler = _software(agent_of(request))
    return answer(SoftwareStatus(software=await handler.current(), require_consent=handler.require_consent))


async def software_consent(request: Request) -> Response:
    """Local consent for the update waiting for it (WAITING_FOR_CONSENT): install it, or refuse it.
    409 when none waits."""
    body = await body_of(request, CONSENT)
    handler = _software(agent_of(request))
    from services.device_agent.software import NotWaiting

    try:
        artifact = await handler.consent(body.artifact, body.accept)
    except NotWaiting as error:
        raise conflict(str(error)) from None
    return answer(ConsentAnswer(artifact=artifact, accepted=body.accept))


def _decode(event: dict[str, Any]) -> Any:
    try:
        return decode_payload(event_payload(event))[0]
    except TwinError:
        return None


def delivered(status: str = "SUCCESS") -> Response:
    """The answer daprd takes for a delivery: `SUCCESS`, or `DROP` (malformed: not retried)."""
    return JSONResponse({"status": status})


async def on_reply(request: Request) -> Response:
    event = await request.json()
    payload = _decode(event)
    kind = str(event.get("topic", "")).rsplit("/", 1)[-1]
    if isinstance(payload, dict) and kind in (Reply.ACCEPTED, Reply.REJECTED):
        agent_of(request).on_reply(Reply(kind), payload)
    return delivered()


async def on_delta(request: Request) -> Response:
    payload = _decode(await request.json())
    if not isinstance(payload, dict):
        return delivered("DROP")
    await agent_of(request).on_delta(payload)
    return delivered()


async def on_command(request: Request) -> Response:
    event = await request.json()
    if str(event.get("topic", "")).endswith("/sync"):  # our own sync request, seen on `commands/+`
        return delivered()
    try:
        command = CommandMessage.model_validate(_decode(event))
    except ValidationError:
        return delivered("DROP")
    await agent_of(request).on_command(command)
    return delivered()


async def on_events_ack(request: Request) -> Response:
    try:
        ack = EventsAck.model_validate(_decode(await request.json()))
    except ValidationError:
        return delivered("DROP")
    await agent_of(request).outbox.on_ack(ack.next_seq)
    return delivered()


ROUTES = [
    Route("/v1/events", record_events, methods=["POST"]),
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/software", software_status, methods=["GET"]),
    Route("/v1/software/consent", software_consent, methods=["POST"]),
    Route(CLOUD + REPLIES_ROUTE, on_reply, methods=["POST"]),
    Route(CLOUD + DELTA_ROUTE, on_delta, methods=["POST"]),
    Route(CLOUD + COMMANDS_ROUTE, on_command, methods=["POST"]),
    Route(CLOUD + EVENTS_ACK_ROUTE, on_events_ack, methods=["POST"]),
]
"""The agent's own routes (the probes, metrics and `/dapr/subscribe` are added by `main.py`)."""
