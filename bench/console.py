"""The console with 100,000 twins: the fleet page loaded in Debian's chromium (sign-in cookie set,
from navigation to the counts and the first page of the device list on screen), next to the floor
measured in the same run and the same browser: one raw page of 50 twins read from the twin-store
through the same ingress (what any device list must at least fetch). Also: how long the console
takes to rebuild its fleet index from the store after a restart, and one counts request."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from bench.rollout import seed
from services.console.session import COOKIE
from services.devtools.stack import Stack
from services.platform.names import CONSOLE_APP, TWIN_STORE_APP

LOADS = 7


@dataclass(frozen=True)
class ConsoleFigures:
    twins: int
    seeded_seconds: float
    rebuild_seconds: float
    counts_ms: float
    page_ms: list[float]
    floor_ms: list[float]

    @property
    def page_median(self) -> float:
        return statistics.median(self.page_ms)

    @property
    def floor_median(self) -> float:
        return statistics.median(self.floor_ms)


async def _wait_ready(api: httpx.AsyncClient, twins: int, timeout: float = 600) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        answer = await api.get("/v1/console/fleet")
        if answer.status_code == 200 and answer.json()["ready"] and answer.json()["twins"] >= twins:
            return time.perf_counter() - started
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the console's index did not reach {twins:,} twins in {timeout:.0f} s")


async def _figures(stack: Stack, twins: int) -> ConsoleFigures:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=120) as api:
        started = time.perf_counter()
        await seed(api, twins)
        seeded = time.perf_counter() - started
        await _wait_ready(api, twins)
        stack.procs[CONSOLE_APP].stop()  # a restart: the index is rebuilt by one scan of the store
        stack.restart(CONSOLE_APP)
        rebuild = await _wait_ready(api, twins)
        started = time.perf_counter()
        (await api.get("/v1/console/fleet")).raise_for_status()
        counts_ms = (time.perf_counter() - started) * 1000
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Debian's chromium is not installed (`make setup` installs it)")
    page_ms, floor_ms = [], []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = await browser.new_context(viewport={"width": 1366, "height": 900})
        await context.add_cookies([{"name": COOKIE, "value": stack.admin_token, "url": stack.api_url}])
        page = await context.new_page()
        for _ in range(LOADS):
            started = time.perf_counter()
            await page.goto(f"{stack.api_url}/console#/fleet")
            await page.wait_for_function(
                f"document.querySelector('#fleet-total')?.textContent === '{twins:,}'"
                " && document.querySelectorAll('#devices tbody tr').length === 50"
            )
            page_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            status = await page.evaluate(
                "async (token) => (await fetch('/v1/twins?limit=50', {headers: {Authorization: `Bearer ${token}`}}))"
                ".status",
                stack.admin_token,
            )
            floor_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"the floor's read answered {status}")
        await browser.close()
    return ConsoleFigures(twins, seeded, rebuild, counts_ms, page_ms, floor_ms)


def measure_console(base: Path, twins: int) -> ConsoleFigures:
    stack = Stack(base / "console", apps=(TWIN_STORE_APP, CONSOLE_APP))
    stack.start()
    try:
        return asyncio.run(_figures(stack, twins))
    finally:
        stack.stop()
