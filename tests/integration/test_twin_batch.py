"""Batch writes and the full list view (the rollout app's way into the twin-store) against the
real stack: 1,000 twins in one call, per-item answers, no-ops that change nothing, configuration
marks that never reach the device."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from services.devtools.stack import Stack
from tests.support.devices import link, new_device_id

MARK_A = {"status": "applied", "keys": ["mode"], "stage": 0, "at": 1700000000}
MARK_B = {"status": "applied", "keys": [], "stage": 1, "at": 1700000001}


async def batch(api: httpx.AsyncClient, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await api.post("/v1/twins/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["deviceId"] for r in results] == [i["deviceId"] for i in items]
    return results


async def test_one_call_creates_a_thousand_twins_and_repeating_it_changes_nothing(api: httpx.AsyncClient) -> None:
    prefix = new_device_id("bulk")
    items = [{"deviceId": f"{prefix}-{i:04d}", "create": True, "tags": {"fleet": prefix, "n": i}} for i in range(1000)]
    created = await batch(api, items)
    assert {(r["status"], r["version"], r["unchanged"], r["message"]) for r in created} == {(201, 1, False, None)}
    twin = (await api.get(f"/v1/twins/{prefix}-0999")).json()
    assert twin["tags"] == {"fleet": prefix, "n": 999} and twin["version"] == 1 and twin["configurations"] == {}
    again = await batch(api, items)
    assert {(r["status"], r["version"], r["unchanged"]) for r in again} == {(200, 1, True)}
    assert (await api.get(f"/v1/twins/{prefix}-0000")).json()["version"] == 1


async def test_a_mixed_batch_answers_each_item_and_changes_nothing_it_refused(api: httpx.AsyncClient) -> None:
    prefix = new_device_id("mixed")
    ok, stale, big, nested, marked = (f"{prefix}-{name}" for name in ("ok", "stale", "big", "nested", "marked"))
    await batch(api, [{"deviceId": d, "create": True, "desired": {"mode": "off"}} for d in (ok, stale, big, nested)])
    before = {d: (await api.get(f"/v1/twins/{d}")).json() for d in (stale, big, nested)}
    results = await batch(
        api,
        [
            {"deviceId": ok, "desired": {"mode": "eco"}, "configurations": {"cfg-a": MARK_A}, "ifVersion": 1},
            {"deviceId": f"{prefix}-missing", "desired": {"mode": "eco"}},
            {"deviceId": stale, "desired": {"mode": "eco"}, "ifVersion": 7},
            {"deviceId": big, "desired": {"blob": "x" * 9000}, "configurations": {"cfg-a": MARK_A}},
            {"deviceId": nested, "tags": {"nested": {"no": 1}}, "configurations": {"cfg-a": MARK_A}},
            {"deviceId": "bad id", "create": True},
            {"deviceId": marked, "create": True, "configurations": {"cfg-a": MARK_A}},
        ],
    )
    assert [r["status"] for r in results] == [200, 404, 409, 413, 400, 400, 201]
    assert results[0]["version"] == 2 and results[0]["configurations"] == {"cfg-a": MARK_A}
    assert results[0]["message"] is None and results[6]["configurations"] == {"cfg-a": MARK_A}
    assert results[1]["version"] is None and "no twin" in results[1]["message"]
    assert "expects version 7, twin is at 1" in results[2]["message"]
    assert "8192" in results[3]["message"] and "tag 'nested'" in results[4]["message"]
    assert "device id" in results[5]["message"]
    assert all(r["version"] == 1 and r["configurations"] == {} for r in results[2:5])  # the twins as they stand
    for device_id, twin in before.items():
        assert (await api.get(f"/v1/twins/{device_id}")).json() == twin
    assert (await api.get(f"/v1/twins/{prefix}-missing")).status_code == 404
    twin = (await api.get(f"/v1/twins/{ok}")).json()
    assert twin["state"]["desired"] == {"mode": "eco"} and twin["configurations"] == {"cfg-a": MARK_A}


async def test_marks_reach_the_twin_but_never_the_device(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("marks")
    async with link(stack, device_id) as dev:
        await dev.report({"mode": "off"})
        assert (await asyncio.wait_for(dev.documents.get(), 10))["current"]["version"] == 1
        write = {"deviceId": device_id, "desired": {"mode": "eco"}, "configurations": {"cfg-a": MARK_A}}
        (first,) = await batch(api, [write])
        assert first["status"] == 200 and first["version"] == 2 and not first["unchanged"]
        delta = await dev.next_delta()
        assert delta["state"] == {"mode": "eco"} and delta["version"] == 2 and "cfg-a" not in json.dumps(delta)
        documents = await asyncio.wait_for(dev.documents.get(), 10)
        assert documents["current"]["version"] == 2 and "cfg-a" not in json.dumps(documents)

        (repeated,) = await batch(api, [write])
        assert repeated["unchanged"] and repeated["version"] == 2
        (marks_only,) = await batch(api, [{"deviceId": device_id, "configurations": {"cfg-b": MARK_B}}])
        (tags_only,) = await batch(api, [{"deviceId": device_id, "tags": {"ring": 1}}])
        assert (marks_only["version"], tags_only["version"]) == (3, 4)
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        assert twin["configurations"] == {"cfg-a": MARK_A, "cfg-b": MARK_B} and twin["tags"] == {"ring": 1}
        assert twin["version"] == 4 and "configurations" not in twin["state"]

        # A desired change afterwards is the first thing the device hears: the mark and tag
        # changes before it sent nothing (no delta, no documents).
        assert (await api.patch(f"/v1/twins/{device_id}/desired", json={"mode": "max"})).status_code == 200
        delta = await dev.next_delta()
        assert delta["state"] == {"mode": "max"} and delta["version"] == 5
        documents = await asyncio.wait_for(dev.documents.get(), 10)
        assert documents["previous"]["version"] == 4 and documents["current"]["version"] == 5
        assert dev.documents.empty()

        accepted = await dev.get()
        assert accepted["version"] == 5 and accepted["state"]["desired"] == {"mode": "max"}
        assert "configurations" not in accepted and "cfg-a" not in json.dumps(accepted)
        assert "ring" not in json.dumps(accepted)


async def test_the_full_view_pages_through_every_twin_exactly_once(api: httpx.AsyncClient) -> None:
    prefix = new_device_id("full")
    await batch(
        api,
        [
            {
                "deviceId": f"{prefix}-{i:03d}",
                "create": True,
                "desired": {"n": i},
                "tags": {"group": i % 3},
                "configurations": {"cfg-a": MARK_A},
            }
            for i in range(300)
        ],
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"view": "full", "limit": 97, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/twins", params=params)).json()
        assert len(page["items"]) <= 97
        for item in page["items"]:
            assert {"desired", "reported", "tags", "configurations"} <= set(item)
            if item["deviceId"].startswith(prefix):
                n = int(item["deviceId"].rsplit("-", 1)[1])
                assert item["desired"] == {"n": n} and item["reported"] == {}
                assert item["tags"] == {"group": n % 3} and item["configurations"] == {"cfg-a": MARK_A}
        seen += [item["deviceId"] for item in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert len(seen) == len(set(seen))
    assert sorted(d for d in seen if d.startswith(prefix)) == [f"{prefix}-{i:03d}" for i in range(300)]
    summary = (await api.get("/v1/twins", params={"limit": 5})).json()["items"]
    assert summary and all(set(item) == {"deviceId", "shadow", "version", "timestamp", "tags"} for item in summary)


async def test_malformed_batches_are_refused_whole(api: httpx.AsyncClient) -> None:
    device_id = new_device_id("whole")
    one = {"deviceId": device_id, "create": True}
    bodies: list[tuple[Any, int, str]] = [
        ([one], 400, "items"),
        ({"items": []}, 400, "empty"),
        ({"items": [{"create": True}]}, 400, "items[0].deviceId"),
        ({"items": [{**one, "create": "yes"}]}, 400, "items[0].create"),
        ({"items": [{**one, "ifVersion": -1}]}, 400, "items[0].ifVersion"),
        ({"items": [{**one, "desired": [1]}]}, 400, "items[0].desired"),
        ({"items": [{**one, "colour": "red"}]}, 400, "items[0].colour"),
        ({"items": [one, {"deviceId": "other"}, one]}, 400, "twice"),
        ({"items": [{"deviceId": f"{device_id}-{i}", "create": True} for i in range(1001)]}, 413, "at most 1000"),
    ]
    for body, status, message in bodies:
        response = await api.post("/v1/twins/batch", json=body)
        assert response.status_code == status and message in response.json()["message"], response.text
    raw = b'{"items": [{"deviceId": "%s", "create": true, "desired": {"n": NaN}}]}' % device_id.encode()
    response = await api.post("/v1/twins/batch", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "NaN" in response.json()["message"]
    assert (await api.get(f"/v1/twins/{device_id}")).status_code == 404
    assert (await api.get(f"/v1/twins/{device_id}-0")).status_code == 404
