"""Whole flow: a simulated fleet on the real suite converges to desired state set over REST, and
the `twin` CLI drives the same suite."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx

from services.contracts.topics import profile
from services.devtools.fleet.fleet import fleet_ids, run_fleet
from services.devtools.stack import Stack
from tests.support.cli import twin_cli


async def converged(api: httpx.AsyncClient, device_id: str, want: dict[str, object], timeout: float = 20) -> dict:  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        if twin.get("state", {}).get("reported", {}).get("config") == want and "delta" not in twin["state"]:
            return twin  # type: ignore[no-any-return]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{device_id} did not converge: {twin}")
        await asyncio.sleep(0.2)


async def test_simulated_fleet_applies_desired_state(stack: Stack, api: httpx.AsyncClient) -> None:
    ids = fleet_ids(20, prefix="flow")
    passwords = stack.provision_devices(ids)
    fleet = asyncio.create_task(
        run_fleet(ids, passwords, "127.0.0.1", stack.mqtt_port, profile(stack.topic_profile), report_interval=0)
    )
    try:
        for device_id in ids:  # every device reported at boot
            for _ in range(200):
                if (await api.get(f"/v1/twins/{device_id}")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
        want = {"sampleRate": 5, "fan": "on"}
        await asyncio.gather(*(api.patch(f"/v1/twins/{d}/desired", json={"config": want}) for d in ids))
        twins = await asyncio.gather(*(converged(api, d, want) for d in ids))
        assert all(t["state"]["reported"]["firmware"] == {"version": "1.0.0"} for t in twins)
    finally:
        fleet.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fleet


async def test_cli(stack: Stack) -> None:
    created = await asyncio.to_thread(twin_cli, stack, "devices", "create", "cli-dev")
    assert created.returncode == 0, created.stderr
    creds = json.loads(created.stdout)
    assert creds["username"] == "cli-dev" and creds["publish"] == "cli-dev/state/update"
    # the printed credentials work against the broker
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", creds["port"], username="cli-dev", password=creds["password"]) as client:
        await client.publish("cli-dev/state/update", json.dumps({"state": {"reported": {"fan": "off"}}}), qos=1)
    await asyncio.sleep(0.5)
    desired = await asyncio.to_thread(twin_cli, stack, "desire", "cli-dev", "fan=on", "config.rate=5")
    assert desired.returncode == 0 and '"fan": "on"' in desired.stdout, desired.stdout + desired.stderr
    shown = await asyncio.to_thread(twin_cli, stack, "get", "cli-dev")
    twin = json.loads(shown.stdout)
    assert twin["state"]["delta"] == {"fan": "on", "config": {"rate": 5}}
    assert twin["state"]["reported"] == {"fan": "off"}
    listed = await asyncio.to_thread(twin_cli, stack, "list")
    assert "cli-dev" in listed.stdout
    conflict = await asyncio.to_thread(twin_cli, stack, "desire", "cli-dev", "x=1", "--if-version", "1")
    assert conflict.returncode == 1 and "409" in conflict.stdout
