"""The console in a real headless browser (Debian's chromium driven by Playwright) against the real
suite (daprd, Redis, Mosquitto, the apps, ORY Hydra): sign in with client credentials, find a
device, change its desired state and see the delta appear live, watch a staged rollout advance
and halt, pause and resume it; every page screenshotted at laptop and tablet widths into
`artifacts/console/`; any console error (or page error) fails the test."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from services.contracts.device_events import DeviceEvent, EventBatch
from services.contracts.topics import DeviceChannels
from services.devtools.stack import Stack
from services.domain.rollout.membership import rank
from services.platform.names import (
    COMMANDS_APP,
    CONSOLE_APP,
    DELTA_APP,
    EVENTS_APP,
    FIRMWARE_APP,
    ROLLOUT_APP,
    TWIN_STORE_APP,
)
from tests.support.devices import link, simulated_devices
from tests.support.hydra import Hydra
from tests.support.releases import image, publish
from tests.support.waiting import eventually

STACK_IDENTITY = "hydra"
STACK_APPS = (TWIN_STORE_APP, DELTA_APP, EVENTS_APP, COMMANDS_APP, ROLLOUT_APP, FIRMWARE_APP, CONSOLE_APP)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
WIDTHS = {"laptop": (1366, 900), "tablet": (820, 1180)}
pytestmark = pytest.mark.browser


def chromium() -> str:
    found = os.environ.get("TWINFLEET_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("Debian's chromium is not installed (`make setup` installs it)")
    return found


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console error: {message.text} at {message.location}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    yield opened
    seen = list(errors)  # what the page logged while the test drove it (not while it is torn down)
    await context.close()
    assert not seen, "\n".join(seen)


async def shoot(page: Page, name: str) -> None:
    for width, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.wait_for_timeout(150)
        await page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    await page.set_viewport_size({"width": 1366, "height": 900})


async def sign_in(page: Page, stack: Stack, hydra: Hydra) -> None:
    secret = hydra.client("console-operator", ["admin"])
    await page.goto(f"{stack.api_url}/console")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await shoot(page, "signin")
    await page.fill("#client-id", "console-operator")
    await page.fill("#client-secret", secret)
    await page.click("#signin-client")
    await expect(page.locator("h1")).to_have_text("Fleet")
    await expect(page.locator("#who")).to_contain_text("admin")


async def create_twins(api: httpx.AsyncClient, tags: dict[str, dict[str, str]]) -> None:
    for device_id, device_tags in tags.items():
        assert (await api.put(f"/v1/twins/{device_id}")).status_code in (200, 201)
        assert (await api.patch(f"/v1/twins/{device_id}/tags", json=device_tags)).status_code == 200


async def test_sign_in_find_a_device_change_desired_and_see_the_delta_live(
    page: Page,
    stack: Stack,
    hydra: Hydra,
    api: httpx.AsyncClient,
    firmware: httpx.AsyncClient,
    rollouts: httpx.AsyncClient,
) -> None:
    await create_twins(api, {f"kitchen-{i:02d}": {"region": "eu" if i % 2 else "us"} for i in range(12)})
    await sign_in(page, stack, hydra)
    await expect(page.locator("#fleet-total")).to_have_text("12")
    await expect(page.locator("#fleet-counts")).to_contain_text("region=eu")
    await shoot(page, "fleet")
    reached = set()  # keyboard reachable: the navigation, the search and the sort headers by Tab
    for _ in range(40):
        await page.keyboard.press("Tab")
        reached.add(await page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert {"Fleet", "Configurations", "Releases", "search-id", "search-tag", "Device ▲"} <= reached, reached

    await page.fill("#search-tag", "region=us")
    await page.press("#search-tag", "Enter")
    await expect(page.locator("#page-note")).to_have_text("1–6 of 6")
    await page.fill("#search-tag", "")
    await page.fill("#search-id", "kitchen-0")
    await page.keyboard.press("Enter")
    await expect(page.locator("#page-note")).to_have_text("1–10 of 10")
    await page.get_by_role("button", name="Device").click()  # sort by id, descending
    await expect(page.locator("#devices tbody tr").first).to_contain_text("kitchen-09")

    await create_twins(api, {"kitchen-99": {"region": "eu"}})  # live: the counts follow
    await page.fill("#search-id", "")
    await page.keyboard.press("Enter")
    await expect(page.locator("#fleet-total")).to_have_text("13")

    async with link(stack, "kitchen-03") as device:  # an event the device page lists
        event = DeviceEvent(seq=1, ts=time.time(), type="door-opened", data={"door": "front"})
        await device.send(DeviceChannels("kitchen-03").events, EventBatch(events=[event]).model_dump(mode="json"))

    async def heard() -> bool:
        return bool((await api.get("/v1/console/devices/kitchen-03/events")).json()["items"])

    await eventually(heard, timeout=30, what="the event reached the console")
    await page.click("text=kitchen-03")
    await expect(page.locator("h1")).to_contain_text("Device kitchen-03")
    await expect(page.locator("#events")).to_contain_text("door-opened")
    await page.fill("#desired-patch", '{"config": {"fan": "on"}}')
    await page.click("#save-desired")
    await expect(page.locator("#delta")).to_contain_text('config.fan = "on"')
    await expect(page.locator("#desired [data-path='config.fan'] time")).not_to_be_empty()

    # a change made elsewhere shows up without reloading (twin.changed → the live stream)
    assert (await api.patch("/v1/twins/kitchen-03/desired", json={"config": {"rate": 5}})).status_code == 200
    await expect(page.locator("#delta")).to_contain_text("config.rate = 5")
    await page.fill("#command-name", "ping")
    await page.click("#send-command")
    await expect(page.locator("#commands")).to_contain_text("ping")
    await shoot(page, "device")

    artifact = await publish(stack, firmware, "gateway", "2.0.0", image("2.0.0"))
    spec = {
        "id": "gateway-2",
        "targetCondition": "true",
        "content": {"software": {"artifact": artifact, "version": "2.0.0"}},
    }
    assert (await rollouts.post("/v1/configurations", json=spec)).status_code == 201
    await page.click("text=Releases")
    await expect(page.locator("h1")).to_have_text("Releases")
    await expect(page.locator("#artifacts")).to_contain_text("gateway")
    await expect(page.locator("#artifacts")).to_contain_text("gateway-2 (draft)")
    await expect(page.locator("#keys")).to_contain_text("root")
    await shoot(page, "releases")


async def test_watch_a_staged_rollout_advance_and_halt_then_pause_and_resume_it(
    page: Page, stack: Stack, hydra: Hydra, api: httpx.AsyncClient
) -> None:
    ids = [f"ring-{i:02d}" for i in range(20)]
    order = sorted(ids, key=lambda d: rank("watched", d))  # the rollout's order: stages 2 / 8 / 10
    refusing = set(order[2:5])  # 3/8 of stage 2 fail > 30%
    async with simulated_devices(stack, ids, refusing):
        await eventually(lambda: _all_exist(api, ids), what="devices reported")
        await asyncio.gather(*(api.patch(f"/v1/twins/{d}/tags", json={"ring": "watched"}) for d in ids))
        await sign_in(page, stack, hydra)
        await page.click("text=Configurations")
        await page.click("text=New configuration")
        await page.fill("#cfg-id", "watched")
        await page.fill("#cfg-target", 'tags.ring == "watched"')
        await page.fill("#cfg-content", '{"config": {"fan": "on"}}')
        await page.fill("#cfg-stages", "10, 50, 100")
        await page.fill("#cfg-fail", "30")
        await page.fill("#cfg-pace", "40")  # paced, so that it can be paused mid-stage
        await page.click("#preview-button")
        await expect(page.locator("#preview h2")).to_have_text("Would select 20 devices")
        await shoot(page, "configuration-new")
        await page.click("#create-button")
        await expect(page.locator("#config-state")).to_have_text("draft")
        await page.click("#activate")
        await expect(page.locator("#stages [data-state='done']")).to_have_count(1, timeout=60_000)  # advanced
        await expect(page.locator("#config-state")).to_have_text("paused", timeout=60_000)  # halted
        await expect(page.locator("#history")).to_contain_text("stage 2 halted")
        await shoot(page, "configuration")
        await page.click("#resume")
        await expect(page.locator("#config-state")).to_have_text("active")
        await page.click("#pause")
        await expect(page.locator("#config-state")).to_have_text("paused")
        await page.click("#resume")
        await expect(page.locator("#config-state")).to_have_text("completed", timeout=60_000)
        await page.click("text=Configurations")
        await expect(page.locator("#configurations")).to_contain_text("watched")
        await shoot(page, "configurations")


async def test_the_console_refuses_what_the_callers_role_does_not_allow(stack: Stack, hydra: Hydra) -> None:
    """Every forwarded call is checked by the serving app's rules with the caller's own token, and a
    cookie-authenticated write without the console's header is refused (403, nothing done)."""
    viewer = hydra.token("console-viewer", ["viewer"])
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=20) as http:
        signed = await http.post("/v1/console/session", json={"token": viewer})
        assert signed.status_code == 200 and "HttpOnly" in signed.headers["set-cookie"]
        assert (await http.get("/v1/console/session")).json()["roles"] == ["viewer"]
        assert (await http.get("/v1/console/fleet")).status_code == 200
        refused = await http.patch(
            "/v1/console/api/twin-store/v1/twins/kitchen-01/desired",
            json={"x": 1},
            headers={"X-Twinfleet-Console": "1"},
        )
        assert refused.status_code == 403 and "operator" in refused.json()["message"]
        no_header = await http.patch("/v1/console/api/twin-store/v1/twins/kitchen-01/desired", json={"x": 1})
        assert no_header.status_code == 403 and "X-Twinfleet-Console" in no_header.json()["message"]
        assert (await http.post("/v1/console/session", json={})).status_code == 400
        assert (await http.post("/v1/console/session", json={"token": "nonsense"})).status_code == 401
        hydra.client("console-wrong", ["admin"])
        wrong = await http.post("/v1/console/session", json={"clientId": "console-wrong", "clientSecret": "wrong"})
        assert wrong.status_code == 401 and "refused these client credentials" in wrong.json()["message"]
        http.cookies.clear()
        assert (await http.get("/v1/console/fleet")).status_code == 401
        assert (await http.get("/v1/console/session")).json() == {
            "signedIn": False,
            "subject": "",
            "name": "",
            "kind": "",
            "roles": [],
            "expiresAt": 0,
        }


async def _all_exist(api: httpx.AsyncClient, ids: list[str]) -> bool:
    answers = await asyncio.gather(*(api.get(f"/v1/twins/{d}") for d in ids))
    return all(a.status_code == 200 for a in answers)
