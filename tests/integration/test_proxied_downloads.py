"""Downloads through the firmware app, for stores that cannot pre-sign (chunk objects on local disk
through the Dapr binding): HMAC pre-signed URLs and temporary credentials checked before the first
byte, Range, the per-device limit, and uploads that keep nothing when refused. Chunks are written
several at once and fetched ahead."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tuf.api.metadata import Metadata, Targets

from services.devtools.stack import Stack
from services.domain.software import repository as rules
from tests.support.releases import CHUNK, desire, one_of_two_desires, publish

STACK_ARTIFACTS = "binding"
STACK_ENV = {"TWINFLEET_FIRMWARE_MAX_ARTIFACT_BYTES": str(8 << 20)}


async def test_only_the_targeted_device_can_download_through_the_app(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient
) -> None:
    a, b, data, artifact = await one_of_two_desires(stack, api, firmware, "dl")
    basic_a = httpx.BasicAuth(a, stack.device_password(a))
    basic_b = httpx.BasicAuth(b, stack.device_password(b))

    async def url_for(device_id: str, of: str = artifact, **extra: Any) -> str:
        response = await firmware.post(f"/v1/artifacts/{of}/urls", json={"deviceId": device_id, **extra})
        return str(response.json()["url"])

    async def refused(response: httpx.Response, why: str) -> None:
        assert response.status_code == 403, response.text
        assert why in response.json()["message"] and data[:20] not in response.content

    # pre-signed URLs: device-bound, untampered, unexpired, optionally address-bound
    url = await url_for(a)
    good = await firmware.get(url)
    assert good.status_code == 200 and hashlib.sha256(good.content).hexdigest() == hashlib.sha256(data).hexdigest()
    await refused(await firmware.get(url.replace(f"device={a}", f"device={b}")), "signature does not match")
    await refused(await firmware.get(url[:-4] + ("0000" if not url.endswith("0000") else "1111")), "signature")
    await refused(await firmware.get(url.replace(f"/{artifact}/", "/other-1.0/")), "signature")
    short = await url_for(a, ttl=1)
    await asyncio.sleep(1.2)
    await refused(await firmware.get(short), "expired")
    # bound to 127.0.0.2, fetched straight from the app (the relay would make every peer 127.0.0.1)
    pinned = await url_for(a, ip="127.0.0.2")
    await refused(await firmware.get(pinned), "another address")
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), timeout=30) as there:
        assert (await there.get(pinned)).content == data
    await refused(await firmware.get(f"/v1/artifacts/{artifact}/download"), "needs a pre-signed URL")

    # temporary credentials: only with the device's own credentials, only for what its twin desires
    token = (await firmware.post(f"/v1/artifacts/{artifact}/credentials", auth=basic_a)).json()["credential"]
    path = f"/v1/artifacts/{artifact}/download"
    with_token = {"X-Download-Credential": token}
    assert (await firmware.get(path, headers=with_token, auth=basic_a)).content == data
    await refused(await firmware.get(path, headers=with_token, auth=basic_b), "issued to another device")
    await refused(await firmware.post(f"/v1/artifacts/{artifact}/credentials", auth=basic_b), "not what device")
    wrong = httpx.BasicAuth(a, "not-the-password")
    await refused(await firmware.post(f"/v1/artifacts/{artifact}/credentials", auth=wrong), "do not match")
    await refused(await firmware.get(path, headers={"X-Download-Credential": token + "x"}, auth=basic_a), "tampered")

    # ranges: resume from any byte; past the end is 416
    part = await firmware.get(url, headers={"Range": f"bytes={CHUNK - 5}-{CHUNK + 4}"})
    assert part.status_code == 206 and part.content == data[CHUNK - 5 : CHUNK + 5]
    assert part.headers["content-range"] == f"bytes {CHUNK - 5}-{CHUNK + 4}/{len(data)}"
    tail = await firmware.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert (await firmware.get(url, headers={"Range": f"bytes={len(data)}-"})).status_code == 416

    # at most two downloads per device at once: two readers that stall (tiny receive buffers, an
    # artifact larger than what the socket buffers hold) keep theirs running
    large = await publish(stack, firmware, "scoped", "6.1.0", os.urandom(8 << 20))
    await desire(api, a, large, "6.1.0")
    url = await url_for(a, of=large)
    stalled = [await _stalled_download(url) for _ in range(2)]
    try:
        assert all(line.startswith(b"HTTP/1.1 200") for line, _ in stalled)
        third = await firmware.get(url)
        assert third.status_code == 429 and "already has 2 download(s) running" in third.json()["message"]
    finally:
        for _, writer in stalled:
            writer.close()


async def _stalled_download(url: str) -> tuple[bytes, asyncio.StreamWriter]:
    """Start a download and read only its status line."""
    parts = httpx.URL(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.host, parts.port or 80))
    reader, writer = await asyncio.open_connection(sock=sock)
    target = parts.raw_path.decode()
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.host}\r\n\r\n".encode())
    await writer.drain()
    return await reader.readline(), writer


async def test_artifact_api_refuses_bad_input_and_keeps_nothing_of_it(
    stack: Stack, firmware: httpx.AsyncClient, rollouts: httpx.AsyncClient
) -> None:
    before = (await firmware.get("/v1/artifacts")).json()["items"]
    assert (await firmware.post("/v1/artifacts", params={"name": "x", "version": "not a version"})).status_code == 400
    bad_id = await firmware.post("/v1/artifacts", params={"name": "x", "version": "1.0", "id": "../etc"}, content=b"x")
    assert bad_id.status_code == 400
    mismatch = await firmware.post(
        "/v1/artifacts", params={"name": "sum", "version": "1.0", "sha256": "0" * 64}, content=b"some bytes"
    )
    assert mismatch.status_code == 400 and "sha256" in mismatch.json()["message"]

    async def big() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield os.urandom(CHUNK)

    too_big = await firmware.post("/v1/artifacts", params={"name": "big", "version": "1.0"}, content=big())
    assert too_big.status_code == 413
    assert (await firmware.get("/v1/artifacts")).json()["items"] == before
    assert not (stack.run_dir / "artifacts" / "artifacts" / "big-1.0").exists() or not any(
        (stack.run_dir / "artifacts" / "artifacts" / "big-1.0").iterdir()
    )
    # a duplicate id is a 409; an unknown one 404
    kept = {"id": await publish(stack, firmware, "dup", "1.0.0", b"first")}
    again = await firmware.post("/v1/artifacts", params={"name": "dup", "version": "1.0.0"}, content=b"second")
    assert again.status_code == 409
    assert (await firmware.get(f"/v1/artifacts/{kept['id']}")).json()["sha256"] == hashlib.sha256(b"first").hexdigest()
    assert (await firmware.get("/v1/artifacts/nothing-here")).status_code == 404
    # deletable once no configuration refers to it any more
    spec = {"id": "uses-dup", "targetCondition": "false", "content": {"software": {"artifact": kept["id"]}}}
    assert (await rollouts.post("/v1/configurations", json=spec)).status_code == 201
    assert (await firmware.delete(f"/v1/artifacts/{kept['id']}")).status_code == 409
    assert (await rollouts.delete("/v1/configurations/uses-dup")).status_code == 204
    # ... and once the signed targets no longer list it
    listed = await firmware.delete(f"/v1/artifacts/{kept['id']}")
    assert listed.status_code == 409 and "signed target" in listed.json()["message"]
    current = Metadata[Targets].from_bytes((await firmware.get("/v1/metadata/targets.json")).content).signed
    unlisted = rules.targets_without(current, kept["id"], datetime.now(UTC) + timedelta(days=1))
    signed = rules.signed_by(unlisted, [stack.release_team.signer("targets", 1)]).to_bytes()
    assert (await firmware.post("/v1/metadata/targets", content=signed)).status_code == 201
    assert (await firmware.delete(f"/v1/artifacts/{kept['id']}")).status_code == 204
    assert (await firmware.get(f"/v1/artifacts/{kept['id']}")).status_code == 404
