"""Durable commands over real Mosquitto + daprd + Redis: a component queues commands over REST, a
plain MQTT client plays the device (as device firmware would): sync, receive, answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import httpx
import pytest
import redis.asyncio as redis
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.contracts.topics import DeviceChannels
from services.devtools.stack import Stack
from services.domain.commands.record import record_key
from services.platform.names import COMMANDS_APP
from tests.support.devices import new_device_id

STACK_ENV = {"TWINFLEET_COMMANDS_SWEEP_INTERVAL": "0.2", "TWINFLEET_COMMANDS_REDELIVER_AFTER": "1"}
Json = dict[str, Any]


class Device:
    """A device speaking the commands contract with a plain MQTT client."""

    def __init__(self, client: aiomqtt.Client, device_id: str) -> None:
        self.client = client
        self.channels = DeviceChannels(device_id)
        self.received: asyncio.Queue[Json] = asyncio.Queue()

    async def read(self) -> None:
        async for message in self.client.messages:
            if str(message.topic) != self.channels.commands_sync:  # our own sync, echoed
                self.received.put_nowait(json.loads(bytes(message.payload)))  # type: ignore[arg-type]

    async def sync(self) -> None:
        await self.client.publish(self.channels.commands_sync, b"{}", qos=1)

    async def command(self, timeout: float = 20) -> Json:
        async with asyncio.timeout(timeout):
            return await self.received.get()

    async def nothing(self, within: float = 1.5) -> None:
        await asyncio.sleep(within)
        assert self.received.empty(), f"unexpected command {self.received.get_nowait()}"

    async def answer(self, command_id: str, payload: Json) -> None:
        await self.client.publish(self.channels.command_result(command_id), json.dumps(payload), qos=1)


@contextlib.asynccontextmanager
async def device(
    stack: Stack, device_id: str, *, clean: bool = True, subscribe_to: str | None = None
) -> AsyncIterator[Device]:
    password = stack.provision_devices([device_id])[device_id]
    async with aiomqtt.Client(
        "127.0.0.1",
        stack.mqtt_port,
        username=device_id,
        password=password,
        identifier=device_id,
        clean_session=clean,
    ) as client:
        dev = Device(client, device_id)
        await client.subscribe(subscribe_to or dev.channels.commands_filter, qos=1)
        reader = asyncio.create_task(dev.read())
        try:
            yield dev
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader


@pytest.fixture(scope="module")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The commands app's REST API (overrides the twin-store's `api` of conftest)."""
    async with httpx.AsyncClient(base_url=stack.app_url(COMMANDS_APP), headers=stack.headers, timeout=20) as client:
        yield client


async def queue(api: httpx.AsyncClient, device_id: str, name: str = "ping", **body: Any) -> Json:
    response = await api.post(f"/v1/devices/{device_id}/commands", json={"name": name, **body})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/devices/{device_id}/commands/{response.json()['id']}"
    created: Json = response.json()
    return created


async def read(api: httpx.AsyncClient, device_id: str, command_id: str) -> Json:
    response = await api.get(f"/v1/devices/{device_id}/commands/{command_id}")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def until_status(api: httpx.AsyncClient, device_id: str, command_id: str, status: str) -> Json:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        record = await read(api, device_id, command_id)
        if record["status"] == status:
            return record
        assert asyncio.get_running_loop().time() < deadline, f"never {status}: {record}"
        await asyncio.sleep(0.1)


async def stored(stack: Stack, device_id: str, command_id: str) -> tuple[Json | None, int]:
    """The record as the store holds it (bypassing the app, so nothing expires lazily) and its TTL."""
    client = redis.Redis(port=stack.redis_port)
    key = f"{COMMANDS_APP}||{record_key(device_id, command_id)}"
    try:
        data = await client.hget(key, "data")
        ttl = await client.ttl(key)
    finally:
        await client.aclose()
    return (json.loads(data) if data else None), int(ttl)


async def test_a_command_queued_while_the_device_is_away_is_delivered_on_sync(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    device_id = new_device_id("cmd-away")
    queued = await queue(api, device_id, "reboot", args={"delay": 5}, ttlSeconds=120)
    assert queued["status"] == "DELIVERED" and queued["deliveries"] == 1  # handed to the broker
    async with device(stack, device_id) as dev:
        await dev.nothing(0.5)  # the broker kept nothing for a device without a session
        await dev.sync()
        got = await dev.command()
        assert got == {"id": queued["id"], "name": "reboot", "args": {"delay": 5}, "expiresAt": queued["expiresAt"]}
        await dev.answer(queued["id"], {"status": "SUCCEEDED", "result": {"rebooted": True}})
        done = await until_status(api, device_id, queued["id"], "SUCCEEDED")
    assert done["result"] == {"rebooted": True} and done["deliveries"] == 2 and done["completedAt"] >= done["createdAt"]
    listed = (await api.get(f"/v1/devices/{device_id}/commands")).json()
    assert [c["id"] for c in listed] == [queued["id"]]
    record, ttl = await stored(stack, device_id, queued["id"])
    assert record is not None and record["status"] == "SUCCEEDED" and 0 < ttl <= 7 * 24 * 3600


async def test_an_online_device_gets_a_command_at_once_and_a_persistent_session_keeps_one(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    device_id = new_device_id("cmd-online")
    async with device(stack, device_id, clean=False) as dev:
        queued = await queue(api, device_id, "ping", args={"n": 1})
        assert (await dev.command(5))["id"] == queued["id"]  # no sync needed
        await dev.answer(queued["id"], {"status": "FAILED", "reason": "busy"})
        failed = await until_status(api, device_id, queued["id"], "FAILED")
        assert failed["reason"] == "busy" and failed["result"] is None
    later = await queue(api, device_id, "ping", args={"n": 2})  # while away: the broker keeps it
    async with device(stack, device_id, clean=False) as dev:
        assert (await dev.command(10))["id"] == later["id"]
        await dev.sync()  # the same command again: the device de-duplicates by id
        assert (await dev.command(10))["id"] == later["id"]


async def test_a_repeated_result_is_ignored_the_first_one_wins(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("cmd-dup")
    async with device(stack, device_id) as dev:
        queued = await queue(api, device_id)
        await dev.command()
        await dev.answer(queued["id"], {"status": "SUCCEEDED", "result": {"first": True}})
        await until_status(api, device_id, queued["id"], "SUCCEEDED")
        for payload in ({"status": "FAILED", "reason": "second"}, {"status": "SUCCEEDED", "result": {"first": False}}):
            await dev.answer(queued["id"], payload)
        await dev.sync()
        await dev.nothing()  # nothing pending any more
    record = await read(api, device_id, queued["id"])
    assert record["status"] == "SUCCEEDED" and record["result"] == {"first": True}


async def test_a_command_expires_while_the_device_stays_away(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("cmd-ttl")
    short = await queue(api, device_id, ttlSeconds=1)
    kept = await queue(api, device_id, ttlSeconds=120)
    deadline = asyncio.get_running_loop().time() + 20
    while (record := (await stored(stack, device_id, short["id"]))[0]) is None or record["status"] != "EXPIRED":
        assert asyncio.get_running_loop().time() < deadline, "the sweep never expired it"
        await asyncio.sleep(0.2)  # no API read in this loop: the sweep alone expires it
    assert record["completedAt"] == short["expiresAt"]
    async with device(stack, device_id) as dev:
        await dev.sync()
        assert (await dev.command())["id"] == kept["id"]
        await dev.nothing()  # not the expired one
        await dev.answer(short["id"], {"status": "SUCCEEDED", "result": {"late": True}})
        await dev.answer(kept["id"], {"status": "SUCCEEDED"})
        await until_status(api, device_id, kept["id"], "SUCCEEDED")
    expired = await read(api, device_id, short["id"])
    assert expired["status"] == "EXPIRED" and expired["result"] is None
    only_expired = (await api.get(f"/v1/devices/{device_id}/commands", params={"status": "EXPIRED"})).json()
    assert [c["id"] for c in only_expired] == [short["id"]]


async def test_cancel_a_pending_command(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("cmd-cancel")
    queued = await queue(api, device_id)
    cancelled = await api.post(f"/v1/devices/{device_id}/commands/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    again = await api.post(f"/v1/devices/{device_id}/commands/{queued['id']}/cancel")
    assert again.status_code == 409 and "CANCELLED" in again.json()["message"]
    async with device(stack, device_id) as dev:
        await dev.sync()
        await dev.nothing()
        await dev.answer(queued["id"], {"status": "SUCCEEDED"})  # ran a copy it had: ignored
        await asyncio.sleep(0.5)
    assert (await read(api, device_id, queued["id"]))["status"] == "CANCELLED"


async def test_bad_requests_are_refused_with_a_message_and_store_nothing(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("cmd-bad")
    base = f"/v1/devices/{device_id}/commands"
    for body, code, names in [
        ({"name": "no spaces"}, 400, "name"),
        ({"name": "x" * 65}, 400, "name"),
        ({"name": "ping", "ttlSeconds": 0}, 400, "ttlSeconds"),
        ({"name": "ping", "ttlSeconds": 8 * 24 * 3600}, 400, "7 days"),
        ({"name": "ping", "args": [1]}, 400, "args"),
        ({"name": "ping", "extra": 1}, 400, "extra"),
        ({"name": "ping", "args": {"blob": "x" * 5000}}, 413, "4096"),
    ]:
        response = await api.post(base, json=body)
        assert response.status_code == code and names in response.json()["message"], (body, response.text)
    response = await api.post(base, content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["message"]
    assert (await api.post("/v1/devices/bad%20id/commands", json={"name": "ping"})).status_code == 400
    assert (await api.get(base)).json() == []
    client = redis.Redis(port=stack.redis_port)
    try:
        assert await client.keys(f"*{device_id}*") == []
    finally:
        await client.aclose()
    missing = await api.get(f"{base}/nothing-here")
    assert missing.status_code == 404 and "no command" in missing.json()["message"]
    assert (await api.post(f"{base}/nothing-here/cancel")).status_code == 404
    unknown_status = await api.get(base, params={"status": "DONE"})
    assert unknown_status.status_code == 400 and "SUCCEEDED" in unknown_status.json()["message"]
    queued = await queue(api, device_id, id="job-1")
    assert (await api.post(base, json={"name": "ping", "id": "job-1"})).status_code == 200  # idempotent
    reused = await api.post(base, json={"name": "other", "id": "job-1"})
    assert reused.status_code == 409 and "already used" in reused.json()["message"]
    assert [c["id"] for c in (await api.get(base)).json()] == [queued["id"]]


async def test_a_command_survives_the_commands_app_being_killed(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("cmd-kill")
    queued = await queue(api, device_id, "collect", args={"what": "logs"})
    stack.procs[COMMANDS_APP].kill()
    try:
        async with device(stack, device_id) as dev:
            await dev.sync()  # the app is dead: its daprd keeps redelivering the sync
            await asyncio.sleep(1)
            await asyncio.to_thread(stack.restart, COMMANDS_APP)
            got = await dev.command(30)
            assert got["id"] == queued["id"] and got["args"] == {"what": "logs"}
            await dev.answer(queued["id"], {"status": "SUCCEEDED", "result": {"bytes": 12}})
            done = await until_status(api, device_id, queued["id"], "SUCCEEDED")
    finally:
        if not stack.procs[COMMANDS_APP].alive():
            stack.restart(COMMANDS_APP)
    assert done["result"] == {"bytes": 12}


async def test_a_device_can_neither_read_nor_answer_another_devices_commands(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    victim, intruder = new_device_id("cmd-victim"), new_device_id("cmd-intruder")
    stack.provision_devices([victim])
    async with device(stack, intruder, subscribe_to=DeviceChannels(victim).commands_filter) as spy:
        queued = await queue(api, victim, "unlock")
        await spy.client.publish(
            DeviceChannels(victim).command_result(queued["id"]), json.dumps({"status": "FAILED"}), qos=1
        )
        await spy.client.publish(DeviceChannels(victim).commands_sync, b"{}", qos=1)
        await spy.sync()
        await spy.nothing()
    assert (await read(api, victim, queued["id"]))["status"] == "DELIVERED"
    async with device(stack, victim) as dev:
        await dev.sync()
        assert (await dev.command())["id"] == queued["id"]


async def test_the_cli_sends_reads_and_lists_commands(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("cmd-cli")
    env = {"TWINFLEET_RUN_DIR": str(stack.run_dir)}
    runner = CliRunner()

    def twin(*args: str) -> str:
        outcome = runner.invoke(cli, ["commands", *args], env=env)
        assert outcome.exit_code == 0, outcome.output
        return outcome.output

    sent = json.loads(await asyncio.to_thread(twin, "send", device_id, "ping", "--args", '{"n": 3}', "--ttl", "60"))
    assert sent["name"] == "ping" and sent["args"] == {"n": 3}
    assert sent["expiresAt"] - sent["createdAt"] == pytest.approx(60)
    assert json.loads(await asyncio.to_thread(twin, "get", device_id, sent["id"]))["id"] == sent["id"]
    assert sent["id"] in await asyncio.to_thread(twin, "list", device_id)
    bad = await asyncio.to_thread(runner.invoke, cli, ["commands", "send", device_id, "bad name"], env=env)
    assert bad.exit_code == 1 and "400" in bad.output
