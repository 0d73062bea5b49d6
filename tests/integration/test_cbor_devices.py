"""CBOR devices over real Mosquitto + daprd + Redis: the same contract as JSON devices, answered
in CBOR, side by side with JSON devices."""

from __future__ import annotations

import asyncio
from typing import Any

import cbor2
import httpx
import pytest

from services.contracts.topics import Operation
from services.contracts.wire import WireEncoding, encode_payload
from services.devtools.fleet.link import DeviceLink, Rejected
from services.devtools.stack import Stack
from services.domain.json_values import json_equal
from services.domain.twin.template import encode, template_for
from tests.support.devices import link, new_device_id

STACK_ENV = {"TWINFLEET_MAX_STATE_BYTES": "1024"}
JSON, CBOR = WireEncoding.JSON, WireEncoding.CBOR

REPORTED: dict[str, Any] = {
    "firmware": {"version": "4.2.1", "channel": "stable"},
    "config": {"sampleRate": 5, "compression": True, "logLevel": "info", "ntp": ["0.pool", "1.pool"]},
    "sensors": {"temp": 21.7, "humidity": 44.25, "voltage": 12.0, "uptime": 1843211, "offset": -3},
    "network": {"type": "lte", "rssi": -71, "operator": "Telekom.de", "wifi": False},
    "label": "Kühlraum ✓",
}


def cbor_link(stack: Stack, device_id: str | None = None) -> DeviceLink:
    return link(stack, device_id or new_device_id("cbor"), encoding=CBOR)


async def test_cbor_device_updates_gets_and_deletes_in_cbor(stack: Stack) -> None:
    async with cbor_link(stack) as dev:
        accepted = await dev.report({"temp": 21.5, "fw": {"version": "1.0.0"}})
        assert dev.received_as("/update/accepted") is CBOR
        assert accepted["version"] == 1 and accepted["state"] == {
            "reported": {"temp": 21.5, "fw": {"version": "1.0.0"}}
        }
        assert isinstance(accepted["metadata"]["reported"]["fw"]["version"]["timestamp"], int)
        documents = await asyncio.wait_for(dev.documents.get(), 10)
        assert dev.received_as("/update/documents") is CBOR
        assert documents["previous"] is None and documents["current"]["state"]["reported"]["temp"] == 21.5

        doc = await dev.get()
        assert dev.received_as("/get/accepted") is CBOR
        assert doc["state"]["reported"] == {"temp": 21.5, "fw": {"version": "1.0.0"}} and doc["version"] == 1

        deleted = await dev.request(Operation.DELETE)
        assert dev.received_as("/delete/accepted") is CBOR and deleted["version"] == 2
        with pytest.raises(Rejected) as info:
            await dev.get()
        assert info.value.code == 404 and dev.received_as("/get/rejected") is CBOR
        assert (await dev.report({"b": 1}))["version"] == 3


async def test_cbor_device_gets_its_delta_in_cbor_after_a_rest_desired_change(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    device_id = new_device_id("cbor")
    async with cbor_link(stack, device_id) as dev:
        await dev.report({"fan": "off", "temp": 20})
        response = await api.patch(f"/v1/twins/{device_id}/desired", json={"fan": "on", "temp": 20, "rate": 0.5})
        assert response.status_code == 200, response.text
        assert response.json()["wire"] == "cbor"  # REST speaks JSON and shows how the device speaks
        delta = await dev.next_delta()
        assert dev.received_as("/update/delta") is CBOR
        assert delta["state"] == {"fan": "on", "rate": 0.5} and delta["version"] == 2
        # A get re-sends the full delta, in CBOR too.
        await dev.get()
        again = await dev.next_delta()
        assert again["state"] == {"fan": "on", "rate": 0.5} and dev.received_as("/update/delta") is CBOR


@pytest.mark.parametrize(
    ("payload", "answered_in", "fragment"),
    [
        (bytes.fromhex("a2616101"), CBOR, "not valid CBOR"),  # truncated map: CBOR by its first byte
        (cbor2.dumps({"state": {"reported": {"a": 1}}}) + b"\x00", CBOR, "after the map"),
        (cbor2.dumps({"state": {"reported": {"blob": b"\x00"}}}), CBOR, "$.state.reported.blob"),
        (cbor2.dumps({"state": {"reported": {"t": float("nan")}}}), CBOR, "$.state.reported.t"),
        (b"\x00\x9f\xff", JSON, "not valid JSON"),  # neither: answered in JSON
        (cbor2.dumps({"state": {"reported": {"s": "\x01" * 300}}}), CBOR, "at most 1024 bytes"),  # 413
    ],
)
async def test_malformed_cbor_is_rejected_in_the_encoding_its_first_byte_shows_and_changes_nothing(
    stack: Stack, payload: bytes, answered_in: WireEncoding, fragment: str
) -> None:
    async with cbor_link(stack) as dev:
        await dev.report({"keep": True})
        await dev.publish(Operation.UPDATE, payload)
        topic, rejected = await asyncio.wait_for(dev.untokened.get(), 10)
        assert topic.endswith("/state/update/rejected") and dev.received_as("/update/rejected") is answered_in
        assert rejected["code"] in (400, 413) and fragment in rejected["message"], rejected
        doc = await dev.get()
        assert doc["state"]["reported"] == {"keep": True} and doc["version"] == 1


async def test_rejection_of_an_incompatible_document_echoes_the_client_token(stack: Stack) -> None:
    async with cbor_link(stack) as dev:
        with pytest.raises(Rejected) as info:
            await dev.report({"blob": b"\x01\x02"})  # the link sends a clientToken; the reply must find it
        assert info.value.code == 400 and "$.state.reported.blob" in info.value.payload["message"]
        assert dev.received_as("/update/rejected") is CBOR


async def test_json_and_cbor_devices_side_by_side(stack: Stack, api: httpx.AsyncClient) -> None:
    json_id, cbor_id = new_device_id("json"), new_device_id("cbor")
    async with link(stack, json_id) as jdev, cbor_link(stack, cbor_id) as cdev:
        jacc, cacc = await asyncio.gather(jdev.report(REPORTED), cdev.report(REPORTED))
        assert jdev.received_as("/update/accepted") is JSON and cdev.received_as("/update/accepted") is CBOR
        assert json_equal(jacc["state"], cacc["state"]) and json_equal(jacc["metadata"], cacc["metadata"])
        for device_id, wire in ((json_id, "json"), (cbor_id, "cbor")):
            twin = (await api.get(f"/v1/twins/{device_id}")).json()
            assert json_equal(twin["state"]["reported"], REPORTED), device_id
            assert twin["wire"] == wire
        # The same desired change reaches each in its own encoding.
        for device_id in (json_id, cbor_id):
            response = await api.patch(f"/v1/twins/{device_id}/desired", json={"config": {"sampleRate": 10}})
            assert response.status_code == 200, response.text
        jdelta, cdelta = await asyncio.gather(jdev.next_delta(), cdev.next_delta())
        assert jdelta["state"] == cdelta["state"] == {"config": {"sampleRate": 10}}
        assert jdev.received_as("/update/delta") is JSON and cdev.received_as("/update/delta") is CBOR
        jdoc, cdoc = await asyncio.gather(jdev.get(), cdev.get())
        assert json_equal(jdoc["state"], cdoc["state"]) and jdoc["version"] == cdoc["version"] == 2


async def test_device_switching_encodings_is_followed_without_a_new_version(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    device_id = new_device_id("switch")
    async with link(stack, device_id) as dev:
        await dev.report({"mode": "a"})
        assert dev.received_as("/update/accepted") is JSON
        dev.encoding = CBOR
        doc = await dev.get()
        assert dev.received_as("/get/accepted") is CBOR and doc["version"] == 1
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        assert twin["wire"] == "cbor" and twin["version"] == 1  # remembered, no version bump
        response = await api.patch(f"/v1/twins/{device_id}/desired", json={"mode": "b"})
        assert response.status_code == 200, response.text
        assert (await dev.next_delta())["state"] == {"mode": "b"}
        assert dev.received_as("/update/delta") is CBOR
        # An empty get carries no encoding: it is answered in the remembered one (CBOR).
        await dev.publish(Operation.GET, b"")
        topic, view = await asyncio.wait_for(dev.untokened.get(), 10)
        assert topic.endswith("/get/accepted") and view["version"] == 2
        assert dev.received_as("/get/accepted") is CBOR
        # Back to JSON with the next update.
        dev.encoding = JSON
        await dev.report({"mode": "b"})
        assert dev.received_as("/update/accepted") is JSON
        assert (await api.get(f"/v1/twins/{device_id}")).json()["wire"] == "json"


async def test_a_device_registers_a_template_then_sends_values_without_keys(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    device_id = new_device_id("tmpl")
    report = {"state": {"reported": REPORTED}, "clientToken": "5f0c9d2e-7a41-4b8e-9c3d-2e6f1a8b4c07"}
    template = template_for(report, "sensor", 1)
    async with cbor_link(stack, device_id) as dev:
        registered = await dev.request(Operation.TEMPLATE, template.model_dump(mode="json"))
        assert registered["name"] == "sensor" and registered["version"] == 1
        payload = encode(report, template)
        assert len(payload) < 0.5 * len(encode_payload(report, JSON))
        accepted = await dev.request_encoded(Operation.UPDATE, payload, report["clientToken"])
        assert dev.received_as("/update/accepted") is CBOR and json_equal(accepted["state"]["reported"], REPORTED)
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        assert json_equal(twin["state"]["reported"], REPORTED) and twin["wire"] == "cbor"
        # The same values again are a redelivery (same clientToken): answered, not applied.
        again = await dev.request_encoded(Operation.UPDATE, payload, report["clientToken"])
        assert again["version"] == accepted["version"]
        # Values for a template version the twin does not have are refused (400), nothing changes;
        # the refusal cannot echo the clientToken (it is among the values the template would name).
        stale = encode({**report, "clientToken": "t2"}, template.model_copy(update={"version": 2}))
        await dev.publish(Operation.UPDATE, stale)
        topic, refusal = await asyncio.wait_for(dev.untokened.get(), 15)
        assert topic.endswith("/update/rejected") and refusal["code"] == 400 and "not 2" in refusal["message"]
        assert (await api.get(f"/v1/twins/{device_id}")).json()["version"] == accepted["version"]
