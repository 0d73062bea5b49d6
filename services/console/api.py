"""The console's routes: the pages (a static bundle), sign-in, the fleet's counts and device list
from the index, the live stream (server-sent events), and the forwarding of the pages' calls to
the apps' own REST APIs with the caller's credential (each app checks it by its own rules)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from services.clients.base import app_url
from services.console import metrics
from services.console.fleet import RELOAD, FleetView, RecentEvents
from services.console.session import clear_cookie_header, session_view, set_cookie_header, sign_in
from services.console.settings import ConsoleSettings
from services.contracts.console import (
    FacetCount,
    FleetCounts,
    FleetDevice,
    FleetDevicePage,
    RecentEvent,
    RecentEventList,
    SessionView,
    SignIn,
)
from services.domain.access import check_in_scope
from services.domain.errors import TwinError, bad_request, not_found
from services.domain.twin.fleet import Facet, FleetQuery, SortKey
from services.platform.auth import Authenticator, Caller
from services.platform.http import provided
from services.platform.names import COMMANDS_APP, EVENTS_APP, FIRMWARE_APP, ROLLOUT_APP, TWIN_STORE_APP

STATIC = Path(__file__).parent / "static"
FORWARDABLE = (TWIN_STORE_APP, ROLLOUT_APP, FIRMWARE_APP, COMMANDS_APP, EVENTS_APP)
HEARTBEAT_SECONDS = 15.0
TOP_TAGS = 50

router = APIRouter()
View = Annotated[FleetView, provided(FleetView)]
Recent = Annotated[RecentEvents, provided(RecentEvents)]
Settings = Annotated[ConsoleSettings, provided(ConsoleSettings)]
Auth = Annotated[Authenticator, provided(Authenticator)]


class Forwarder:
    """The apps as the console reaches them: its own sidecar (or the addresses the settings name)."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self._settings = settings
        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # one client, many callers: keep no cookies
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(60, connect=5), headers=settings.sidecar_headers(), cookies=jar
        )

    def url(self, app: str, path: str) -> str:
        return app_url(app, self._settings.dapr_http_port, self._settings.console_apps.get(app, "")) + path


Forwarding = Annotated[Forwarder, provided(Forwarder)]


# -- pages --------------------------------------------------------------------------------------
@router.get("/console", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


@router.get("/console/{asset}", include_in_schema=False)
async def asset(asset: str) -> FileResponse:
    path = STATIC / asset
    if asset.startswith(".") or "/" in asset or not path.is_file():
        raise not_found(f"no console asset {asset!r}")
    return FileResponse(path, headers={"cache-control": "no-cache"})


# -- session ------------------------------------------------------------------------------------
@router.post("/v1/console/session", response_model=SessionView, tags=["console"])
async def create_session(body: SignIn, authenticator: Auth, settings: Settings, response: Response) -> SessionView:
    """Sign in: client credentials (exchanged at the issuer), or a token or API key; the answer
    sets the session cookie."""
    token_url = settings.console_token_url or settings.auth_token_url
    bearer, view = await sign_in(body, authenticator, token_url, settings.auth_audience)
    response.headers["set-cookie"] = set_cookie_header(bearer, view.expires_at, settings.console_cookie_secure)
    return view


@router.get("/v1/console/session", response_model=SessionView, tags=["console"])
async def who(request: Request, authenticator: Auth) -> SessionView:
    """Who is signed in: `signedIn` false (not a 401) when nobody is, or the session's credential
    stopped working (expired, revoked), so the page can offer sign-in."""
    authorization = request.headers.get("authorization")
    try:
        principal = await authenticator.principal(authorization)
    except TwinError as error:
        if int(error.code) != 401:
            raise
        return SessionView(signed_in=False)
    return session_view(principal, (authorization or "").partition(" ")[2].strip())


@router.delete("/v1/console/session", status_code=204, tags=["console"])
async def sign_out(response: Response) -> Response:
    response.headers["set-cookie"] = clear_cookie_header()
    response.status_code = 204
    return response


# -- fleet --------------------------------------------------------------------------------------
def _ranked(counts: dict[str, int], top: int | None = None) -> list[FacetCount]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [FacetCount(value=v, count=c) for v, c in ranked[:top]]


@router.get("/v1/console/fleet", response_model=FleetCounts, tags=["console"])
async def fleet(view: View, caller: Caller) -> FleetCounts:
    """Live twins by connection state, encoding, software version and tag (the 50 largest), from
    the index (no scan of the fleet); within the caller's scope."""
    total, counts = view.index.counts(caller.scope)
    return FleetCounts(
        twins=total,
        connection=_ranked(counts[Facet.CONNECTION]),
        encoding=_ranked(counts[Facet.ENCODING]),
        software=_ranked(counts[Facet.SOFTWARE]),
        tags=_ranked(counts[Facet.TAG], TOP_TAGS),
        ready=view.ready,
    )


@router.get("/v1/console/fleet/devices", response_model=FleetDevicePage, tags=["console"])
async def devices(
    view: View,
    caller: Caller,
    prefix: Annotated[str, Query(max_length=128, description="device ids starting with this")] = "",
    tag: Annotated[str, Query(max_length=200, description="`key=value`")] = "",
    sort: SortKey = SortKey.ID,
    descending: bool = False,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FleetDevicePage:
    """One page of the device list: search by id prefix and tag, sorted by id, version or last change."""
    if tag and "=" not in tag:
        raise bad_request("tag must be `key=value`")
    found = view.index.query(FleetQuery(prefix, tag, sort, descending, offset, limit), caller.scope)
    items = [
        FleetDevice(
            device_id=e.device_id,
            version=e.version,
            timestamp=e.timestamp,
            connection=e.facets.connection,
            encoding=e.facets.encoding,
            software=e.facets.software,
            software_status=e.software_status,
            tags=dict(e.tags),
        )
        for e in found.items
        if e.facets is not None
    ]
    return FleetDevicePage(total=found.total, offset=offset, items=items)


@router.get("/v1/console/live", tags=["console"])
async def live(
    request: Request,
    view: View,
    caller: Caller,
    device: Annotated[str, Query(max_length=128, description="only this device's changes")] = "",
) -> StreamingResponse:
    """Server-sent events: `twin` (one change: id, version, cause) as twins change, `reload` when
    this stream fell behind; a comment every 15 s keeps the connection open."""

    async def events() -> AsyncIterator[bytes]:
        async with view.hub.subscribed(caller.scope, device) as subscriber:
            yield b"event: hello\ndata: {}\n\n"
            while not await request.is_disconnected():
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item == RELOAD:
                    yield b"event: reload\ndata: {}\n\n"
                elif not isinstance(item, str):
                    yield f"event: twin\ndata: {item.model_dump_json()}\n\n".encode()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/v1/console/devices/{device_id}/events", response_model=RecentEventList, tags=["console"])
async def recent_events(device_id: str, view: View, recent: Recent, caller: Caller) -> RecentEventList:
    """A device's last events (newest first, at most 20), as the console heard them on `device.events`."""
    if caller.scope:
        entry = view.index.get(device_id)
        check_in_scope(f"device {device_id}", entry.tags if entry else None, caller.scope)
    items = [RecentEvent(seq=e.seq, ts=e.ts, type=e.type, data=e.data) for e in recent.of(device_id)]
    return RecentEventList(items=items)


# -- forwarding ---------------------------------------------------------------------------------
async def _forward(request: Request, app: str, path: str, forwarder: Forwarder) -> Response:
    if app not in FORWARDABLE:
        raise not_found(f"no app {app!r} behind the console (one of {', '.join(FORWARDABLE)})")
    if not path.startswith("v1/"):
        raise not_found("the console forwards only to the apps' REST APIs (/v1/...)")
    headers = {
        k: v
        for k, v in request.headers.items()
        if k in ("authorization", "content-type", "if-match", "accept", "x-forwarded-for")
    }
    if request.client and "x-forwarded-for" not in headers:
        headers["x-forwarded-for"] = request.client.host
    url = forwarder.url(app, f"/{path}")
    try:
        answer = await forwarder.http.request(
            request.method, url, params=request.query_params, headers=headers, content=await request.body()
        )
    except httpx.HTTPError as error:
        metrics.FORWARDED.labels(app, "502").inc()
        body = json.dumps({"code": 502, "message": f"{app} unreachable: {error!r}"})
        return Response(body, status_code=502, media_type="application/json")
    metrics.FORWARDED.labels(app, str(answer.status_code)).inc()
    kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "etag", "location")}
    return Response(answer.content, status_code=answer.status_code, headers=kept)


@router.api_route(
    "/v1/console/api/{app}/{path:path}",
    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
    tags=["console"],
)
async def forward(request: Request, app: str, path: str, forwarder: Forwarding, _: Caller) -> Response:
    """A page's call to an app's own REST API (`/v1/...` of that app), with the caller's credential."""
    return await _forward(request, app, path, forwarder)
