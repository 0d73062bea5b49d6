"""The local ingress (`services.devtools.gateway`, served by uvicorn) against a sidecar stand-in on
loopback that can be restarted as a pod is: every connection opened before the restart dies with
its next request (the far end's socket is gone, no FIN came). An idempotent call is sent again on
a new connection, any other gets the 502 (it may have been applied)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from services.devtools.gateway import Gateway
from services.devtools.processes import free_port

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request read off the connection: its head returned, its body read past."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    await reader.readexactly(next((int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length:")), 0))
    return head


class Sidecar:
    def __init__(self) -> None:
        self.generation = 0
        self.connections = 0
        self.url = ""

    def restart(self) -> None:
        self.generation += 1

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        born = self.generation
        try:
            while await _request(reader):
                if born != self.generation:  # the pod behind this connection is gone
                    return
                await asyncio.sleep(0.05)  # concurrent calls overlap, each on its own connection
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    stand_in = Sidecar()
    server = await asyncio.start_server(stand_in.serve, "127.0.0.1", 0)
    stand_in.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield stand_in
    finally:
        server.close()


@pytest.fixture
async def api(sidecar: Sidecar) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_to(sidecar.url) as client:
        yield client


@contextlib.asynccontextmanager
async def gateway_to(sidecar: str) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    config = uvicorn.Config(Gateway({"twin-store": sidecar}, "token"), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn says so by this flag only
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await serving


async def test_an_idempotent_call_on_a_dead_kept_alive_connection_is_sent_again(
    api: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    assert (await api.get("/v1/twins/a")).status_code == 200
    sidecar.restart()
    assert (await api.get("/v1/twins/a")).status_code == 200
    assert sidecar.connections == 2


async def test_every_call_after_a_restart_is_answered_whatever_connections_the_ingress_kept(
    api: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    """The ingress held eight kept-alive connections to the sidecar; all died with its restart. A
    resend on another kept one would die too, so the resend goes on a connection of its own."""
    answers = await asyncio.gather(*(api.get(f"/v1/twins/{i}") for i in range(8)))
    assert [a.status_code for a in answers] == [200] * 8 and sidecar.connections == 8
    sidecar.restart()
    for i in range(10):
        assert (await api.get(f"/v1/twins/{i}")).status_code == 200, i


async def test_any_other_call_on_a_dead_connection_is_answered_502(api: httpx.AsyncClient, sidecar: Sidecar) -> None:
    assert (await api.get("/v1/twins/a")).status_code == 200
    sidecar.restart()
    answer = await api.post("/v1/twins/batch", content=b"[]")
    assert answer.status_code == 502 and "twin-store unreachable" in answer.json()["message"]


async def test_a_call_reaches_the_sidecar_with_the_callers_headers_and_the_answer_comes_back_as_sent() -> None:
    """What the ingress adds (the app id, the sidecars' token, the caller's address) and nothing
    else: no client defaults, no cookie another answer set; the answer's bytes pass unchanged
    (a gzip body stays gzip)."""
    heads: list[bytes] = []
    body = gzip.compress(b'{"ok": true}')
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        b"set-cookie: session=s3cret; Path=/\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while head := await _request(reader):
                heads.append(head.lower())
                writer.write(answer)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        async with gateway_to(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}") as api:
            for _ in range(2):
                response = await api.patch(
                    "/v1/twins/a/desired", content=b"{}", headers={"authorization": "Bearer t", "user-agent": "me"}
                )
                assert response.status_code == 200 and response.json() == {"ok": True}
                assert response.headers["content-encoding"] == "gzip"
                assert response.cookies["session"] == "s3cret"
                api.cookies.clear()  # the caller keeps it no longer: nothing may send it on
    finally:
        server.close()
    for head in heads:
        lines = head.split(b"\r\n")
        assert lines[0] == b"patch /v1/twins/a/desired http/1.1"
        headers = dict(line.split(b": ", 1) for line in lines[1:] if line)
        assert headers[b"dapr-app-id"] == b"twin-store" and headers[b"dapr-api-token"] == b"token"
        assert headers[b"authorization"] == b"bearer t" and headers[b"user-agent"] == b"me"
        assert headers[b"x-forwarded-for"] == b"127.0.0.1" and headers[b"content-length"] == b"2"
        assert b"cookie" not in headers and b"content-type" not in headers
