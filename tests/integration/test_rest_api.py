"""REST API for components, against the real stack; includes racing writers on two replicas."""

from __future__ import annotations

import asyncio

import httpx

from services.devtools.stack import Stack
from tests.support.devices import link, new_device_id

STACK_ENV = {"TWINFLEET_RATE_PER_SECOND": "1000", "TWINFLEET_RATE_BURST": "1000"}


async def test_unknown_twin_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/twins/nobody-here")
    assert response.status_code == 404 and "no twin exists" in response.json()["message"]


async def test_bad_ids_and_headers_are_400(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/twins/bad id")).status_code == 400
    response = await api.patch("/v1/twins/dev-x/desired", json={"a": 1}, headers={"If-Match": "abc"})
    assert response.status_code == 400 and "If-Match" in response.json()["message"]
    assert (await api.patch("/v1/twins/dev-x/desired", json=[1, 2])).status_code in (400, 422)
    response = await api.patch("/v1/twins/dev-x/desired", json={"a": [None]})
    assert response.status_code == 400 and "null" in response.json()["message"]
    assert (await api.get("/v1/twins", params={"cursor": "nonsense"})).status_code == 400


async def test_create_tags_if_match_and_delete(api: httpx.AsyncClient) -> None:
    device_id = new_device_id()
    created = await api.put(f"/v1/twins/{device_id}")
    assert created.status_code == 201 and created.json()["version"] == 1
    assert (await api.put(f"/v1/twins/{device_id}")).status_code == 409
    tagged = await api.patch(f"/v1/twins/{device_id}/tags", json={"site": "berlin", "ring": 1})
    assert tagged.json()["tags"] == {"site": "berlin", "ring": 1}
    stale = await api.patch(f"/v1/twins/{device_id}/desired", json={"a": 1}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409 and "version conflict" in stale.json()["message"]
    assert (await api.get(f"/v1/twins/{device_id}")).json()["state"] == {}  # unchanged
    fresh = await api.patch(f"/v1/twins/{device_id}/desired", json={"a": 1}, headers={"If-Match": '"2"'})
    assert fresh.status_code == 200 and fresh.json()["state"]["delta"] == {"a": 1}
    deleted = await api.delete(f"/v1/twins/{device_id}")
    assert deleted.json()["version"] == 4
    assert (await api.get(f"/v1/twins/{device_id}")).status_code == 404


async def test_size_limit_on_rest_patch(api: httpx.AsyncClient) -> None:
    response = await api.patch(f"/v1/twins/{new_device_id()}/desired", json={"blob": "x" * 9000})
    assert response.status_code == 413 and "8192" in response.json()["message"]


async def test_64_bit_integers_and_markup_characters_survive_the_store_and_the_events(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Values go through daprd's state API and its pub/sub unchanged, to the device's delta:
    integers beyond a double's 53 bits (daprd's HTTP state writes and HTTP bulk publishes would
    round them), `1e-05`, and `<&>` (daprd's HTTP answers escape them as `\\u003c…`)."""
    device_id, other = new_device_id(), new_device_id()
    values = {"big": 2**53 + 1, "top": 2**63 - 1, "low": -(2**63), "tiny": 1e-05, "text": "<a & b>"}
    async with link(stack, device_id) as dev, link(stack, other) as dev2:
        await dev.report({"boot": 1})
        await dev2.report({"boot": 1})
        # one twin written alone (its event published on its own), then two in one batch (a bulk)
        assert (await api.patch(f"/v1/twins/{device_id}/desired", json=values)).status_code == 200
        assert (await dev.next_delta())["state"] == values
        items = [{"deviceId": d, "desired": {"again": values}} for d in (device_id, other)]
        assert (await api.post("/v1/twins/batch", json={"items": items})).status_code == 200
        for device in (dev, dev2):
            assert (await device.next_delta())["state"]["again"] == values
    await api.patch(f"/v1/twins/{device_id}/tags", json={"serial": 2**64 - 1})
    twin = (await api.get(f"/v1/twins/{device_id}")).json()
    assert twin["state"]["desired"] == {**values, "again": values} and twin["tags"] == {"serial": 2**64 - 1}


async def test_values_json_cannot_hold_are_400_and_change_nothing(api: httpx.AsyncClient) -> None:
    await api.put("/v1/twins/strict-json")
    for body in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": "\\ud800"}'):
        for section in ("desired", "tags"):
            response = await api.patch(
                f"/v1/twins/strict-json/{section}", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, (section, body, response.text)
    twin = (await api.get("/v1/twins/strict-json")).json()
    assert twin["version"] == 1 and twin["state"] == {} and twin["tags"] == {}


async def test_list_pages_through_every_twin(api: httpx.AsyncClient) -> None:
    prefix = new_device_id("page")
    ids = {f"{prefix}-{i:03d}" for i in range(30)}
    await asyncio.gather(*(api.put(f"/v1/twins/{d}") for d in ids))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/twins", params=params)).json()
        assert len(page["items"]) <= 7
        seen += [item["deviceId"] for item in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))


async def test_two_replicas_racing_on_one_twin_lose_no_update(stack: Stack) -> None:
    """Two twin-store replicas (each its own daprd) increment one counter with If-Match; every
    conflict is a 409 the writer retries, so the count comes out exact."""
    replica = stack.add_replica("twin-store")
    device_id = new_device_id("race")
    increments = 25

    async def writer(base_url: str) -> int:
        conflicts = 0
        async with httpx.AsyncClient(base_url=base_url, headers=stack.headers, timeout=20) as client:
            done = 0
            while done < increments:
                current = (await client.get(f"/v1/twins/{device_id}")).json()
                value = current["state"].get("desired", {}).get("count", 0)
                response = await client.patch(
                    f"/v1/twins/{device_id}/desired",
                    json={"count": value + 1},
                    headers={"If-Match": f'"{current["version"]}"'},
                )
                if response.status_code == 409:
                    conflicts += 1
                    continue
                assert response.status_code == 200, response.text
                done += 1
        return conflicts

    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers) as client:
        assert (await client.put(f"/v1/twins/{device_id}")).status_code == 201
    conflicts = await asyncio.gather(writer(stack.api_url), writer(stack.app_url(replica)))
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers) as client:
        twin = (await client.get(f"/v1/twins/{device_id}")).json()
    assert twin["state"]["desired"]["count"] == 2 * increments
    assert twin["version"] == 1 + 2 * increments
    assert sum(conflicts) > 0  # they did race


async def test_device_and_component_writing_concurrently_keep_both(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("mixed")
    async with link(stack, device_id) as dev:
        await dev.report({"boot": 1})

        async def device_side() -> None:
            for i in range(20):
                await dev.report({f"r{i}": i})

        async def component_side() -> None:
            for i in range(20):
                response = await api.patch(f"/v1/twins/{device_id}/desired", json={f"d{i}": i})
                assert response.status_code == 200

        await asyncio.gather(device_side(), component_side())
        twin = (await api.get(f"/v1/twins/{device_id}")).json()
        assert len(twin["state"]["reported"]) == 21 and len(twin["state"]["desired"]) == 20
        assert twin["version"] == 41


async def test_concurrent_first_writes_on_two_replicas_both_land(stack: Stack) -> None:
    """A twin created by two replicas at once: creation is first-write-wins, the loser re-reads
    and merges, so no key is lost (never last-write-wins)."""
    replica = next((name for name in stack.ports if name.startswith("twin-store#")), None) or stack.add_replica(
        "twin-store"
    )
    for round_ in range(5):
        device_id = new_device_id(f"born{round_}")
        async with httpx.AsyncClient(headers=stack.headers, timeout=20) as client:
            responses = await asyncio.gather(
                *(
                    client.patch(f"{base}/v1/twins/{device_id}/desired", json={f"k{i}": i})
                    for i, base in enumerate([stack.api_url, stack.app_url(replica)] * 3)
                )
            )
            assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
            twin = (await client.get(f"{stack.api_url}/v1/twins/{device_id}")).json()
        assert twin["state"]["desired"] == {f"k{i}": i for i in range(6)}
        assert twin["version"] == 6


async def test_every_app_is_ready_only_when_its_sidecar_and_store_answer(stack: Stack) -> None:
    """`/readyz` asks the sidecar and the state store (`/healthz` only says the process answers)."""
    async with httpx.AsyncClient(headers=stack.headers, timeout=10) as client:
        for app in stack.ports:
            ready = await client.get(f"{stack.app_url(app)}/readyz")
            assert ready.status_code == 200, (app, ready.text)
            checks = ready.json()["checks"]
            assert checks["Sidecar"] == "ok", (app, checks)
            assert checks.get("StateRepository", "ok") == "ok", (app, checks)
            assert "StateRepository" in checks or app == "delta", (app, checks)
