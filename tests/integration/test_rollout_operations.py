"""Rollouts as fleet operators run them, on the real suite (daprd, Redis, Mosquitto, twin-store, delta,
events, rollout) with simulated devices: maintenance windows (the rollout app killed inside one),
failed downloads retried by policy (the app killed while a retry is scheduled) and on an operator's
request, a health-gated stage held on its updated devices' error events, a failing cohort
quarantined while the rest completes, and a dry run that says what an activation does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.clients.rollout import RolloutClient
from services.contracts.rollout import ConfigurationView
from services.contracts.topics import profile
from services.devtools.fleet.fleet import SimulatedDevice, initial_state
from services.devtools.fleet.link import DeviceLink
from services.devtools.fleet.software import SimulatedSoftware
from services.devtools.stack import Stack
from services.domain.rollout.membership import rank
from services.platform.names import ROLLOUT_APP
from tests.support.cli import twin_cli
from tests.support.waiting import eventually

UPDATE = {"software": {"artifact": "fw-2.0.0", "version": "2.0.0"}}


@pytest.fixture(scope="module")
async def rollouts(stack: Stack) -> AsyncIterator[RolloutClient]:
    async with RolloutClient(stack.app_url(ROLLOUT_APP), timeout=30, headers=stack.headers) as client:
        yield client


@contextlib.asynccontextmanager
async def fleet(
    stack: Stack,
    ids: list[str],
    tags: Callable[[str], dict[str, Any]],
    software: Callable[[str], SimulatedSoftware | None],
) -> AsyncIterator[dict[str, SimulatedDevice]]:
    """Simulated devices (own MQTT connection each), tagged once their twins exist."""
    passwords = stack.provision_devices(ids)
    async with (
        contextlib.AsyncExitStack() as exits,
        httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=20) as api,
    ):
        devices: dict[str, SimulatedDevice] = {}
        runs = []
        for device_id in ids:
            link = DeviceLink(device_id, passwords[device_id], "127.0.0.1", stack.mqtt_port, profile("default"))
            await exits.enter_async_context(link)
            device = SimulatedDevice(link, 0, initial_state(device_id), software=software(device_id))
            devices[device_id] = device
            runs.append(asyncio.create_task(device.run()))
        try:
            await eventually(lambda: _all_exist(api, ids), what="devices reported")
            await asyncio.gather(*(api.patch(f"/v1/twins/{d}/tags", json=tags(d)) for d in ids))
            yield devices
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)


async def _all_exist(api: httpx.AsyncClient, ids: list[str]) -> bool:
    answers = await asyncio.gather(*(api.get(f"/v1/twins/{d}") for d in ids))
    return all(a.status_code == 200 for a in answers)


async def twins(api: httpx.AsyncClient, ids: list[str]) -> dict[str, dict[str, Any]]:
    answers = await asyncio.gather(*(api.get(f"/v1/twins/{d}") for d in ids))
    return {d: a.json() for d, a in zip(ids, answers, strict=True)}


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60, what: str = "condition") -> Any:
    return await eventually(check, timeout=timeout, what=what)


def clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


async def start(rollouts: RolloutClient, spec: dict[str, Any]) -> None:
    await rollouts.create(spec)
    await rollouts.act(spec["id"], "activate")


async def reaches(rollouts: RolloutClient, cid: str, state: str, what: str, timeout: float = 60) -> ConfigurationView:
    """The configuration once it is in `state`."""

    async def there() -> ConfigurationView | None:
        view = await rollouts.get(cid)
        return view if view.state.value == state else None

    found: ConfigurationView = await until(there, timeout=timeout, what=what)
    return found


async def history(rollouts: RolloutClient, cid: str) -> list[str]:
    return [h.message for h in (await rollouts.history(cid)).items]


async def test_a_windowed_rollout_admits_only_inside_its_windows_even_when_killed_in_one(
    stack: Stack, api: httpx.AsyncClient, rollouts: RolloutClient
) -> None:
    ids = [f"win-{i:02d}" for i in range(10)]
    for device_id in ids:  # twins without devices: every version is a rollout write
        assert (await api.put(f"/v1/twins/{device_id}")).status_code == 201
        await api.patch(f"/v1/twins/{device_id}/tags", json={"ring": "windowed"})
    before = {d: t["version"] for d, t in (await twins(api, ids)).items()}
    t0 = int(time.time()) + 4
    windows = [(t0, t0 + 8), (t0 + 22, t0 + 34)]  # daily, to the second, in UTC
    spec = {
        "id": "windowed",
        "targetCondition": 'tags.ring == "windowed"',
        "content": {"config": {"sampleRate": 2}},
        "rollout": {
            "maxPerMinute": 60,
            "successCondition": "true",
            "schedule": {
                "windows": [{"start": clock(a), "end": clock(b)} for a, b in windows],
                "installSeconds": 1,
            },
        },
    }
    await start(rollouts, spec)

    async def admitted() -> int:
        return sum(1 for t in (await twins(api, ids)).values() if "windowed" in t["configurations"])

    await until(lambda: _at_least(admitted(), 3), timeout=30, what="admissions in the first window")
    assert time.time() < windows[0][1], "the first window closed before the kill: the machine is too slow"
    stack.procs[ROLLOUT_APP].kill()
    stack.restart(ROLLOUT_APP)

    await reaches(rollouts, "windowed", "completed", "completion in the second window", timeout=90)
    after = await twins(api, ids)
    for device_id, twin in after.items():
        at = twin["configurations"]["windowed"]["at"]
        assert any(a <= at and at + 1 <= b for a, b in windows), (device_id, at, windows)
        assert twin["state"]["desired"]["config"] == {"sampleRate": 2}
        assert twin["version"] == before[device_id] + 1, "written once: content and mark in one version"
    log = await history(rollouts, "windowed")
    closed = [m for m in log if m.startswith("maintenance window closed")]
    assert closed and "opens" in closed[0], log
    assert "maintenance window open: admitting again" in log
    assert sum(1 for t in after.values() if t["configurations"]["windowed"]["at"] >= windows[1][0]) >= 1


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


async def test_failed_downloads_are_retried_by_policy_and_on_request_even_across_a_kill(
    stack: Stack, api: httpx.AsyncClient, rollouts: RolloutClient
) -> None:
    ids = [f"retry-{i}" for i in range(4)]
    failing = {"retry-0": 1, "retry-1": 1, "retry-2": 2}  # failed downloads before one goes through
    async with fleet(
        stack, ids, lambda d: {"ring": "retry"}, lambda d: SimulatedSoftware(failing_downloads=failing.get(d, 0))
    ) as devices:
        spec = {
            "id": "retried",
            "targetCondition": 'tags.ring == "retry"',
            "content": UPDATE,
            "rollout": {"retry": {"attempts": 1, "backoffSeconds": 4, "on": ["download"]}},
        }
        await start(rollouts, spec)

        async def scheduled() -> bool:
            found = await twins(api, ["retry-0", "retry-1"])
            return all("retryAt" in t["configurations"].get("retried", {}) for t in found.values())

        await until(scheduled, timeout=30, what="retries scheduled")
        retrying = (await rollouts.members("retried", "retrying")).items
        assert {m.device_id for m in retrying} >= {"retry-0", "retry-1"}
        assert all(m.failure == "download" and m.retry_at for m in retrying)
        stack.procs[ROLLOUT_APP].kill()  # while the retries wait for their backoff
        stack.restart(ROLLOUT_APP)

        done = await reaches(rollouts, "retried", "completed", "completion after the retries")
        assert done.progress.succeeded == 3 and done.progress.failed == 1  # retry-2 failed twice
        found = await twins(api, ids)
        for device_id in ("retry-0", "retry-1"):
            mark = found[device_id]["configurations"]["retried"]
            assert mark["attempt"] == 2 and "retryAt" not in mark  # retried once, not again after the restart
            assert found[device_id]["state"]["desired"]["software"]["retry"] == 1
            assert found[device_id]["state"]["reported"]["software"]["status"] == "UPDATED"
            assert devices[device_id].software is not None and devices[device_id].software.attempts == 2
        members = {m.device_id: m for m in (await rollouts.members("retried")).items}
        assert (members["retry-2"].status, members["retry-2"].attempts) == ("failed", 2)
        # the operator asks again for the one that ran out of attempts
        asked = await asyncio.to_thread(twin_cli, stack, "config", "retry", "retried", "--device", "retry-2")
        assert asked.returncode == 0 and "retry asked for retry-2" in asked.stdout, asked.stdout + asked.stderr

        async def recovered() -> bool:
            twin = (await api.get("/v1/twins/retry-2")).json()
            return twin["state"]["reported"]["software"].get("status") == "UPDATED"

        await until(recovered, timeout=30, what="the operator's retry")
        assert (await api.get("/v1/twins/retry-2")).json()["configurations"]["retried"]["attempt"] == 3
        shown = await asyncio.to_thread(twin_cli, stack, "config", "devices", "retried")
        assert "retry-2" in shown.stdout and "succeeded" in shown.stdout
        assert "retry asked by operator for retry-2" in await history(rollouts, "retried")


async def test_a_health_gated_stage_holds_when_updated_devices_send_errors(
    stack: Stack, rollouts: RolloutClient
) -> None:
    ids = [f"health-{i:02d}" for i in range(20)]
    async with fleet(
        stack, ids, lambda d: {"ring": "health"}, lambda d: SimulatedSoftware(unhealthy_versions=frozenset({"2.0.0"}))
    ):
        spec = {
            "id": "gated",
            "targetCondition": 'tags.ring == "health"',
            "content": UPDATE,
            "rollout": {
                "stages": [{"count": 6}, {"percent": 100}],
                "health": {"events": ["error"], "soakSeconds": 3, "label": "error rate"},
            },
        }
        await start(rollouts, spec)
        view = await reaches(rollouts, "gated", "paused", "the health hold")
        assert view.reason == "stage 1 held: error rate 100.0% (6/6) vs 0.0% (0/14) in hold-out"
        assert view.health_checks and not view.health_checks[-1].passed
        assert view.progress.stages[0].succeeded == 6 and view.progress.stages[1].admitted == 0
        log = await history(rollouts, "gated")
        assert any(m.startswith("stage 1 done: 6/6 succeeded") and "soaking 3s" in m for m in log), log
        assert log[-1] == "stage 1 held: error rate 100.0% (6/6) vs 0.0% (0/14) in hold-out; paused"
        shown = await asyncio.to_thread(twin_cli, stack, "config", "metrics", "gated")
        assert "stage 1 held: error rate 100.0%" in shown.stdout
        await rollouts.act("gated", "resume")  # accepted as it is: promoted

        async def promoted() -> bool:
            return (await rollouts.get("gated")).stage == 1

        await until(promoted, timeout=30, what="promotion after resume")


async def test_a_failing_cohort_is_quarantined_while_the_rest_completes(stack: Stack, rollouts: RolloutClient) -> None:
    ids = [f"cohort-{i:02d}" for i in range(24)]
    order = sorted(ids, key=lambda d: rank("cohorted", d))
    bad = set(order[:4]) | set(order[12:14])  # four in stage 1, two that stage 2 would reach
    async with fleet(
        stack,
        ids,
        lambda d: {"ring": "cohort", "hw": "B" if d in bad else "A"},
        lambda d: SimulatedSoftware(failing_installs=d in bad),
    ):
        spec = {
            "id": "cohorted",
            "targetCondition": 'tags.ring == "cohort"',
            "content": UPDATE,
            "rollout": {
                "stages": [{"percent": 50}, {"percent": 100}],
                "failureThreshold": {"percent": 20, "action": "pause"},
                "cohorts": {"keys": ["tags.hw"], "minFailures": 3},
            },
        }
        await start(rollouts, spec)
        view = await reaches(rollouts, "cohorted", "completed", "completion without the cohort")
        assert [c.label() for c in view.quarantined] == ["tags.hw=B"]
        assert view.progress.quarantined == 6 and view.progress.succeeded == 18 and view.progress.failed == 0
        log = await history(rollouts, "cohorted")
        assert any(m.startswith("cohort tags.hw=B quarantined:") and "the rest goes on" in m for m in log), log
        assert not any("halted" in m for m in log)
        members = {m.device_id: m for m in (await rollouts.members("cohorted", limit=100)).items}
        assert {d for d, m in members.items() if m.status == "quarantined"} == set(order[12:14])
        listed = await asyncio.to_thread(twin_cli, stack, "config", "list")
        assert "cohorted" in listed.stdout


async def test_a_preview_shows_the_devices_keys_and_timeline_an_activation_then_follows(
    stack: Stack, api: httpx.AsyncClient, rollouts: RolloutClient
) -> None:
    ids = [f"preview-{i}" for i in range(6)]
    for device_id in ids:
        assert (await api.put(f"/v1/twins/{device_id}")).status_code == 201
        await api.patch(f"/v1/twins/{device_id}/tags", json={"ring": "preview", "big": device_id < "preview-2"})
    await start(
        rollouts, {"id": "holder", "targetCondition": "tags.big == true", "priority": 9, "content": {"mode": "kept"}}
    )
    await until(lambda: _has_mark(api, "preview-0", "holder"), what="the holder applied")
    spec = {
        "id": "previewed",
        "targetCondition": 'tags.ring == "preview"',
        "content": {"mode": "new", "extra": 1},
        "rollout": {"stages": [{"count": 2}, {"percent": 100}], "maxPerMinute": 120, "successCondition": "true"},
    }
    await rollouts.create(spec)
    shown = await asyncio.to_thread(twin_cli, stack, "config", "preview", "previewed", "--json", "--assume", "1")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    preview = await rollouts.preview("previewed")
    assert preview.targeted == 6 and not preview.truncated
    by_device = {d.device_id: d for d in preview.devices}
    assert by_device["preview-0"].wins == ["extra"] and by_device["preview-0"].loses == {"mode": "holder"}
    assert by_device["preview-5"].wins == ["extra", "mode"]
    first = {d.device_id for d in preview.devices if d.stage == 0}
    assert first == set(sorted(ids, key=lambda d: rank("previewed", d))[:2])
    assert preview.completes_at is not None and [s.target for s in preview.stages] == [2, 4]
    assert (await rollouts.get("previewed")).state.value == "draft"  # nothing was stored or written
    assert all("previewed" not in t["configurations"] for t in (await twins(api, ids)).values())
    await rollouts.act("previewed", "activate")
    await reaches(rollouts, "previewed", "completed", "the previewed rollout")
    marks = {d: t["configurations"]["previewed"] for d, t in (await twins(api, ids)).items()}
    assert {d for d, m in marks.items() if m["stage"] == 0} == first  # the stages the preview said
    assert all(marks[d]["keys"] == by_device[d].wins for d in ids)
    again = await api.get("/v1/twins/preview-0")
    assert again.json()["state"]["desired"]["mode"] == "kept"


async def _has_mark(api: httpx.AsyncClient, device_id: str, cid: str) -> bool:
    return cid in (await api.get(f"/v1/twins/{device_id}")).json().get("configurations", {})


async def test_new_operations_refuse_bad_input_and_change_nothing(rollouts: RolloutClient, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.app_url(ROLLOUT_APP), headers=stack.headers, timeout=20) as http:
        never = {
            "id": "bad-sig",
            "targetCondition": "false",
            "content": UPDATE,
            "rollout": {"retry": {"on": ["signature"]}},
        }
        refused = await http.post("/v1/configurations", json=never)
        assert refused.status_code == 400 and "never retried" in refused.json()["message"]
        window = {"start": "00:00", "end": "00:01"}
        tight = {
            "id": "tight",
            "targetCondition": "false",
            "content": {"a": 1},
            "rollout": {"schedule": {"windows": [window], "installSeconds": 120}},
        }
        assert (await http.post("/v1/configurations", json=tight)).status_code == 400
        assert (await http.get("/v1/configurations/bad-sig")).status_code == 404
        plain = {"id": "plain-ops", "targetCondition": "false", "content": {"a": 1}}
        assert (await http.post("/v1/configurations", json=plain)).status_code == 201
        assert (await http.post("/v1/configurations/plain-ops/retry", json={})).status_code == 409  # a draft
        await http.post("/v1/configurations/plain-ops/activate")
        install = await http.post("/v1/configurations/plain-ops/install", json={"all": True})
        assert install.status_code == 409 and "installs as it downloads" in install.json()["message"]
        assert (await http.post("/v1/configurations/plain-ops/install", json={"every": True})).status_code == 400
        assert (await http.post("/v1/configurations/plain-ops/release", json={"cohort": "tags.x=1"})).status_code == 404
        assert (await http.post("/v1/configurations/plain-ops/preview")).status_code == 409  # not a draft
        assert (await http.post("/v1/configurations/preview", json={})).status_code == 400
        before = (await http.get("/v1/configurations/plain-ops/history")).json()["items"]
        assert (await http.post("/v1/configurations/plain-ops/retry", json={"devices": []})).status_code == 400
        assert (await http.get("/v1/configurations/plain-ops/history")).json()["items"] == before
        metrics = (await http.get("/metrics")).text
        assert 'rollout_twins{configuration="plain-ops",status="retrying"}' in metrics
        assert 'rollout_configuration_state{configuration="plain-ops",state="active"} 1.0' in metrics
