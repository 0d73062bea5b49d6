"""The local ingress (`services.devtools.gateway`, served by uvicorn) against a sidecar stand-in on
loopback whose first kept-alive connection dies with its second request, as a restarted sidecar's
does: an idempotent call is sent again on a new connection, any other gets the 502 (it may have
been applied)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from services.devtools.gateway import Gateway
from services.devtools.processes import free_port

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@pytest.fixture
async def sidecar() -> AsyncIterator[str]:
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        first = len(connections) == 1
        requests = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
                )
                await reader.readexactly(length)
                requests += 1
                if first and requests == 2:  # the pod behind this connection is gone
                    return
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


@pytest.fixture
async def api(sidecar: str) -> AsyncIterator[httpx.AsyncClient]:
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


async def test_an_idempotent_call_on_a_dead_kept_alive_connection_is_sent_again(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/twins/a")).status_code == 200
    assert (await api.get("/v1/twins/a")).status_code == 200  # the first connection died with it


async def test_any_other_call_on_a_dead_connection_is_answered_502(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/twins/a")).status_code == 200
    answer = await api.post("/v1/twins/batch", content=b"[]")
    assert answer.status_code == 502 and "twin-store unreachable" in answer.json()["message"]
