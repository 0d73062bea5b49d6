"""How an application's integration test uses Twinfleet: the whole suite in containers from the
`twinfleet_suite` fixture (`pip install twinfleet[testing]`; the images from `make images`).

A thermostat reports over MQTT; the application (a component) sets a new setpoint over REST; the
thermostat receives the difference as a delta, applies it and reports it back."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiomqtt
import httpx
import pytest

from twinfleet.testing import TwinfleetSuite

pytestmark = pytest.mark.containers


async def next_message(mqtt: aiomqtt.Client, topic: str) -> Any:
    async for message in mqtt.messages:
        if str(message.topic) == topic:
            return json.loads(bytes(message.payload))
    raise AssertionError(f"the connection closed before anything arrived on {topic}")


async def test_a_new_setpoint_reaches_the_thermostat(twinfleet_suite: TwinfleetSuite) -> None:
    thermostat = twinfleet_suite.provision_device(f"thermostat-{uuid.uuid4().hex[:8]}")
    topic = f"{thermostat.device_id}/state/update"
    async with (
        aiomqtt.Client(
            thermostat.host,
            thermostat.port,
            username=thermostat.device_id,
            password=thermostat.password,
            identifier=thermostat.device_id,
        ) as mqtt,
        httpx.AsyncClient(base_url=twinfleet_suite.api_url, headers=twinfleet_suite.headers, timeout=10) as api,
    ):
        await mqtt.subscribe(f"{topic}/#", qos=1)
        report = {"state": {"reported": {"setpoint": 19.0, "mode": "heat"}}, "clientToken": "boot"}
        await mqtt.publish(topic, json.dumps(report), qos=1)
        accepted = await next_message(mqtt, f"{topic}/accepted")
        assert accepted["clientToken"] == "boot" and accepted["version"] == 1

        response = await api.patch(f"/v1/twins/{thermostat.device_id}/desired", json={"setpoint": 21.5, "mode": "heat"})
        assert response.status_code == 200, response.text

        delta = await next_message(mqtt, f"{topic}/delta")
        assert delta["state"] == {"setpoint": 21.5}  # the mode already agrees

        await mqtt.publish(topic, json.dumps({"state": {"reported": delta["state"]}, "clientToken": "applied"}), qos=1)
        accepted = await next_message(mqtt, f"{topic}/accepted")
        assert accepted["clientToken"] == "applied"
        assert accepted["state"] == {"reported": {"setpoint": 21.5}}

        twin = (await api.get(f"/v1/twins/{thermostat.device_id}")).json()
        assert twin["state"]["reported"] == {"setpoint": 21.5, "mode": "heat"}
        assert "delta" not in twin["state"]
