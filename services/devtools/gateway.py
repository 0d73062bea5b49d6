"""The local stack's ingress: one address for every app's REST API, as a Dapr-enabled ingress
gives a cluster. Each request goes to the app's own sidecar (Dapr service invocation by the
`dapr-app-id` header, with the sidecar's API token), so the app sees it arrive from its sidecar
like any other call; the caller's own `Authorization` is passed on untouched.

Which app serves a path is read from the apps' access rules (`services/<app>/access.py`).
Configured by `TWINFLEET_GATEWAY_APPS` (JSON: app id → its sidecar's base URL) and
`DAPR_API_TOKEN`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator

import httpx
from starlette.types import Receive, Scope, Send

from services.commands.access import RULES as COMMANDS
from services.events.access import RULES as EVENTS
from services.firmware.access import RULES as FIRMWARE
from services.platform.names import COMMANDS_APP, EVENTS_APP, FIRMWARE_APP, INGRESS_APP, ROLLOUT_APP, TWIN_STORE_APP
from services.rollout.access import RULES as ROLLOUT
from services.twin_store.access import RULES as TWIN_STORE

_RULES = {
    TWIN_STORE_APP: TWIN_STORE,
    COMMANDS_APP: COMMANDS,
    EVENTS_APP: EVENTS,
    ROLLOUT_APP: ROLLOUT,
    FIRMWARE_APP: FIRMWARE,
}
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
"""Methods a request may be sent again with (RFC 9110 9.2.2): once, when a kept-alive connection
to a sidecar turns out dead (the sidecar's pod restarted); any other request gets the 502."""
_HOP_BY_HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"dapr-api-token", b"dapr-app-id"}


def routes() -> list[tuple[re.Pattern[str], str]]:
    """(path pattern, app id) of every API path (not the apps' probes nor sidecar routes)."""
    found: dict[str, str] = {}
    for app, rules in _RULES.items():
        for key, rule in rules.items():
            path = key.split(" ", 1)[1]
            if path.startswith("/v1/") and rule.access.value != "sidecar":
                found[path] = app
    return [(re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", p) + "$"), a) for p, a in found.items()]


class Gateway:
    def __init__(self, sidecars: dict[str, str], dapr_token: str) -> None:
        self.sidecars = sidecars
        self.token = dapr_token
        self.routes = routes()
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(300, connect=5))

    def target(self, path: str) -> str | None:
        return next((app for pattern, app in self.routes if pattern.match(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                if kind == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.http.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        app = self.target(scope["path"])
        if scope["path"] == "/healthz":
            await _answer(send, 200, {"status": "ok"})
            return
        if not _forwardable(scope["path"]):
            await _answer(send, 400, {"code": 400, "message": "the path holds characters no resource name has"})
            return
        if app is None or app not in self.sidecars:
            await _answer(send, 404, {"code": 404, "message": f"no API serves {scope['path']}"})
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        headers += [(b"dapr-app-id", app.encode()), (b"dapr-caller-app-id", INGRESS_APP.encode())]
        if self.token:
            headers.append((b"dapr-api-token", self.token.encode()))
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        url = (
            self.sidecars[app] + scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        )
        body = await _body(receive)
        request = self.http.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._send(request, retry=scope["method"] in IDEMPOTENT and isinstance(body, bytes))
        except httpx.HTTPError as error:
            await _answer(send, 502, {"code": 502, "message": f"{app} unreachable: {error!r}"})
            return
        try:
            out = [
                (k.encode(), v.encode())
                for k, v in response.headers.items()
                if k.lower() not in ("transfer-encoding", "connection")
            ]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request, retry: bool) -> httpx.Response:
        try:
            return await self.http.send(request, stream=True)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            if not retry:
                raise
            return await self.http.send(request, stream=True)


def _forwardable(path: str) -> bool:
    """Whether daprd can pass the (decoded) path on: it answers 500 to one holding `%` or a control
    character (it re-parses the path as a URL), and no id the APIs take has them or non-ASCII."""
    return all(32 <= ord(c) < 127 and c != "%" for c in path)


async def _body(receive: Receive) -> bytes | AsyncIterator[bytes]:
    """The request body: bytes when it came in one piece, else streamed on as it arrives."""
    first = await receive()
    if not first.get("more_body", False):
        return bytes(first.get("body", b""))

    async def rest() -> AsyncIterator[bytes]:
        yield first.get("body", b"")
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    return rest()


async def _answer(send: Send, status: int, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


app = Gateway(json.loads(os.environ.get("TWINFLEET_GATEWAY_APPS", "{}")), os.environ.get("DAPR_API_TOKEN", ""))
