"""REST API of the events app: how far the cloud has taken a device's events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from services.contracts.device_events import EventCursorView
from services.contracts.topics import valid_id
from services.domain.errors import bad_request, not_found
from services.events.ingest import EventIngest
from services.platform.auth import DeviceInScope
from services.platform.http import provided

router = APIRouter(prefix="/v1/devices/{device_id}/events", tags=["events"], dependencies=[DeviceInScope])
Ingest = Annotated[EventIngest, provided(EventIngest)]


@router.get("/cursor", response_model=EventCursorView)
async def event_cursor(device_id: str, ingest: Ingest) -> EventCursorView:
    """How far the cloud has taken a device's events; 404 when it never sent any."""
    if not valid_id(device_id):
        raise bad_request("device id must be 1..128 of letters, digits and _ . : -")
    cursor = await ingest.cursor(device_id)
    if cursor is None:
        raise not_found(f"device {device_id} has sent no events")
    return EventCursorView(next_seq=cursor.next_seq, lost=cursor.lost)
