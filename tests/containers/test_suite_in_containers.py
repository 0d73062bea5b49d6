"""The suite as its users run it: every part from the images, in containers (twinfleet.testing).
The device contract and a staged rollout are the integration tests' own, run again here; then a
software update to a device agent container, the twin-store container killed mid-stream, and
what the images and the cleanup promise."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import docker
import httpx
import pytest

from services.devtools.stack import daprd_binary, device_daprd_binary
from services.platform.names import TWIN_STORE_APP
from tests.integration.test_device_contract import (
    test_delete_then_recreate_keeps_versions_growing,
    test_desired_from_rest_reaches_device_as_delta,
    test_device_cannot_touch_another_devices_twin,
    test_documents_carry_previous_and_current,
    test_get_resends_full_delta,
    test_null_deletes_keys_and_sections_and_state_null_clears,
    test_redelivered_request_is_applied_once,
    test_report_then_get,
    test_version_lock,
)
from tests.integration.test_rollout import rollouts, test_a_staged_rollout_halts_on_failures_before_the_next_stage
from tests.support.devices import new_device_id
from tests.support.releases import HEALTHY, desire, finished, image, publish, software
from tests.support.streams import interrupted_stream
from tests.support.waiting import eventually
from twinfleet.testing import TwinfleetSuite
from twinfleet.testing.suite import OWNER_LABEL, SUITE_LABEL, Images, sweep_abandoned

pytestmark = pytest.mark.containers
SMOKE = (
    test_report_then_get,
    test_documents_carry_previous_and_current,
    test_desired_from_rest_reaches_device_as_delta,
    test_get_resends_full_delta,
    test_null_deletes_keys_and_sections_and_state_null_clears,
    test_version_lock,
    test_redelivered_request_is_applied_once,
    test_delete_then_recreate_keeps_versions_growing,
    test_device_cannot_touch_another_devices_twin,
    test_a_staged_rollout_halts_on_failures_before_the_next_stage,
    rollouts,
)
"""Collected here too: the same tests, against the containers."""


async def test_a_software_update_reaches_a_device_agent_container(
    stack: TwinfleetSuite, api: httpx.AsyncClient, firmware: httpx.AsyncClient
) -> None:
    device_id = new_device_id("sw")
    target = "app/firmware.bin"
    agent = await asyncio.to_thread(
        stack.start_agent,
        device_id,
        {
            "TWINFLEET_SOFTWARE_INSTALLER": "file",
            "TWINFLEET_SOFTWARE_TARGET": f"/var/lib/twinfleet/agent/{target}",
            "TWINFLEET_SOFTWARE_HEALTH_COMMAND": f"grep -q ^{HEALTHY.decode()} /var/lib/twinfleet/agent/{target}",
            "TWINFLEET_SOFTWARE_VERSION": "1.0.0",
            "TWINFLEET_AGENT_PROBE_INTERVAL": "0.5",
        },
        {target: HEALTHY + b" factory image 1.0.0\n"},
    )
    await eventually(lambda: software(api, device_id), what="the factory version reported")
    assert (await software(api, device_id))["version"] == "1.0.0"
    data = image("2.0.0")
    artifact = await publish(stack, firmware, "gateway", "2.0.0", data)  # signed into the suite's TUF chain
    await desire(api, device_id, artifact, "2.0.0")
    outcome = await finished(api, device_id, artifact, timeout=90)
    assert outcome["status"] == "UPDATED" and outcome["version"] == "2.0.0", outcome
    assert agent.read(target) == data  # the agent container's file is the release, byte for byte
    async with httpx.AsyncClient(base_url=agent.url) as client:
        status = (await client.get("/v1/status")).json()
    assert status["connected"] is True


async def test_writes_through_the_ingress_are_audited_across_apps(
    stack: TwinfleetSuite, api: httpx.AsyncClient
) -> None:
    """Each app publishes its audit records on the internal pub/sub; the twin-store keeps them."""
    device_id = new_device_id("audit")
    assert (await api.put(f"/v1/twins/{device_id}")).status_code == 201  # twin-store
    queued = await api.post(f"/v1/devices/{device_id}/commands", json={"name": "reboot"})  # commands
    assert queued.status_code == 201, queued.text
    refused = await api.delete(f"/v1/twins/{device_id}", headers={"Authorization": "Bearer not-a-token"})
    assert refused.status_code == 401

    async def trail() -> list[tuple[str, str, int]] | None:
        page = await api.get("/v1/audit", params={"limit": 200})
        found = [(r["app"], r["method"], r["status"]) for r in page.json()["items"] if r["target"] == device_id]
        return sorted(found) if len(found) >= 3 else None

    records = await eventually(trail, timeout=30, what="the audit records")
    assert records == [("commands", "POST", 201), ("twin-store", "DELETE", 401), ("twin-store", "PUT", 201)]


async def test_the_twin_store_container_killed_mid_stream_loses_nothing(stack: TwinfleetSuite) -> None:
    async def restart() -> None:
        await asyncio.to_thread(stack.restart, TWIN_STORE_APP, kill=True)

    await interrupted_stream(stack, restart, devices=20, updates=10)


def test_every_part_runs_read_only_as_a_non_root_user_and_turns_healthy(stack: TwinfleetSuite) -> None:
    client = docker.from_env()
    containers = client.containers.list(filters={"label": f"{SUITE_LABEL}={stack.suite_id}"})
    assert len(containers) >= 15  # Redis, Mosquitto, the ingress, six apps and their sidecars
    for container in containers:
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True, container.name
        assert container.attrs["Config"]["User"] not in ("", "0", "root", "0:0"), container.name
    deadline = time.monotonic() + 90
    unhealthy = containers
    while unhealthy and time.monotonic() < deadline:
        time.sleep(2)
        for container in unhealthy:
            container.reload()
        unhealthy = [c for c in unhealthy if c.attrs["State"].get("Health", {}).get("Status") != "healthy"]
    assert not unhealthy, [(c.name, c.attrs["State"].get("Health")) for c in unhealthy]


def test_images_carry_their_version_and_a_health_check(images: dict[str, str]) -> None:
    client = docker.from_env()
    for kind in ("app", "daprd", "daprd-device", "redis", "mosquitto"):
        config = client.images.get(images[kind]).attrs["Config"]
        assert config["Labels"]["org.opencontainers.image.version"], kind
        assert config["Labels"]["org.twinfleet.image.inputs"], kind
        assert config["Healthcheck"]["Test"], kind
    assert client.images.get(images["app"]).attrs["Config"]["Labels"]["org.opencontainers.image.revision"]


def test_the_same_inputs_give_the_same_images() -> None:
    command = [sys.executable, "-m", "services.devtools", "images", "verify", "--daprd", daprd_binary()]
    result = subprocess.run([*command, "--device-daprd", device_daprd_binary()], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("==") == 6, result.stdout


def _suite_containers(client: docker.DockerClient, label: str) -> list[object]:
    return list(client.containers.list(all=True, filters={"label": label}))


def test_a_suite_that_fails_to_start_leaves_nothing(images: dict[str, str]) -> None:
    """The sidecars' image runs no daprd: the first sidecar exits once Redis, Mosquitto, the network
    and an app container are up (a short ready timeout alone may not fail: the apps may all be
    ready by the time the suite first looks)."""
    suite = TwinfleetSuite(images=Images(app=images["app"], daprd=images["app"]))
    with pytest.raises(RuntimeError, match="stopped"):
        suite.start()
    client = docker.from_env()
    assert not _suite_containers(client, f"{SUITE_LABEL}={suite.suite_id}")
    assert not client.networks.list(filters={"label": f"{SUITE_LABEL}={suite.suite_id}"})


def test_what_a_killed_test_process_left_is_swept() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "from twinfleet.testing import TwinfleetSuite; TwinfleetSuite().start()"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = docker.from_env()
    owner = f"{OWNER_LABEL}={os.uname().nodename}:{child.pid}"
    deadline = time.monotonic() + 60
    while len(_suite_containers(client, owner)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)  # mid-start: no cleanup of its own runs
    child.wait()
    assert _suite_containers(client, owner), "the child started nothing"
    assert sweep_abandoned(client) >= 3
    assert not _suite_containers(client, owner)
    assert not client.networks.list(filters={"label": owner})
