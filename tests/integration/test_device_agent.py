"""The device agent on real daprd (its own sidecar: mqtt3 to the broker with the device's
credentials, SQLite store) against the real suite."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiomqtt
import httpx
import pytest

from services.contracts.topics import DeviceChannels
from services.devtools.agent import LocalAgent
from services.devtools.broker import SERVICE_USER
from services.devtools.stack import Stack
from services.domain.device.core import FAILED, UNSUPPORTED
from services.platform.names import COMMANDS_APP, EVENTS_APP
from tests.support.agents import AgentFactory, agents
from tests.support.releases import twin
from tests.support.waiting import eventually


@pytest.fixture
def start_agent(stack: Stack) -> Iterator[AgentFactory]:
    with agents(stack) as start:
        yield start


def reported(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("state", {}).get("reported", {}) if doc else {}


async def test_agent_applies_desired_configuration_and_reports_it(
    stack: Stack, api: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    agent = start_agent("agent-apply")
    want = {"sampleRate": 5, "mode": "eco"}
    await eventually(lambda: twin(api, "agent-apply"), what="twin created at boot")
    assert (await api.patch("/v1/twins/agent-apply/desired", json={"config": want})).status_code == 200

    async def applied() -> bool:
        doc = await twin(api, "agent-apply")
        return reported(doc).get("config") == want and "delta" not in doc["state"]

    await eventually(applied, what="config applied and reported")
    assert json.loads(agent.config_file.read_text()) == want

    # a key no handler takes is reported unsupported; a value the handler refuses is reported FAILED
    await api.patch("/v1/twins/agent-apply/desired", json={"lights": "off"})

    async def statuses() -> bool:
        return reported(await twin(api, "agent-apply")).get("lights", {}).get("status") == UNSUPPORTED

    await eventually(statuses, what="unsupported key reported")
    await api.patch("/v1/twins/agent-apply/desired", json={"config": None})
    await api.patch("/v1/twins/agent-apply/desired", json={"config": 7})

    async def failed() -> bool:
        return reported(await twin(api, "agent-apply")).get("config", {}).get("status") == FAILED

    await eventually(failed, what="failed apply reported")
    assert json.loads(agent.config_file.read_text()) == want  # the old settings stay
    assert await _status(agent, lambda s: s["connected"] is True)


async def test_offline_device_converges_to_the_last_desired_state_on_reconnect(
    stack: Stack, api: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    device = "agent-offline"
    agent = start_agent(device, TWINFLEET_AGENT_HEARTBEAT_INTERVAL="1")
    await eventually(lambda: twin(api, device), what="twin created at boot")
    stack.procs["mosquitto"].stop()
    try:
        for rate in (1, 2, 3):  # desired changes three times while the device is away
            assert (await api.patch(f"/v1/twins/{device}/desired", json={"config": {"rate": rate}})).status_code == 200
        await eventually(
            lambda: _status(agent, lambda s: not s["connected"]), timeout=20, what="agent noticing the outage"
        )
        assert not agent.config_file.exists()
    finally:
        stack.restart("mosquitto")

    async def converged() -> bool:
        doc = await twin(api, device)
        return reported(doc).get("config") == {"rate": 3} and "delta" not in doc["state"]

    await eventually(converged, timeout=60, what="convergence after reconnect")
    assert json.loads(agent.config_file.read_text()) == {"rate": 3}


async def _status(agent: LocalAgent, check: Callable[[dict[str, Any]], bool]) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        return check((await client.get(f"{agent.url}/v1/status")).json())


async def test_agent_killed_mid_apply_restarts_and_converges(
    stack: Stack, api: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    device = "agent-crash"
    agent = start_agent(device, TWINFLEET_AGENT_APPLY_DELAY="2")
    await eventually(lambda: twin(api, device), what="twin created at boot")
    await api.patch(f"/v1/twins/{device}/desired", json={"config": {"rate": 10}})
    await eventually(
        lambda: _status(agent, lambda s: s["view"]["desired"].get("config") == {"rate": 10}),
        what="agent taking the delta",
    )
    agent.kill()  # mid-apply: the apply takes 2 s; power cut for the agent and its sidecar
    assert not agent.config_file.exists()
    await api.patch(f"/v1/twins/{device}/desired", json={"config": {"rate": 11}})
    agent.start()

    async def converged() -> bool:
        doc = await twin(api, device)
        return reported(doc).get("config") == {"rate": 11} and "delta" not in doc["state"]

    await eventually(converged, timeout=60, what="convergence after the restart")
    assert json.loads(agent.config_file.read_text()) == {"rate": 11}


def sink_events(stack: Stack, device: str) -> list[dict[str, Any]]:
    """Every event the example sink (local files, one per accepted batch) holds for a device."""
    folder = stack.run_dir / "events-sink" / device
    events: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        events += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return events


async def cursor(stack: Stack, device: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.app_url(EVENTS_APP), headers=stack.headers, timeout=5) as client:
        response = await client.get(f"/v1/devices/{device}/events/cursor")
        return response.json() if response.status_code == 200 else {}


async def produce_offline(stack: Stack, agent: LocalAgent, count: int) -> None:
    stack.procs["mosquitto"].stop()
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            for start in range(0, count, 50):
                batch = [{"type": "reading", "data": {"i": i}} for i in range(start, min(count, start + 50))]
                assert (await client.post("/v1/events", json=batch)).status_code == 202
        await eventually(lambda: _status(agent, lambda s: not s["connected"]), what="agent noticing the outage")
    finally:
        stack.restart("mosquitto")


async def test_events_produced_offline_arrive_once_in_order_after_reconnect(
    stack: Stack, start_agent: AgentFactory
) -> None:
    device = "agent-events"
    agent = start_agent(device)
    await eventually(lambda: _status(agent, lambda s: s["connected"]), what="agent connected")
    await produce_offline(stack, agent, 1000)
    await eventually(lambda: _status(agent, lambda s: s["outbox"]["pending"] == 0), timeout=60, what="outbox flushed")
    got = await eventually(lambda: cursor(stack, device), what="cursor")
    await eventually(lambda: _cursor_at(stack, device, 1001), timeout=30, what="all events accepted")
    events = sink_events(stack, device)
    assert [e["seq"] for e in events] == list(range(1, 1001))
    assert [e["data"]["i"] for e in events] == list(range(1000))
    assert got.get("lost", 0) == 0


async def test_a_full_outbox_drops_the_oldest_and_the_cloud_counts_them(
    stack: Stack, start_agent: AgentFactory
) -> None:
    device = "agent-overflow"
    agent = start_agent(device, TWINFLEET_AGENT_OUTBOX_MAX="100")
    await eventually(lambda: _status(agent, lambda s: s["connected"]), what="agent connected")
    await produce_offline(stack, agent, 150)
    await eventually(lambda: _cursor_at(stack, device, 151), timeout=60, what="events accepted")
    assert (await cursor(stack, device))["lost"] == 50
    assert [e["seq"] for e in sink_events(stack, device)] == list(range(51, 151))


async def _cursor_at(stack: Stack, device: str, next_seq: int) -> bool:
    return (await cursor(stack, device)).get("nextSeq") == next_seq


async def test_a_cbor_agent_carries_the_same_documents(
    stack: Stack, api: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    device = "agent-cbor"
    agent = start_agent(device, TWINFLEET_WIRE_ENCODING="cbor")
    await eventually(lambda: twin(api, device), what="twin created at boot")
    await api.patch(f"/v1/twins/{device}/desired", json={"config": {"rate": 2.5, "on": True}})

    async def applied() -> dict[str, Any] | None:
        doc = await twin(api, device)
        return doc if reported(doc).get("config") == {"rate": 2.5, "on": True} else None

    doc = await eventually(applied, what="config applied over CBOR")
    assert doc["wire"] == "cbor" and reported(doc)["agent"]["wire"] == "cbor"
    assert json.loads(agent.config_file.read_text()) == {"rate": 2.5, "on": True}


async def test_events_survive_the_cloud_events_sidecar_dying_mid_stream(
    stack: Stack, start_agent: AgentFactory
) -> None:
    """The broker acknowledged batches the dying sidecar never delivered; the device keeps them
    until the cloud acknowledges, sends them again, and the cloud takes each event once."""
    device = "agent-ack"
    agent = start_agent(device, TWINFLEET_AGENT_ACK_TIMEOUT="2", TWINFLEET_AGENT_EVENT_BATCH="20")
    await eventually(lambda: _status(agent, lambda s: s["connected"]), what="agent connected")
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        for start in range(0, 600, 20):
            batch = [{"type": "reading", "data": {"i": i}} for i in range(start, start + 20)]
            assert (await client.post("/v1/events", json=batch)).status_code == 202
            if start == 200:
                stack.procs[f"{EVENTS_APP}-daprd"].kill()
            if start == 300:
                await asyncio.to_thread(stack.restart, f"{EVENTS_APP}-daprd")
    await eventually(lambda: _cursor_at(stack, device, 601), timeout=60, what="all events accepted")
    await eventually(lambda: _status(agent, lambda s: s["outbox"]["pending"] == 0), what="outbox purged")
    assert [e["seq"] for e in sink_events(stack, device)] == list(range(1, 601))
    assert (await cursor(stack, device))["lost"] == 0


async def command_status(stack: Stack, device: str, command_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.app_url(COMMANDS_APP), headers=stack.headers, timeout=5) as client:
        return (await client.get(f"/v1/devices/{device}/commands/{command_id}")).json()  # type: ignore[no-any-return]


async def test_durable_commands_reach_the_agent_when_it_comes_back_and_run_once(
    stack: Stack, start_agent: AgentFactory
) -> None:
    device = "agent-commands"
    agent = start_agent(device)
    await eventually(lambda: _status(agent, lambda s: s["connected"]), what="agent connected")
    async with httpx.AsyncClient(base_url=stack.app_url(COMMANDS_APP), headers=stack.headers, timeout=10) as client:
        online = (await client.post(f"/v1/devices/{device}/commands", json={"name": "ping", "ttlSeconds": 60})).json()
        done = await eventually(lambda: _command_done(stack, device, online["id"]), what="command run while online")
        assert done["status"] == "SUCCEEDED" and "pong" in done["result"]
        agent.kill()  # the device goes away; commands queue meanwhile
        queued = [
            (await client.post(f"/v1/devices/{device}/commands", json={"name": name, "ttlSeconds": ttl})).json()
            for name, ttl in (("ping", 120), ("no-such-command", 120), ("ping", 1))
        ]
        await asyncio.sleep(2)  # the last one's TTL passes while the device is away
        agent.start()
        kept, unknown, expired = queued
        assert (await eventually(lambda: _command_done(stack, device, kept["id"]), timeout=60))["status"] == "SUCCEEDED"
        failed = await eventually(lambda: _command_done(stack, device, unknown["id"]))
        assert failed["status"] == "FAILED" and "unknown command" in failed["reason"]
        assert (await command_status(stack, device, expired["id"]))["status"] == "EXPIRED"
        # a command delivered again (as after a lost result) is answered with the kept result, not
        # run again: `ping` answers with the time it ran, so a second run would answer differently
        record = await command_status(stack, device, kept["id"])
        channels = DeviceChannels(device)
        async with aiomqtt.Client(
            "127.0.0.1", stack.mqtt_port, username=SERVICE_USER, password=stack.secrets["service"]
        ) as service:
            await service.subscribe(channels.command_result(kept["id"]), qos=1)
            again = {"id": kept["id"], "name": "ping", "args": {}, "expiresAt": time.time() + 60}
            await service.publish(channels.command(kept["id"]), json.dumps(again), qos=1)
            async with asyncio.timeout(20):
                async for message in service.messages:
                    answer = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    break
        assert answer["result"] == record["result"]


async def _command_done(stack: Stack, device: str, command_id: str) -> dict[str, Any] | None:
    record = await command_status(stack, device, command_id)
    return record if record.get("status") in ("SUCCEEDED", "FAILED") else None


async def chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length): the limit must hold as it streams."""
    for at in range(0, len(body), size):
        yield body[at : at + size]


async def test_the_agents_api_refuses_bad_input_with_a_message_and_queues_nothing(start_agent: AgentFactory) -> None:
    agent = start_agent("agent-refusals")
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        first = await client.post("/v1/events", json={"type": "reading", "data": {"i": 0}})
        assert first.status_code == 202
        (seq,) = first.json()["seqs"]
        refusals = [
            (await client.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"}), 400),
            (await client.post("/v1/events", json={"data": {"i": 1}}), 400),
            (await client.post("/v1/events", json={"type": "", "data": {}}), 400),
            (await client.post("/v1/events", json=[{"type": "reading"}] * 1001), 400),
            (await client.post("/v1/events", content=b"[" + b" " * (1024 * 1024) + b"]"), 413),
            (await client.post("/v1/events", content=chunks(b"[" + b" " * (1024 * 1024) + b"]")), 413),
            (await client.post("/v1/software/consent", json={"accept": True}), 404),
            (await client.post("/cloud/delta", json={"data": {"state": {"config": {"x": 1}}}}), 401),
            (await client.post("/cloud/commands", json={}, headers={"dapr-api-token": "guessed"}), 401),
            (await client.post("/v1/status"), 403),
        ]
        for response, status in refusals:
            assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
            body = response.json()
            assert body["code"] == status and body["message"], body
        assert "type" in refusals[1][0].json()["message"]
        assert all("1048576 bytes" in r.json()["message"] for r, _ in refusals[4:6])
        again = await client.post("/v1/events", json={"type": "reading", "data": {"i": 2}})
        assert again.json()["seqs"] == [seq + 1]  # nothing was queued in between


async def test_64_bit_integers_pass_the_agent_and_its_store_exactly(
    stack: Stack, api: httpx.AsyncClient, start_agent: AgentFactory
) -> None:
    """The agent keeps its twin and its outbox in its sidecar's store: values beyond a double's 53
    bits come out as they went in (daprd's HTTP state API would round a JSON value's numbers)."""
    device = "agent-64-bit"
    agent = start_agent(device)
    want = {"serial": 2**53 + 1, "mask": 2**63 - 1, "low": -(2**63)}
    await eventually(lambda: twin(api, device), what="twin created at boot")
    assert (await api.patch(f"/v1/twins/{device}/desired", json={"config": want})).status_code == 200

    async def applied() -> bool:
        return reported(await twin(api, device)).get("config") == want

    await eventually(applied, what="config applied and reported exactly")
    assert json.loads(agent.config_file.read_text()) == want
    await asyncio.to_thread(agent.stop)
    await asyncio.to_thread(agent.start)  # the twin it kept is read back from the store

    async def kept() -> bool:
        return await _status(agent, lambda s: s["view"]["desired"].get("config") == want)

    await eventually(kept, what="the kept twin, exactly, after the restart")
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        event = {"type": "reading", "data": {"count": 2**53 + 1, "tiny": 1e-05}}
        assert (await client.post("/v1/events", json=[event])).status_code == 202
    await eventually(lambda: _cursor_at(stack, device, 2), timeout=30, what="the event accepted")
    assert [e["data"] for e in sink_events(stack, device)] == [event["data"]]
