"""Configuration rollouts on the real suite (daprd, Redis, Mosquitto, twin-store, delta, rollout) with
simulated devices: priority and tie rules, dynamic membership, a staged rollout that halts on its
failures before the next stage and says why, pause/resume, and a rollout app killed mid-stage."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.clients.base import ApiError, app_url
from services.clients.twin_store import TwinStoreClient
from services.contracts.twins import BatchItem
from services.devtools.stack import Stack
from services.domain.rollout.membership import rank
from services.platform.names import ROLLOUT_APP, TWIN_STORE_APP
from tests.support.cli import twin_cli
from tests.support.devices import simulated_devices
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def rollouts(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.app_url(ROLLOUT_APP), headers=stack.headers, timeout=20) as client:
        yield client


async def create_twins(api: httpx.AsyncClient, tags: dict[str, dict[str, Any]]) -> None:
    for device_id, device_tags in tags.items():
        assert (await api.put(f"/v1/twins/{device_id}")).status_code == 201
        assert (await api.patch(f"/v1/twins/{device_id}/tags", json=device_tags)).status_code == 200


async def desired(api: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    twin = (await api.get(f"/v1/twins/{device_id}")).json()
    return dict(twin.get("state", {}).get("desired", {}))


async def desired_many(api: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(desired(api, d) for d in ids)))


async def start(rollouts: httpx.AsyncClient, spec: dict[str, Any]) -> dict[str, Any]:
    created = await rollouts.post("/v1/configurations", json=spec)
    assert created.status_code == 201, created.text
    activated = await rollouts.post(f"/v1/configurations/{spec['id']}/activate")
    assert activated.status_code == 200, activated.text
    return dict(activated.json())


async def metrics(rollouts: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    return dict((await rollouts.get(f"/v1/configurations/{cid}/metrics")).json())


async def state(rollouts: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    return dict((await rollouts.get(f"/v1/configurations/{cid}")).json())


async def test_bad_configurations_are_refused_with_the_reason(rollouts: httpx.AsyncClient) -> None:
    bad = await rollouts.post(
        "/v1/configurations", json={"id": "bad", "targetCondition": 'tags.region == "eu" &&', "content": {"a": 1}}
    )
    assert bad.status_code == 400 and "line 1, column" in bad.json()["message"]
    assert (await rollouts.get("/v1/configurations/bad")).status_code == 404
    spec = {"id": "immutable", "targetCondition": "false", "content": {"a": 1}}
    await start(rollouts, spec)
    edited = await rollouts.put("/v1/configurations/immutable", json={**spec, "content": {"a": 2}})
    assert edited.status_code == 409 and "immutable once active" in edited.json()["message"]
    again = await rollouts.post("/v1/configurations", json=spec)
    assert again.status_code == 409
    assert (await rollouts.post("/v1/configurations/immutable/resume")).status_code == 409
    assert (await rollouts.delete("/v1/configurations/immutable")).status_code == 409
    assert (await rollouts.post("/v1/configurations/immutable/cancel")).status_code == 200
    assert (await rollouts.delete("/v1/configurations/immutable")).status_code == 204


async def test_highest_priority_wins_and_a_tie_goes_to_the_newest(
    api: httpx.AsyncClient, rollouts: httpx.AsyncClient
) -> None:
    await create_twins(api, {f"prio-{i}": {"group": "prio"} for i in range(3)})
    target = 'tags.group == "prio"'
    await start(
        rollouts, {"id": "prio-low", "targetCondition": target, "priority": 1, "content": {"mode": "low", "extra": 1}}
    )
    await start(rollouts, {"id": "prio-old", "targetCondition": target, "priority": 5, "content": {"mode": "old"}})
    await asyncio.sleep(1.1)  # creation times are in seconds: the next one is strictly newer
    await start(rollouts, {"id": "prio-new", "targetCondition": target, "priority": 5, "content": {"mode": "new"}})
    ids = [f"prio-{i}" for i in range(3)]
    want = [{"mode": "new", "extra": 1}] * 3
    await eventually(lambda: _equals(desired_many(api, ids), want), what="the winners' content")
    twin = (await api.get("/v1/twins/prio-0")).json()
    assert twin["configurations"]["prio-new"]["keys"] == ["mode"]
    assert twin["configurations"]["prio-old"]["status"] == "superseded"
    assert twin["configurations"]["prio-low"]["keys"] == ["extra"]
    low = await metrics(rollouts, "prio-low")
    assert (low["targeted"], low["applied"]) == (3, 3)


async def test_membership_follows_the_twins(api: httpx.AsyncClient, rollouts: httpx.AsyncClient) -> None:
    await create_twins(api, {"member-1": {"site": "north"}})
    await start(
        rollouts,
        {
            "id": "site-north",
            "targetCondition": 'tags.site == "north"',
            "priority": 10,
            "content": {"site_mode": "north"},
        },
    )
    await start(
        rollouts,
        {"id": "site-any", "targetCondition": "has(tags.site)", "priority": 1, "content": {"site_mode": "any"}},
    )
    await eventually(lambda: _equals(desired(api, "member-1"), {"site_mode": "north"}), what="north content")
    # stops matching the high-priority configuration: gets the next one's content
    await api.patch("/v1/twins/member-1/tags", json={"site": "south"})
    await eventually(lambda: _equals(desired(api, "member-1"), {"site_mode": "any"}), what="next-priority content")
    assert "site-north" not in (await api.get("/v1/twins/member-1")).json()["configurations"]
    # stops matching both: the configurations' key is removed
    await api.patch("/v1/twins/member-1/tags", json={"site": None})
    await eventually(lambda: _equals(desired(api, "member-1"), {}), what="keys removed")
    # a twin that appears later and matches gets the content (no scan: from twin.changed)
    await create_twins(api, {"member-2": {"site": "north"}})
    await eventually(lambda: _equals(desired(api, "member-2"), {"site_mode": "north"}), what="late twin")
    north = await metrics(rollouts, "site-north")
    assert north["targeted"] == 1 and north["applied"] == 1


async def test_a_staged_rollout_halts_on_failures_before_the_next_stage(
    stack: Stack, api: httpx.AsyncClient, rollouts: httpx.AsyncClient
) -> None:
    ids = [f"stage-{i:02d}" for i in range(30)]
    order = sorted(ids, key=lambda d: rank("staged", d))  # the rollout's order: stages 3 / 12 / 15
    first, second, third = order[:3], order[3:15], order[15:]
    refusing = set(second[:4])  # 4/12 of stage 2 fail > 30% (3/12 would not: the halt comes with the 4th)
    async with simulated_devices(stack, ids, refusing):
        await eventually(lambda: _all_exist(api, ids), what="devices reported")
        await asyncio.gather(*(api.patch(f"/v1/twins/{d}/tags", json={"ring": "staged"}) for d in ids))
        spec = {
            "id": "staged",
            "targetCondition": 'tags.ring == "staged"',
            "content": {"config": {"sampleRate": 1, "fan": "on"}},
            "metrics": {"fanOn": 'has(reported.config.fan) && reported.config.fan == "on"'},
            "rollout": {
                "stages": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                "failureThreshold": {"percent": 30, "action": "pause"},
            },
        }
        await start(rollouts, spec)
        halted = await eventually(
            lambda: _when(state(rollouts, "staged"), lambda s: s["state"] == "paused"), timeout=60, what="halt"
        )
        assert halted["reason"] == "stage 2 halted: 4/12 failed > 30%"
        history = [h["message"] for h in (await rollouts.get("/v1/configurations/staged/history")).json()["items"]]
        assert any(m.startswith("stage 1 done: 3/3 succeeded") for m in history), history
        assert history[-1] == "stage 2 halted: 4/12 failed > 30%; paused"
        await asyncio.sleep(1.5)  # paused: stage 3 must not start
        assert all("config" not in d for d in await desired_many(api, third))
        counts = await metrics(rollouts, "staged")
        assert [s["admitted"] for s in counts["stages"]] == [3, 12, 0]
        assert counts["failed"] == 4 and counts["succeeded"] == 11
        assert counts["custom"] == {"fanOn": 11}
        failed = (await rollouts.get("/v1/configurations/staged/devices", params={"status": "failed"})).json()
        assert {d["deviceId"] for d in failed["items"]} == refusing
        assert all(d["deviceId"] in first + second for d in failed["items"])

        resumed = await rollouts.post("/v1/configurations/staged/resume")
        assert resumed.json()["state"] == "active"
        done = await eventually(
            lambda: _when(state(rollouts, "staged"), lambda s: s["state"] == "completed"), timeout=60, what="completion"
        )
        assert done["progress"]["succeeded"] == 26 and done["progress"]["failed"] == 4
        assert done["metrics"] == spec["metrics"]
        assert all(d["config"]["fan"] == "on" for d in await desired_many(api, third))


async def test_pause_stops_admissions_and_resume_carries_on(
    api: httpx.AsyncClient, rollouts: httpx.AsyncClient
) -> None:
    ids = [f"paced-{i:02d}" for i in range(20)]
    await create_twins(api, {d: {"paced": True} for d in ids})
    spec = {
        "id": "paced",
        "targetCondition": "tags.paced == true",
        "content": {"paced": 1},
        "rollout": {"maxPerMinute": 120, "successCondition": "true"},
    }
    await start(rollouts, spec)
    await eventually(lambda: _when(metrics(rollouts, "paced"), lambda m: m["applied"] >= 3), what="first admissions")
    assert (await rollouts.post("/v1/configurations/paced/pause")).json()["state"] == "paused"
    await asyncio.sleep(0.6)  # let writes in flight land
    held = (await metrics(rollouts, "paced"))["applied"]
    assert held < 20
    await asyncio.sleep(2)
    assert (await metrics(rollouts, "paced"))["applied"] == held
    assert (await rollouts.post("/v1/configurations/paced/resume")).json()["state"] == "active"
    await eventually(lambda: _when(metrics(rollouts, "paced"), lambda m: m["applied"] == 20), timeout=30, what="all")
    history = [h["message"] for h in (await rollouts.get("/v1/configurations/paced/history")).json()["items"]]
    assert "paused by operator" in history and any(m.startswith("resumed by operator") for m in history)


async def test_a_rollout_app_killed_mid_stage_resumes_without_double_writes_or_skips(
    stack: Stack, api: httpx.AsyncClient, rollouts: httpx.AsyncClient
) -> None:
    ids = [f"crash-{i:03d}" for i in range(300)]
    await create_twins(api, {d: {"crash": True} for d in ids})
    before = {d: (await api.get(f"/v1/twins/{d}")).json()["version"] for d in ids}
    spec = {
        "id": "crash",
        "targetCondition": "tags.crash == true",
        "content": {"crash": {"on": True}},
        "rollout": {"stages": [{"percent": 10}, {"percent": 100}], "maxPerMinute": 3000, "successCondition": "true"},
    }
    await start(rollouts, spec)
    await eventually(lambda: _when(metrics(rollouts, "crash"), lambda m: m["applied"] >= 60), what="mid-stage")
    stack.procs[ROLLOUT_APP].kill()
    killed_at = await _count_written(api, ids)
    assert killed_at < 300, "the rollout finished before the kill: slow it down"
    stack.restart(ROLLOUT_APP)
    await eventually(
        lambda: _when(state(rollouts, "crash"), lambda s: s["state"] == "completed"), timeout=90, what="completion"
    )
    after = {d: (await api.get(f"/v1/twins/{d}")).json() for d in ids}
    assert all(t["state"]["desired"]["crash"] == {"on": True} for t in after.values())
    # each twin was written exactly once: content and mark in one version
    assert all(after[d]["version"] == before[d] + 1 for d in ids), {
        d: (before[d], after[d]["version"]) for d in ids if after[d]["version"] != before[d] + 1
    }
    final = await metrics(rollouts, "crash")
    assert (final["targeted"], final["applied"], final["succeeded"]) == (300, 300, 300)


async def _equals(value: Awaitable[Any], want: Any) -> bool:
    return bool(await value == want)


async def _when(value: Awaitable[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    found = await value
    return found if test(found) else None


async def _all_exist(api: httpx.AsyncClient, ids: list[str]) -> bool:
    answers = await asyncio.gather(*(api.get(f"/v1/twins/{d}") for d in ids))
    return all(a.status_code == 200 for a in answers)


async def _count_written(api: httpx.AsyncClient, ids: list[str]) -> int:
    return sum(1 for d in await desired_many(api, ids) if "crash" in d)


async def test_the_cli_drives_a_rollout(stack: Stack, api: httpx.AsyncClient) -> None:
    await create_twins(api, {"cli-1": {"cli": "yes"}})
    created = await asyncio.to_thread(
        twin_cli, stack, "config", "create", "--id", "cli-cfg", "--target", 'tags.cli == "yes"',
        "--content", '{"cli": 1}', "--stage", "50%", "--stage", "100%", "--metric", "any=true",
        "--fail-percent", "10",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert '"state": "draft"' in created.stdout
    activated = await asyncio.to_thread(twin_cli, stack, "config", "activate", "cli-cfg")
    assert "cli-cfg: active" in activated.stdout, activated.stdout
    await eventually(lambda: _equals(desired(api, "cli-1"), {"cli": 1}), what="content written")
    shown = await asyncio.to_thread(twin_cli, stack, "config", "metrics", "cli-cfg")
    assert "any" in shown.stdout and shown.returncode == 0
    listed = await asyncio.to_thread(twin_cli, stack, "config", "list")
    assert "cli-cfg" in listed.stdout
    history = await asyncio.to_thread(twin_cli, stack, "config", "history", "cli-cfg")
    assert "activated" in history.stdout
    scripted = await asyncio.to_thread(twin_cli, stack, "--output", "json", "config", "list")
    assert [c["id"] for c in json.loads(scripted.stdout) if c["id"] == "cli-cfg"] == ["cli-cfg"]
    # no device reports, so the rollout stays active: the watch follows it until its timeout
    watched = await asyncio.to_thread(twin_cli, stack, "config", "metrics", "cli-cfg", "--watch", "--timeout", "3")
    assert watched.returncode == 0 and "cli-cfg active" in watched.stdout, watched.stdout + watched.stderr
    assert "stage 1" in watched.stdout and "1 pending" in watched.stdout
    lines = await asyncio.to_thread(
        twin_cli, stack, "-o", "json", "config", "metrics", "cli-cfg", "--watch", "--timeout", "2"
    )
    first = json.loads(lines.stdout.splitlines()[0])
    assert first["state"] == "active" and first["progress"]["pending"] == 1
    refused = await asyncio.to_thread(twin_cli, stack, "config", "delete", "cli-cfg")
    assert refused.returncode == 1 and "409" in refused.stdout


async def test_the_twin_store_is_reachable_through_dapr_service_invocation(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Clusters reach the twin-store through the calling app's sidecar (locally through the
    callee's, so stacks side by side stay apart): the invocation path works the same. daprd's mDNS resolves
    app ids machine-wide, round robin, so a call may land on another stack's twin-store: each
    check is one request, tried until our stack answered it (a walk over every page needed all of
    them to land here at once, and with three stacks on the machine twenty walks could all miss)."""
    await create_twins(api, {"invoked-1": {"via": "dapr"}})
    rollout = TwinStoreClient(app_url(TWIN_STORE_APP, stack.ports[ROLLOUT_APP].http), headers=stack.headers)
    try:
        for _ in range(20):
            with contextlib.suppress(ApiError):
                if (await rollout.get("invoked-1")) is not None:
                    break
        else:
            raise AssertionError("the rollout app's sidecar never reached this stack's twin-store")
        for _ in range(20):
            with contextlib.suppress(ApiError):
                results = await rollout.write([BatchItem(device_id="invoked-1", if_version=2, desired={"via": 1})])
                if results[0].status == 200:
                    assert results[0].version == 3
                    break
        else:
            raise AssertionError("the rollout app's batch write never landed")
        assert (await api.get("/v1/twins/invoked-1")).json()["state"]["desired"] == {"via": 1}
    finally:
        await rollout.close()
