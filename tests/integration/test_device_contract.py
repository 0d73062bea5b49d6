"""The device contract over real Mosquitto + daprd + Redis (default topic profile)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import aiomqtt
import httpx
import pytest

from services.contracts.topics import Operation
from services.devtools.fleet.link import Rejected
from services.devtools.stack import Stack
from tests.support.devices import link, new_device_id
from tests.support.waiting import eventually

STACK_ENV = {"TWINFLEET_MAX_STATE_BYTES": "1024", "TWINFLEET_RATE_PER_SECOND": "5", "TWINFLEET_RATE_BURST": "10"}


async def test_report_then_get(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        accepted = await dev.report({"temp": 21.5, "fw": {"version": "1.0.0"}})
        assert accepted["version"] == 1
        assert accepted["state"] == {"reported": {"temp": 21.5, "fw": {"version": "1.0.0"}}}
        assert set(accepted["metadata"]["reported"]) == {"temp", "fw"}
        assert isinstance(accepted["metadata"]["reported"]["fw"]["version"]["timestamp"], int)
        doc = await dev.get()
        assert doc["state"]["reported"] == {"temp": 21.5, "fw": {"version": "1.0.0"}}
        assert doc["version"] == 1


async def test_documents_carry_previous_and_current(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        await dev.report({"a": 1})
        first = await asyncio.wait_for(dev.documents.get(), 10)
        assert first["previous"] is None and first["current"]["state"]["reported"] == {"a": 1}
        await dev.report({"a": 2})
        second = await asyncio.wait_for(dev.documents.get(), 10)
        assert second["previous"]["state"]["reported"] == {"a": 1}
        assert second["current"]["state"]["reported"] == {"a": 2}
        assert second["current"]["version"] == 2


async def test_desired_from_rest_reaches_device_as_delta(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id()
    async with link(stack, device_id) as dev:
        await dev.report({"fan": "off", "temp": 20})
        response = await api.patch(f"/v1/twins/{device_id}/desired", json={"fan": "on", "temp": 20})
        assert response.status_code == 200, response.text
        delta = await dev.next_delta()
        assert delta["state"] == {"fan": "on"}  # temp agrees, so it is not in the delta
        assert delta["version"] == 2 and "fan" in delta["metadata"]
        await dev.report({"fan": "on"})
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        assert "delta" not in twin["state"]
        assert twin["state"]["reported"] == {"fan": "on", "temp": 20}


async def test_get_resends_full_delta(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        await dev.request(Operation.UPDATE, {"state": {"desired": {"a": 1, "b": {"c": 2}}, "reported": {"a": 1}}})
        assert (await dev.next_delta())["state"] == {"b": {"c": 2}}
        doc = await dev.get()
        assert doc["state"]["delta"] == {"b": {"c": 2}}
        again = await dev.next_delta()
        assert again["state"] == {"b": {"c": 2}} and again["version"] == doc["version"]


async def test_null_deletes_keys_and_sections_and_state_null_clears(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        await dev.request(
            Operation.UPDATE, {"state": {"desired": {"x": 1}, "reported": {"a": 1, "b": {"c": 1, "d": 2}, "l": [1, 2]}}}
        )
        await dev.report({"a": None, "b": {"c": None}})
        doc = await dev.get()
        assert doc["state"]["reported"] == {"b": {"d": 2}, "l": [1, 2]}
        # an empty object is a value (as in AWS IoT): kept when set, and left when its last child goes
        await dev.report({"b": {"d": None}, "e": {}})
        assert (await dev.get())["state"]["reported"] == {"b": {}, "e": {}, "l": [1, 2]}
        accepted = await dev.request(Operation.UPDATE, {"state": {"desired": None}})
        assert accepted["state"] == {"desired": None}
        assert "desired" not in (await dev.get())["state"]
        accepted = await dev.request(Operation.UPDATE, {"state": None})
        doc = await dev.get()
        assert doc["state"] == {} and doc["version"] == accepted["version"] == 5


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"state": {"reported": {"a": [1, None]}}}).encode(), 400, "may not contain null"),
        (json.dumps({"state": {"reported": {"a": 1}}, "clientToken": "t" * 65}).encode(), 400, "64 bytes"),
        (json.dumps({"state": {"reported": {"a": "x" * 2000}}}).encode(), 413, "at most 1024 bytes"),
        (json.dumps({"state": {"reported": {"a": 1}}, "version": 99}).encode(), 409, "version conflict"),
        (b"", 400, "missing required field"),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(
    stack: Stack, payload: bytes, code: int, fragment: str
) -> None:
    async with link(stack, new_device_id()) as dev:
        await dev.report({"keep": True})
        await dev.publish(Operation.UPDATE, payload)
        topic, rejected = await asyncio.wait_for(dev.untokened.get(), 10)
        assert topic.endswith("/state/update/rejected")
        assert rejected["code"] == code and fragment in rejected["message"]
        doc = await dev.get()
        assert doc["state"]["reported"] == {"keep": True} and doc["version"] == 1


def _deep(levels: int) -> dict[str, object]:
    node: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        node = {"n": node}
    return node


async def test_depth_limit_and_token_echo_on_rejection(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        with pytest.raises(Rejected) as info:
            await dev.report(_deep(9), clientToken="deep-1")
        assert info.value.code == 400 and info.value.payload["clientToken"] == "deep-1"
        assert "nesting deeper than 8" in info.value.payload["message"]
        await dev.report(_deep(8))


async def test_version_lock(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        await dev.report({"a": 1})
        with pytest.raises(Rejected) as info:
            await dev.report({"a": 2}, version=5)
        assert info.value.code == 409
        assert (await dev.report({"a": 3}, version=1))["version"] == 2
        assert (await dev.get())["state"]["reported"] == {"a": 3}


async def test_rate_limit_429_changes_nothing(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        results = await asyncio.gather(*(dev.report({"n": i}) for i in range(30)), return_exceptions=True)
        accepted = [r for r in results if isinstance(r, dict)]
        limited = [r for r in results if isinstance(r, Rejected)]
        assert limited and all(r.code == 429 for r in limited)
        assert "requests/s" in limited[0].payload["message"]
        await asyncio.sleep(1.5)
        doc = await dev.get()
        assert doc["version"] == len(accepted)


async def test_redelivered_request_is_applied_once(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        body = {"state": {"reported": {"counter": 1}}, "clientToken": "once-1"}
        first = await dev.request(Operation.UPDATE, dict(body))
        second = await dev.request(Operation.UPDATE, dict(body))
        assert first["version"] == second["version"] == 1
        assert (await dev.get())["version"] == 1


async def test_delete_then_recreate_keeps_versions_growing(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        await dev.report({"a": 1})
        deleted = await dev.request(Operation.DELETE)
        assert deleted["version"] == 2
        with pytest.raises(Rejected) as info:
            await dev.get()
        assert info.value.code == 404
        with pytest.raises(Rejected):
            await dev.request(Operation.DELETE)
        assert (await dev.report({"b": 1}))["version"] == 3


async def test_device_cannot_touch_another_devices_twin(stack: Stack) -> None:
    victim, intruder = new_device_id("victim"), new_device_id("intruder")
    async with link(stack, victim) as v, link(stack, intruder) as i:
        await v.report({"owner": "victim"})
        # The broker's ACL drops the intruder's publish on the victim's topic.
        await i._client.publish(f"{victim}/state/update", json.dumps({"state": {"reported": {"owner": "x"}}}), qos=1)
        await asyncio.sleep(1)
        assert (await v.get())["state"]["reported"] == {"owner": "victim"}


async def test_wrong_password_is_refused(stack: Stack) -> None:
    import aiomqtt

    device_id = new_device_id()
    stack.provision_devices([device_id])
    client = aiomqtt.Client("127.0.0.1", stack.mqtt_port, username=device_id, password="wrong")
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass


async def test_a_link_that_drops_reports_disconnected_by_its_last_will(stack: Stack, api: httpx.AsyncClient) -> None:
    """The fleet simulator's presence (what the console counts as connection state): a device
    reports `connection: connected`; its last will reports `disconnected` when the link drops."""
    device_id = new_device_id("presence")
    with contextlib.suppress(aiomqtt.MqttError):  # the link's reader ends with the dropped link
        async with link(stack, device_id, presence=True) as dev:
            await dev.report({"connection": "connected"})
            dev._client._client.socket().shutdown(socket.SHUT_RDWR)  # the link drops without a DISCONNECT

    async def disconnected() -> bool:
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        return bool(twin["state"]["reported"].get("connection") == "disconnected")

    await eventually(disconnected, timeout=30, what="the last will")
