"""Device requests (`update`, `get`, `delete`) as daprd delivers them from the device broker: the
hot path, so plain ASGI in front of the FastAPI app (FastAPI's routing and middleware took a
quarter of the app's CPU there under load). Everything else goes to FastAPI."""

from __future__ import annotations

import json
from typing import Any

import svcs
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from services.contracts.topics import TopicProfile
from services.domain.twin.commands import DeviceRequest
from services.platform.cloudevents import event_payload
from services.twin_store.writer import TwinWriter

ROUTE = "/device-requests"


async def handle_device_request(
    writer: TwinWriter, profile: TopicProfile, event: dict[str, Any]
) -> tuple[int, dict[str, str]]:
    """One device message delivered by daprd (raw payload in a CloudEvent): status and answer."""
    parsed = profile.parse(str(event.get("topic", "")))
    if parsed is None:
        return 200, {"status": "DROP"}
    address, op = parsed
    try:
        await writer.submit(DeviceRequest(address, op, event_payload(event)))
    except Exception as error:  # noqa: BLE001 - daprd redelivers; the replay path keeps it exactly-once
        return 500, {"status": "RETRY", "message": str(error)}
    return 200, {"status": "SUCCESS"}


class DeviceRequestFastPath:
    """`POST /device-requests` handled here; the writer is looked up once from the app's registry."""

    def __init__(self, inner: FastAPI, profile: TopicProfile) -> None:
        self.inner = inner
        self.profile = profile
        self._writer: TwinWriter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ROUTE or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if self._writer is None:
            async with svcs.Container(svcs.fastapi.get_registry(self.inner)) as services:
                self._writer = await services.aget(TwinWriter)
        try:
            status, answer = await handle_device_request(self._writer, self.profile, json.loads(body))
        except ValueError:
            status, answer = 200, {"status": "DROP"}
        payload = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
