"""The local stack's ingress: one address for every app's REST API, as a Dapr-enabled ingress
gives a cluster. Each request goes to the app's own sidecar (Dapr service invocation by the
`dapr-app-id` header, with the sidecar's API token), so the app sees it arrive from its sidecar
like any other call; the caller's own `Authorization` is passed on untouched.

Which app serves a path is read from the apps' access rules (`services/<app>/access.py`).
Configured by `TWINFLEET_GATEWAY_APPS` (JSON: app id → its sidecar's base URL) and
`DAPR_API_TOKEN`.

It forwards with aiohttp: every REST call of the local stack (and of `make bench`) passes here,
and httpx took ≈ 1.3 ms of CPU per forwarded call against aiohttp's ≈ 0.25 ms on this machine."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator

import aiohttp
from starlette.types import Receive, Scope, Send

from services.commands.access import RULES as COMMANDS
from services.console.access import RULES as CONSOLE
from services.events.access import RULES as EVENTS
from services.firmware.access import RULES as FIRMWARE
from services.platform.names import (
    COMMANDS_APP,
    CONSOLE_APP,
    EVENTS_APP,
    FIRMWARE_APP,
    INGRESS_APP,
    ROLLOUT_APP,
    TWIN_STORE_APP,
)
from services.rollout.access import RULES as ROLLOUT
from services.twin_store.access import RULES as TWIN_STORE

_RULES = {
    TWIN_STORE_APP: TWIN_STORE,
    COMMANDS_APP: COMMANDS,
    EVENTS_APP: EVENTS,
    ROLLOUT_APP: ROLLOUT,
    FIRMWARE_APP: FIRMWARE,
    CONSOLE_APP: CONSOLE,
}
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
"""Methods a request may be sent again with (RFC 9110 9.2.2): once, on a new connection, when a
kept-alive connection to a sidecar turns out dead (the sidecar's pod restarted); any other request
gets the 502."""
_HOP_BY_HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"dapr-api-token", b"dapr-app-id"}
_DEAD_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
"""What a kept-alive connection whose far end went away raises on the next request."""


def routes() -> list[tuple[re.Pattern[str], str]]:
    """(path pattern, app id) of every API path (not the apps' probes nor sidecar routes), and
    the console's pages."""
    found: dict[str, str] = {}
    for app, rules in _RULES.items():
        for key, rule in rules.items():
            path = key.split(" ", 1)[1]
            if path.startswith(("/v1/", "/console")) and rule.access.value != "sidecar":
                found[path] = app
    return [(re.compile("^" + _pattern(p) + "$"), a) for p, a in found.items()]


def _pattern(template: str) -> str:
    """A route template as a regular expression: `{name:path}` spans segments, `{name}` one."""
    return re.sub(r"\{[^/]+\}", "[^/]+", re.sub(r"\{[^/{}]+:path\}", ".+", template))


class Gateway:
    def __init__(self, sidecars: dict[str, str], dapr_token: str) -> None:
        self.sidecars = sidecars
        self.token = dapr_token
        self.routes = routes()
        self._http: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """The forwarding client, made in the serving loop on first use."""
        if self._http is None:
            self._http = _session(aiohttp.TCPConnector())
        return self._http

    @property
    def fresh(self) -> aiohttp.ClientSession:
        """A client that opens a new connection for each call: for a resend after a kept-alive
        connection died. Its siblings in the pool died with it when the sidecar's pod restarted,
        so a resend on another kept one could die the same way."""
        if self._fresh is None:
            self._fresh = _session(aiohttp.TCPConnector(force_close=True))
        return self._fresh

    def target(self, path: str) -> str | None:
        return next((app for pattern, app in self.routes if pattern.match(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                if kind == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    for session in (self._http, self._fresh):
                        if session is not None:
                            await session.close()
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
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP
        ]
        headers += [("dapr-app-id", app), ("dapr-caller-app-id", INGRESS_APP)]
        if self.token:
            headers.append(("dapr-api-token", self.token))
        client = scope.get("client")
        if client:
            headers.append(("x-forwarded-for", client[0]))
        url = (
            self.sidecars[app] + scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        )
        body = await _body(receive)
        retry = scope["method"] in IDEMPOTENT and isinstance(body, bytes)
        try:
            response = await self._send(scope["method"], url, headers, body, retry)
        except (TimeoutError, aiohttp.ClientError) as error:
            await _answer(send, 502, {"code": 502, "message": f"{app} unreachable: {error!r}"})
            return
        try:
            out = [(k, v) for k, v in response.raw_headers if k.lower() not in (b"transfer-encoding", b"connection")]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.release()

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes | AsyncIterator[bytes], retry: bool
    ) -> aiohttp.ClientResponse:
        data = body or None  # no body: none sent (a POST still says `Content-Length: 0`)
        try:
            return await self.http.request(method, url, headers=headers, data=data, allow_redirects=False)
        except _DEAD_CONNECTION:
            if not retry:
                raise
            return await self.fresh.request(method, url, headers=headers, data=data, allow_redirects=False)


def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    """No cookie jar: a `Set-Cookie` one caller got (the console's session) must never ride along
    on another caller's requests. Bodies pass as they are (no decompression), and the caller's
    headers are the only ones sent (no client defaults)."""
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=300, connect=5),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )


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
