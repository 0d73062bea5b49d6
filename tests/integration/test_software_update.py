"""The firmware broker and the software update end to end, on real daprd + Mosquitto + Redis with
device agents: the nine steps of the seed "Software Update", driven by a configuration rollout,
and every way an update must be refused.

Every download of this module passes through a TCP relay that can cut the link mid-download, so
the agents' resume is exercised exactly where devices meet it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomqtt
import httpx
import pytest
import redis.asyncio as redis

from services.contracts.topics import Operation, Reply, TwinAddress, profile
from services.devtools.agent import LocalAgent
from services.devtools.broker import SERVICE_USER
from services.devtools.processes import free_port
from services.devtools.stack import Stack
from services.domain.software.artifacts import chunk_name
from services.platform.names import FIRMWARE_APP, ROLLOUT_APP
from tests.support.agents import AgentFactory, agents
from tests.support.devices import new_device_id
from tests.support.software import CHUNK, HEALTHY, finished, image, software, twin, upload
from tests.support.waiting import eventually

RELAY_PORT = free_port()
STACK_ENV = {
    # Deltas carry URLs through the relay; uploads above 8 MiB are refused (the 413 test).
    "TWINFLEET_FIRMWARE_PUBLIC_URL": f"http://127.0.0.1:{RELAY_PORT}",
    "TWINFLEET_FIRMWARE_MAX_ARTIFACT_BYTES": str(8 << 20),
}


class Relay:
    """A TCP relay in front of the firmware app; `cut_after(n)` drops the next connection that
    has carried n bytes towards the device."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_at: int | None = None
        self.cuts = 0

    def cut_after(self, count: int) -> None:
        self.cut_at = count

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
            sent = 0
            try:
                while data := await src.read(65536):
                    if downstream and self.cut_at is not None and sent + len(data) >= self.cut_at:
                        dst.write(data[: max(self.cut_at - sent, 0)])
                        self.cut_at = None
                        self.cuts += 1
                        raise ConnectionResetError("relay cut the link")
                    dst.write(data)
                    sent += len(data)
                    await dst.drain()
            finally:
                for stream in (dst, writer, up_writer):
                    with contextlib.suppress(Exception):
                        stream.close()

        with contextlib.suppress(asyncio.CancelledError):  # the relay closing with the module
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True), return_exceptions=True)


@pytest.fixture(scope="module")
async def relay(stack: Stack) -> AsyncIterator[Relay]:
    relay = Relay(stack.ports[FIRMWARE_APP].app)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", RELAY_PORT)
    try:
        yield relay
    finally:
        server.close()


@pytest.fixture(scope="module")
async def firmware(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.app_url(FIRMWARE_APP), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def rollouts(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.app_url(ROLLOUT_APP), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def start_agent(stack: Stack, relay: Relay) -> Iterator[AgentFactory]:
    env = {
        "TWINFLEET_SOFTWARE_INSTALLER": "file",
        "TWINFLEET_SOFTWARE_FIRMWARE_URL": f"http://127.0.0.1:{RELAY_PORT}",
        "TWINFLEET_SOFTWARE_TRUSTED_KEYS": stack.metadata_public_key,
        "TWINFLEET_SOFTWARE_VERSION": "1.0.0",
    }
    with agents(stack, env) as start:

        def start_device(device_id: str, **extra: str) -> LocalAgent:
            root = stack.run_dir / "agents" / device_id
            target = root / "app" / "firmware.bin"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"HEALTHY factory image 1.0.0")
            return start(
                device_id,
                TWINFLEET_DEVICE_PASSWORD=stack.device_password(device_id),
                TWINFLEET_SOFTWARE_TARGET=str(target),
                TWINFLEET_SOFTWARE_HEALTH_COMMAND=f"grep -q ^{HEALTHY.decode()} {target}",
                **extra,
            )

        yield start_device


@contextlib.asynccontextmanager
async def watch(stack: Stack, device_ids: list[str]) -> AsyncIterator[dict[str, list[dict[str, Any]]]]:
    """What the service sends the devices: their deltas and `/update/accepted` answers."""
    seen: dict[str, list[dict[str, Any]]] = {}
    topics = profile("default")
    async with aiomqtt.Client(
        "127.0.0.1", stack.mqtt_port, username=SERVICE_USER, password=stack.secrets["service"]
    ) as client:
        for device_id in device_ids:
            for reply in (Reply.DELTA, Reply.ACCEPTED):
                topic = topics.reply_topic(TwinAddress(device_id), Operation.UPDATE, reply)
                seen[topic] = []
                await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                seen.setdefault(str(message.topic), []).append(json.loads(bytes(message.payload)))

        task = asyncio.create_task(collect())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def topic(device_id: str, reply: Reply) -> str:
    return profile("default").reply_topic(TwinAddress(device_id), Operation.UPDATE, reply)


async def test_nine_step_update_through_a_staged_rollout_on_two_agents(
    stack: Stack,
    api: httpx.AsyncClient,
    firmware: httpx.AsyncClient,
    rollouts: httpx.AsyncClient,
    start_agent: AgentFactory,
) -> None:
    devices = [new_device_id("sw-a"), new_device_id("sw-b")]
    async with watch(stack, devices) as seen:
        # 1. each device subscribes to its delta (the agent, at boot) and reports what it runs
        started = [start_agent(d) for d in devices]
        for device_id in devices:
            await eventually(lambda d=device_id: software(api, d), what="factory version reported")
            assert (await software(api, device_id))["version"] == "1.0.0"
            await api.patch(f"/v1/twins/{device_id}/tags", json={"ring": "nine-steps"})
        # 2. the new software goes into storage
        data = image("2.0.0")
        artifact = (await upload(firmware, "gateway", "2.0.0", data))["id"]
        # 3. desired state names it for the targeted devices, here through a staged rollout
        spec = {
            "id": "gateway-2-0-0",
            "targetCondition": 'tags.ring == "nine-steps"',
            "content": {"software": {"artifact": artifact, "version": "2.0.0"}},
            "rollout": {"stages": [{"count": 1}, {"percent": 100}], "failureThreshold": {"count": 1}},
        }
        assert (await rollouts.post("/v1/configurations", json=spec)).status_code == 201
        assert (await rollouts.post("/v1/configurations/gateway-2-0-0/activate")).status_code == 200
        # 9. ... until both report the new version, and the twin-store answers `accepted`
        reports = [await finished(api, d, artifact) for d in devices]
        assert [r["status"] for r in reports] == ["UPDATED", "UPDATED"]
        assert [r["version"] for r in reports] == ["2.0.0", "2.0.0"]

        async def completed() -> bool:
            view = (await rollouts.get("/v1/configurations/gateway-2-0-0")).json()
            return view["state"] == "completed" and view["progress"]["succeeded"] == 2

        await eventually(completed, what="rollout completed with both succeeded")
        await asyncio.sleep(0.5)  # the last accepted answers are on their way
    for device_id, agent in zip(devices, started, strict=True):
        # 4.-6. the delta carried the reference plus a URL minted for this device only
        deltas = [m["state"]["software"] for m in seen[topic(device_id, Reply.DELTA)] if "software" in m["state"]]
        assert deltas and deltas[0]["artifact"] == artifact
        assert f"device={device_id}&" in deltas[0]["url"] and "signature=" in deltas[0]["url"]
        # 7. downloaded and installed: the file is the artifact's bytes
        assert (agent.root / "app" / "firmware.bin").read_bytes() == data
        # 8.-9. every step was reported and accepted, in order, the new version last
        steps = [
            m["state"]["reported"]["software"].get("status")
            for m in seen[topic(device_id, Reply.ACCEPTED)]
            if "software" in m.get("state", {}).get("reported", {})
        ]
        assert _in_order(steps, ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "INSTALLING", "UPDATED"]), steps
        assert "delta" not in (await twin(api, device_id))["state"]
    # an artifact a live configuration refers to cannot be deleted
    refused = await firmware.delete(f"/v1/artifacts/{artifact}")
    assert refused.status_code == 409 and "gateway-2-0-0" in refused.json()["message"]


def _in_order(seen: list[Any], wanted: list[str]) -> bool:
    position = 0
    for status in seen:
        if position < len(wanted) and status == wanted[position]:
            position += 1
    return position == len(wanted)


async def _desire(api: httpx.AsyncClient, device_id: str, artifact: str, version: str) -> None:
    body = {"software": {"artifact": artifact, "version": version}}
    assert (await api.patch(f"/v1/twins/{device_id}/desired", json=body)).status_code == 200


async def test_refused_updates_keep_the_running_version(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    device_id = new_device_id("sw-refuse")
    agent = start_agent(device_id)
    target = agent.root / "app" / "firmware.bin"
    await eventually(lambda: software(api, device_id), what="factory version reported")
    factory = target.read_bytes()

    async def refused(artifact: str, version: str) -> str:
        await _desire(api, device_id, artifact, version)
        report = await finished(api, device_id, artifact)
        assert report["status"] == "FAILED", report
        assert report["version"] == "1.0.0" and target.read_bytes() == factory  # still running the old one
        return str(report["reason"])

    # bytes changed in storage after signing: the hash does not match the signed metadata
    tampered = (await upload(firmware, "edge", "3.0.0", image("3.0.0")))["id"]
    chunk = stack.run_dir / "artifacts" / chunk_name(tampered, 1)
    chunk.write_bytes(bytes(b ^ 0xFF for b in chunk.read_bytes()[:100]) + chunk.read_bytes()[100:])
    assert (await refused(tampered, "3.0.0")).startswith("hash mismatch")
    # metadata altered in the state store: its signature no longer verifies
    forged = (await upload(firmware, "edge", "3.1.0", image("3.1.0")))["id"]
    await _forge_metadata(stack, forged)
    assert (await refused(forged, "3.1.0")).startswith("bad signature")
    # metadata past its expiry
    stale = (await upload(firmware, "edge", "3.2.0", image("3.2.0"), expires_in=1))["id"]
    await asyncio.sleep(1.5)
    assert (await refused(stale, "3.2.0")).startswith("metadata expired")
    # an older version than the one running
    older = (await upload(firmware, "edge", "0.9.0", image("0.9.0")))["id"]
    assert (await refused(older, "0.9.0")).startswith("rollback refused")
    # a release that installs but fails its health check is rolled back
    broken = (await upload(firmware, "edge", "4.0.0", image("4.0.0", healthy=False)))["id"]
    await _desire(api, device_id, broken, "4.0.0")
    report = await finished(api, device_id, broken)
    assert report["status"] == "ROLLED_BACK" and report["version"] == "1.0.0", report
    assert target.read_bytes() == factory
    # and a good one afterwards still goes through
    good = image("4.0.1")
    fixed = (await upload(firmware, "edge", "4.0.1", good))["id"]
    await _desire(api, device_id, fixed, "4.0.1")
    assert (await finished(api, device_id, fixed))["status"] == "UPDATED"
    assert target.read_bytes() == good


async def _forge_metadata(stack: Stack, artifact: str) -> None:
    """Raise the length in the stored targets metadata (as an attacker with store access would)."""
    client = redis.Redis(port=stack.redis_port)
    try:
        key = f"{FIRMWARE_APP}||artifact~{artifact}"
        record = json.loads(await client.hget(key, "data"))  # type: ignore[misc]
        ((_, target),) = record["metadata"]["signed"]["targets"].items()
        target["length"] += 1
        await client.hset(key, "data", json.dumps(record))  # type: ignore[misc]
    finally:
        await client.aclose()


async def test_a_link_dropped_mid_download_resumes_with_a_range(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient, relay: Relay, start_agent: AgentFactory
) -> None:
    device_id = new_device_id("sw-resume")
    agent = start_agent(device_id)
    await eventually(lambda: software(api, device_id), what="factory version reported")
    data = image("5.0.0", size=5 * CHUNK)
    artifact = (await upload(firmware, "resume", "5.0.0", data))["id"]
    cuts = relay.cuts
    relay.cut_after(2 * CHUNK + 777)  # the next download loses its link part-way
    await _desire(api, device_id, artifact, "5.0.0")
    report = await finished(api, device_id, artifact)
    assert report["status"] == "UPDATED", report
    assert relay.cuts == cuts + 1
    assert (agent.root / "app" / "firmware.bin").read_bytes() == data
    progress = (await firmware.get(f"/v1/artifacts/{artifact}/downloads")).json()["items"]
    resumed = [p for p in progress if p["deviceId"] == device_id]
    assert resumed and resumed[0]["from"] > 0, progress  # the last request asked for the rest only
    assert resumed[0]["from"] + resumed[0]["sent"] == len(data)


async def test_only_the_targeted_device_can_download(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient
) -> None:
    a, b = new_device_id("dl-a"), new_device_id("dl-b")
    data = image("6.0.0")
    artifact = (await upload(firmware, "scoped", "6.0.0", data))["id"]
    for device_id in (a, b):
        assert (await api.put(f"/v1/twins/{device_id}")).status_code == 201
    await _desire(api, a, artifact, "6.0.0")  # only A's twin wants it
    basic_a = httpx.BasicAuth(a, stack.device_password(a))
    basic_b = httpx.BasicAuth(b, stack.device_password(b))

    async def url_for(device_id: str, of: str = artifact, **extra: Any) -> str:
        response = await firmware.post(f"/v1/artifacts/{of}/urls", json={"deviceId": device_id, **extra})
        # straight to the app, not through the relay (which would make every peer 127.0.0.1)
        return str(response.json()["url"]).replace(
            STACK_ENV["TWINFLEET_FIRMWARE_PUBLIC_URL"], stack.app_url(FIRMWARE_APP)
        )

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
    pinned = (await url_for(a, ip="127.0.0.2")).replace(
        STACK_ENV["TWINFLEET_FIRMWARE_PUBLIC_URL"], str(firmware.base_url)
    )
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
    large = (await upload(firmware, "scoped", "6.1.0", os.urandom(8 << 20)))["id"]
    await _desire(api, a, large, "6.1.0")
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
    kept = await upload(firmware, "dup", "1.0.0", b"first")
    again = await firmware.post("/v1/artifacts", params={"name": "dup", "version": "1.0.0"}, content=b"second")
    assert again.status_code == 409
    assert (await firmware.get(f"/v1/artifacts/{kept['id']}")).json()["sha256"] == hashlib.sha256(b"first").hexdigest()
    assert (await firmware.get("/v1/artifacts/nothing-here")).status_code == 404
    # deletable once no configuration refers to it any more
    spec = {"id": "uses-dup", "targetCondition": "false", "content": {"software": {"artifact": kept["id"]}}}
    assert (await rollouts.post("/v1/configurations", json=spec)).status_code == 201
    assert (await firmware.delete(f"/v1/artifacts/{kept['id']}")).status_code == 409
    assert (await rollouts.delete("/v1/configurations/uses-dup")).status_code == 204
    assert (await firmware.delete(f"/v1/artifacts/{kept['id']}")).status_code == 204
    assert (await firmware.get(f"/v1/artifacts/{kept['id']}")).status_code == 404
