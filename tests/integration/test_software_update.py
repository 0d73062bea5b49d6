"""The software update end to end, on real daprd + Mosquitto + Redis + Azurite with device agents:
the nine steps of the seed "Software Update", driven by a configuration rollout, with downloads
straight from the object store (SAS URLs the firmware app mints, late-bound into each delta), and
every way an update must be refused.

Every download of this module passes through a TCP relay in front of Azurite that can cut the link
mid-download, so the agents' resume (HTTP Range against the store) is exercised exactly where
devices meet it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
import redis.asyncio as redis
from azure.storage.blob import BlobServiceClient

from services.contracts.topics import Operation, Reply, TwinAddress, profile
from services.devtools.agent import LocalAgent
from services.devtools.broker import SERVICE_USER
from services.devtools.processes import free_port
from services.devtools.stack import BLOB_ACCOUNT, BLOB_CONTAINER, Stack
from services.domain.software import repository as rules
from services.firmware.stores import blob_name
from services.platform.names import FIRMWARE_APP
from tests.support.agents import AgentFactory, agents
from tests.support.cli import twin_cli
from tests.support.devices import new_device_id
from tests.support.releases import (
    CHUNK,
    HEALTHY,
    Relay,
    desire,
    finished,
    image,
    one_of_two_desires,
    publish,
    relaying,
    sign_targets,
    software,
    twin,
    upload,
)
from tests.support.waiting import eventually

RELAY_PORT = free_port()
STACK_ENV = {
    # SAS URLs name the relay in front of Azurite; uploads above 8 MiB are refused (the 413 test).
    "TWINFLEET_FIRMWARE_STORE_PUBLIC_URL": f"http://127.0.0.1:{RELAY_PORT}/{BLOB_ACCOUNT}",
    "TWINFLEET_FIRMWARE_MAX_ARTIFACT_BYTES": str(8 << 20),
    "TWINFLEET_FIRMWARE_BLOCK_SIZE": str(CHUNK),
}


@pytest.fixture(scope="module")
async def relay(stack: Stack) -> AsyncIterator[Relay]:
    async with relaying(RELAY_PORT, stack.blob_port) as relay:
        yield relay


@pytest.fixture(scope="module")
def start_agent(stack: Stack, relay: Relay) -> Iterator[AgentFactory]:
    env = {
        "TWINFLEET_SOFTWARE_INSTALLER": "file",
        "TWINFLEET_SOFTWARE_FIRMWARE_URL": stack.direct_url(FIRMWARE_APP),
        "TWINFLEET_SOFTWARE_TRUSTED_ROOT": str(stack.trusted_root),
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


def blobs(stack: Stack) -> Any:
    """The artifact container, as someone with the store's key sees it."""
    service = BlobServiceClient(
        stack.blob_endpoint, credential={"account_name": BLOB_ACCOUNT, "account_key": stack.blob_key}
    )
    return service.get_container_client(BLOB_CONTAINER)


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
        artifact = await publish(stack, firmware, "gateway", "2.0.0", data)
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
        # 4.-6. the delta carried the reference plus a URL minted as it was sent: a SAS on the store
        # (read-only, this one blob, expiring), so the bytes never pass through the suite's apps
        deltas = [m["state"]["software"] for m in seen[topic(device_id, Reply.DELTA)] if "software" in m["state"]]
        assert deltas and deltas[0]["artifact"] == artifact
        url = httpx.URL(deltas[0]["url"])
        assert url.port == RELAY_PORT and url.path == f"/{BLOB_ACCOUNT}/{BLOB_CONTAINER}/{blob_name(artifact)}"
        assert {"sp": "r", "sr": "b"}.items() <= dict(url.params).items()
        assert "sig" in url.params and "se" in url.params
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


async def test_refused_updates_keep_the_running_version(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    device_id = new_device_id("sw-refuse")
    agent = start_agent(device_id)
    target = agent.root / "app" / "firmware.bin"
    await eventually(lambda: software(api, device_id), what="factory version reported")
    factory = target.read_bytes()

    async def refused(artifact: str, version: str) -> str:
        await desire(api, device_id, artifact, version)
        report = await finished(api, device_id, artifact)
        assert report["status"] == "FAILED", report
        assert report["version"] == "1.0.0" and target.read_bytes() == factory  # still running the old one
        return str(report["reason"])

    # bytes changed in the store after signing: the hash does not match the signed metadata
    data = image("3.0.0")
    tampered = await publish(stack, firmware, "edge", "3.0.0", data)
    altered = bytes(b ^ 0xFF for b in data[:100]) + data[100:]
    await asyncio.to_thread(blobs(stack).upload_blob, blob_name(tampered), altered, overwrite=True)
    assert (await refused(tampered, "3.0.0")).startswith("hash mismatch")
    # targets metadata altered in the state store: its signature no longer verifies
    forged = await publish(stack, firmware, "edge", "3.1.0", image("3.1.0"))
    restore = await _forge_targets(stack, forged)
    try:
        assert (await refused(forged, "3.1.0")).startswith("bad signature")
    finally:
        await restore()
    # uploaded but never signed: not a release
    unsigned = (await upload(firmware, "edge", "3.3.0", image("3.3.0")))["id"]
    assert (await refused(unsigned, "3.3.0")).startswith("not a signed release")
    # targets metadata past its expiry
    stale = await publish(
        stack, firmware, "edge", "3.2.0", image("3.2.0"), expires=datetime.now(UTC) + timedelta(seconds=2)
    )
    await asyncio.sleep(2.5)
    assert (await refused(stale, "3.2.0")).startswith("metadata expired")
    # an older version than the one running
    older = await publish(stack, firmware, "edge", "0.9.0", image("0.9.0"))
    assert (await refused(older, "0.9.0")).startswith("rollback refused")
    # a release that installs but fails its health check is rolled back
    broken = await publish(stack, firmware, "edge", "4.0.0", image("4.0.0", healthy=False))
    await desire(api, device_id, broken, "4.0.0")
    report = await finished(api, device_id, broken)
    assert report["status"] == "ROLLED_BACK" and report["version"] == "1.0.0", report
    assert target.read_bytes() == factory
    # and a good one afterwards still goes through
    good = image("4.0.1")
    fixed = await publish(stack, firmware, "edge", "4.0.1", good)
    await desire(api, device_id, fixed, "4.0.1")
    assert (await finished(api, device_id, fixed))["status"] == "UPDATED"
    assert target.read_bytes() == good


async def _forge_targets(stack: Stack, artifact: str) -> Any:
    """Raise the length in the current targets metadata in the state store (as an attacker with
    store access would); returns how to put it back."""
    client = redis.Redis(port=stack.redis_port)
    head = json.loads(await client.hget(f"{FIRMWARE_APP}||tuf~head", "data"))  # type: ignore[misc]
    key = f"{FIRMWARE_APP}||tuf~targets~{head['targets']}"
    original = await client.hget(key, "data")  # type: ignore[misc]
    record = json.loads(original)
    record["metadata"]["signed"]["targets"][artifact]["length"] += 1
    await client.hset(key, "data", json.dumps(record))  # type: ignore[misc]

    async def restore() -> None:
        await client.hset(key, "data", original)  # type: ignore[misc]
        await client.aclose()

    return restore


async def test_a_link_dropped_mid_download_resumes_with_a_range_against_the_store(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient, relay: Relay, start_agent: AgentFactory
) -> None:
    device_id = new_device_id("sw-resume")
    agent = start_agent(device_id)
    await eventually(lambda: software(api, device_id), what="factory version reported")
    data = image("5.0.0", size=5 * CHUNK)
    artifact = await publish(stack, firmware, "resume", "5.0.0", data)
    cuts, ranges = relay.cuts, len(relay.ranges)
    relay.cut_after(2 * CHUNK + 777)  # the next download loses its link part-way
    await desire(api, device_id, artifact, "5.0.0")
    report = await finished(api, device_id, artifact)
    assert report["status"] == "UPDATED", report
    assert relay.cuts == cuts + 1
    assert (agent.root / "app" / "firmware.bin").read_bytes() == data
    # the store was asked for the rest only, from where the link dropped
    resumed = [int(r.removeprefix("bytes=").split("-")[0]) for r in relay.ranges[ranges:]]
    assert resumed and 0 < resumed[-1] <= 2 * CHUNK + 777, relay.ranges


async def test_the_store_refuses_urls_past_their_expiry_or_altered(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient
) -> None:
    a, b, data, artifact = await one_of_two_desires(stack, api, firmware, "sas")
    store = httpx.AsyncClient(timeout=30)  # straight to Azurite: the relay would make every peer 127.0.0.1

    async def url_for(device_id: str, **extra: Any) -> str:
        minted = await firmware.post(f"/v1/artifacts/{artifact}/urls", json={"deviceId": device_id, **extra})
        assert minted.status_code == 200, minted.text
        return str(minted.json()["url"]).replace(STACK_ENV["TWINFLEET_FIRMWARE_STORE_PUBLIC_URL"], stack.blob_endpoint)

    async def refused(url: str) -> None:
        answer = await store.get(url)
        assert answer.status_code == 403 and b"<Error>" in answer.content and data[:20] not in answer.content

    async with store:
        url = await url_for(a)
        assert (await store.get(url)).content == data
        part = await store.get(url, headers={"Range": f"bytes={CHUNK - 5}-{CHUNK + 4}"})
        assert part.status_code == 206 and part.content == data[CHUNK - 5 : CHUNK + 5]
        # read-only, this blob only, untampered
        await refused(url.replace(blob_name(artifact), blob_name("other-1.0")))
        writing = await store.put(url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
        assert writing.status_code == 403
        await refused(url.replace("sp=r", "sp=rw"))
        # past its expiry the store refuses it
        short = await url_for(a, ttl=1)
        await asyncio.sleep(2)
        await refused(short)
        # an IP range is part of what is signed: dropping it breaks the signature. (Azurite 3.35 does
        # not check the caller's address against `sip`; Azure Blob does.)
        pinned = httpx.URL(await url_for(a, ip="127.0.0.2"))
        assert pinned.params["sip"] == "127.0.0.2"
        await refused(str(pinned.copy_remove_param("sip")))
        await refused(str(pinned.copy_set_param("sip", "127.0.0.1")))

    # temporary credentials: only with the device's own credentials, only for what its twin desires
    basic_a = httpx.BasicAuth(a, stack.device_password(a))
    given = await firmware.post(f"/v1/artifacts/{artifact}/credentials", auth=basic_a)
    assert given.status_code == 200
    credential = given.json()
    assert credential["url"].endswith(credential["credential"]) and "se=" in credential["credential"]
    async with httpx.AsyncClient(timeout=30) as client:
        assert (
            await client.get(
                credential["url"].replace(STACK_ENV["TWINFLEET_FIRMWARE_STORE_PUBLIC_URL"], stack.blob_endpoint)
            )
        ).content == data
    basic_b = httpx.BasicAuth(b, stack.device_password(b))
    assert (await firmware.post(f"/v1/artifacts/{artifact}/credentials", auth=basic_b)).status_code == 403
    wrong = httpx.BasicAuth(a, "not-the-password")
    assert (await firmware.post(f"/v1/artifacts/{artifact}/credentials", auth=wrong)).status_code == 403
    # and the app itself serves no bytes with an object store
    assert (await firmware.get(f"/v1/artifacts/{artifact}/download")).status_code == 404


async def test_a_refused_upload_leaves_no_blob(stack: Stack, firmware: httpx.AsyncClient) -> None:
    async def big() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield image("x", size=CHUNK)

    refused = await firmware.post("/v1/artifacts", params={"name": "big", "version": "1.0"}, content=big())
    assert refused.status_code == 413
    mismatch = await firmware.post(
        "/v1/artifacts", params={"name": "sum", "version": "1.0", "sha256": "0" * 64}, content=b"some bytes"
    )
    assert mismatch.status_code == 400
    names = await asyncio.to_thread(lambda: [b.name for b in blobs(stack).list_blobs()])
    assert blob_name("big-1.0") not in names and blob_name("sum-1.0") not in names
    assert (await firmware.get("/v1/artifacts/big-1.0")).status_code == 404


async def _configure(rollouts: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    assert (await rollouts.post("/v1/configurations", json=spec)).status_code == 201
    assert (await rollouts.post(f"/v1/configurations/{spec['id']}/activate")).status_code == 200


async def _status(api: httpx.AsyncClient, device_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        value = await software(api, device_id)
        return value if value.get("status") == status else None

    found: dict[str, Any] = await eventually(reached, timeout=timeout, what=f"{device_id} reporting {status}")
    return found


async def test_a_download_only_update_waits_verified_and_installs_on_the_trigger(
    stack: Stack,
    api: httpx.AsyncClient,
    firmware: httpx.AsyncClient,
    rollouts: httpx.AsyncClient,
    start_agent: AgentFactory,
) -> None:
    devices = [new_device_id("later-a"), new_device_id("later-b")]
    agents = {d: start_agent(d) for d in devices}
    for device_id in devices:
        await eventually(lambda d=device_id: software(api, d), what="factory version reported")
        await api.patch(f"/v1/twins/{device_id}/tags", json={"ring": "later"})
    data = image("7.0.0")
    artifact = await publish(stack, firmware, "later", "7.0.0", data)
    spec = {
        "id": "download-first",
        "targetCondition": 'tags.ring == "later"',
        "content": {"software": {"artifact": artifact, "version": "7.0.0"}},
        "rollout": {"install": {"later": True}},
    }
    await _configure(rollouts, spec)
    for device_id in devices:
        waiting = await _status(api, device_id, "WAITING_FOR_INSTALL")
        assert waiting["attempt"] == artifact and waiting["version"] == "1.0.0"
        assert (agents[device_id].root / "app" / "firmware.bin").read_bytes() != data  # downloaded, not installed

    async def downloaded() -> dict[str, Any] | None:
        view = (await rollouts.get("/v1/configurations/download-first")).json()
        return view if view["state"] == "completed" and view["progress"]["awaitingInstall"] == 2 else None

    await eventually(downloaded, what="the download-only rollout done, both waiting")
    one = await asyncio.to_thread(twin_cli, stack, "config", "install", "download-first", "--device", devices[0])
    assert one.returncode == 0, one.stdout + one.stderr
    assert (await finished(api, devices[0], artifact))["status"] == "UPDATED"
    assert (agents[devices[0]].root / "app" / "firmware.bin").read_bytes() == data
    await asyncio.sleep(1)
    assert (await software(api, devices[1]))["status"] == "WAITING_FOR_INSTALL"  # not triggered yet
    rest = await asyncio.to_thread(twin_cli, stack, "config", "install", "download-first", "--all")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert (await finished(api, devices[1], artifact))["status"] == "UPDATED"

    async def installed() -> bool:
        progress = (await rollouts.get("/v1/configurations/download-first/metrics")).json()
        return bool(progress["installed"] == 2 and progress["succeeded"] == 2)

    await eventually(installed, what="both counted installed")
    history = [h["message"] for h in (await rollouts.get("/v1/configurations/download-first/history")).json()["items"]]
    assert f"install triggered by operator for {devices[0]}" in history
    assert "install triggered by operator for all twins" in history


async def test_an_install_waits_for_local_consent_or_its_auto_consent_deadline(
    stack: Stack,
    api: httpx.AsyncClient,
    firmware: httpx.AsyncClient,
    rollouts: httpx.AsyncClient,
    start_agent: AgentFactory,
) -> None:
    asking, deadline = new_device_id("consent-ask"), new_device_id("consent-auto")
    agents = {d: start_agent(d, TWINFLEET_SOFTWARE_REQUIRE_CONSENT="true") for d in (asking, deadline)}
    data = image("8.0.0")
    artifact = await publish(stack, firmware, "consent", "8.0.0", data)
    for device_id in (asking, deadline):
        await eventually(lambda d=device_id: software(api, d), what="factory version reported")
    async with httpx.AsyncClient(base_url=agents[asking].url, timeout=10) as local:
        nothing = await local.post("/v1/software/consent", json={})
        assert nothing.status_code == 409  # nothing waits yet
        await desire(api, asking, artifact, "8.0.0")
        waiting = await _status(api, asking, "WAITING_FOR_CONSENT")
        assert waiting["attempt"] == artifact and "autoConsentAt" not in waiting
        assert (await local.get("/v1/software")).json()["software"]["status"] == "WAITING_FOR_CONSENT"
        await asyncio.sleep(2)
        assert (await software(api, asking))["status"] == "WAITING_FOR_CONSENT"  # waits as long as it takes
        given = await local.post("/v1/software/consent", json={"artifact": artifact})
        assert given.status_code == 200 and given.json() == {"artifact": artifact, "accepted": True}
    assert (await finished(api, asking, artifact))["status"] == "UPDATED"
    assert (agents[asking].root / "app" / "firmware.bin").read_bytes() == data
    # a rollout's auto-consent deadline: the device installs without anyone answering
    await api.patch(f"/v1/twins/{deadline}/tags", json={"ring": "consent-auto"})
    spec = {
        "id": "auto-consent",
        "targetCondition": 'tags.ring == "consent-auto"',
        "content": {"software": {"artifact": artifact, "version": "8.0.0"}},
        "rollout": {"install": {"autoConsentSeconds": 4}},
    }
    await _configure(rollouts, spec)
    waiting = await _status(api, deadline, "WAITING_FOR_CONSENT")
    assert isinstance(waiting.get("autoConsentAt"), int)
    report = await finished(api, deadline, artifact)
    assert report["status"] == "UPDATED" and report["ts"] >= waiting["autoConsentAt"]


async def test_an_agent_offline_during_a_root_rotation_follows_it(
    stack: Stack, api: httpx.AsyncClient, firmware: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    """Last in this module: the release manager's key is replaced for the tests after it."""
    device_id = new_device_id("sw-rotate")
    agent = start_agent(device_id)
    await eventually(lambda: software(api, device_id), what="factory version reported")
    first = await publish(stack, firmware, "rotate", "7.0.0", image("7.0.0"))
    await desire(api, device_id, first, "7.0.0")
    assert (await finished(api, device_id, first))["status"] == "UPDATED"
    agent.stop()
    # while it is away the root key holders replace the release manager's key ...
    current = rules.load((await firmware.get("/v1/metadata/root.json")).content, "root").signed
    new_key = rules.pem_signer(rules.new_private_pem())
    old_key = stack.release_team.signer("targets", 1).public_key.keyid
    change = {"targets": rules.RootChange(add=[new_key.public_key], remove=[old_key])}
    root = rules.rotated(current, change, datetime.now(UTC) + timedelta(days=30))
    rules.signed_by(root, [stack.release_team.signer("root", 1), stack.release_team.signer("root", 2)])
    assert (await firmware.post("/v1/metadata/root", content=root.to_bytes())).status_code == 201
    # ... who publishes the next release with the new one
    data = image("7.1.0")
    stored = await upload(firmware, "rotate", "7.1.0", data)
    targets = await sign_targets(stack, firmware, stored, signer=new_key)
    assert (await firmware.post("/v1/metadata/targets", content=targets)).status_code == 201
    await desire(api, device_id, stored["id"], "7.1.0")
    agent.start()  # back: from the root it trusted it follows the rotation, then installs
    report = await finished(api, device_id, stored["id"])
    assert report["status"] == "UPDATED" and report["version"] == "7.1.0", report
    assert (agent.root / "app" / "firmware.bin").read_bytes() == data
