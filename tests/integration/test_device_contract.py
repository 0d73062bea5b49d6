"""The device contract over real Mosquitto + daprd + Redis (default topic profile)."""

from __future__ import annotations

import httpx

from services.devstack.stack import Stack
from tests.support.devices import link, new_device_id


async def test_report_then_get(stack: Stack) -> None:
    async with link(stack, new_device_id()) as dev:
        accepted = await dev.report({"temp": 21.5, "fw": {"version": "1.0.0"}})
        assert accepted["version"] == 1
        assert accepted["state"] == {"reported": {"temp": 21.5, "fw": {"version": "1.0.0"}}}
        assert set(accepted["metadata"]["reported"]) == {"temp", "fw"}
        doc = await dev.get()
        assert doc["state"]["reported"] == {"temp": 21.5, "fw": {"version": "1.0.0"}}
        assert doc["version"] == 1


async def test_desired_from_rest_reaches_device_as_delta(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id()
    async with link(stack, device_id) as dev:
        await dev.report({"fan": "off", "temp": 20})
        response = await api.patch(f"/v1/twins/{device_id}/desired", json={"fan": "on"})
        assert response.status_code == 200, response.text
        delta = await dev.next_delta()
        assert delta["state"] == {"fan": "on"}
        assert delta["version"] == 2
        await dev.report({"fan": "on"})
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        assert "delta" not in twin["state"]
        assert twin["state"]["reported"] == {"fan": "on", "temp": 20}
