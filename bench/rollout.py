"""Rollout figures: activation → every targeted twin's desired state written, and the planner's
evaluations/s, each next to a raw floor measured in the same run.

- Write: N twins are seeded through the twin-store's batch API (not timed), a configuration that
  targets all of them is activated, and the clock stops when its metrics say all N are applied;
  a sample of twins is then read back to check. Floor: N twin-sized documents written straight
  to the same Redis through daprd's bulk state API (500 per call, 4 calls in flight) — the
  storage cost alone, without twin logic, events or the rollout.
- Planner (in-process, no I/O): `evaluate_twin` + `plan_twin` over N synthetic twins with three
  configurations. Floor: the bare CEL evaluations of the same conditions on the same twins.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from dapr.conf import settings as dapr_settings

from services.contracts.rollout import ConfigurationSpec, ConfigurationState
from services.devtools.stack import Stack
from services.domain.rollout.conditions import matches, twin_variables
from services.domain.rollout.configuration import CompiledConfiguration, Configuration
from services.domain.rollout.twin_plan import evaluate_twin, plan_twin
from services.platform.names import ROLLOUT_APP
from services.platform.sidecar import Sidecar, Write

TIMEOUT = 900.0
"""Seconds the write figure may take before the bench gives up on it."""
CONTENT = {"config": {"sampleRate": 5, "mode": "eco", "thresholds": {"temperature": 30, "humidity": 80}}}


@dataclass
class RolloutFigures:
    twins: int
    seed_seconds: float
    write_seconds: float
    floor_seconds: float
    verified: int
    sampled: int
    planner_twins_per_s: float
    planner_evaluations_per_s: float
    floor_evaluations_per_s: float


def synthetic_twin(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "tags": {"fleet": "bench", "region": rng.choice(["eu", "us", "ap"]), "tier": rng.randint(1, 3)},
        "reported": {
            "firmware": {"version": rng.choice(["1.0.0", "1.1.0", "2.0.0"])},
            "config": {"sampleRate": 10, "mode": "auto"},
            "telemetry": {"temperature": round(rng.uniform(15, 30), 1), "humidity": rng.randint(20, 90)},
            "uptime": rng.randint(0, 10**6),
            "battery": rng.randint(0, 100),
            "rssi": -rng.randint(30, 90),
            "ip": f"10.0.{i // 250 % 250}.{i % 250}",
            "model": "sensor-v2",
            "site": f"site-{i % 50}",
            "health": "ok",
        },
    }


def measure_planner(twins: int) -> tuple[float, float, float]:
    """(twins/s, condition evaluations/s) of evaluate+plan, and the bare CEL evaluations/s."""
    specs = [
        ("eu-eco", 'tags.region == "eu" && reported.firmware.version < "2.0.0"', 10),
        ("tier-1", "tags.tier == 1 && reported.telemetry.temperature > 20.0", 5),
        ("all", 'tags.fleet == "bench"', 1),
    ]
    compiled = [
        CompiledConfiguration(
            Configuration(
                spec=ConfigurationSpec(id=cid, target_condition=text, priority=priority, content=CONTENT),
                state=ConfigurationState.ACTIVE,
                created_at=1,
            )
        )
        for cid, text, priority in specs
    ]
    by_id = {c.id: c for c in compiled}
    rng = random.Random(7)
    fleet = [synthetic_twin(i, rng) for i in range(twins)]
    admit = {c.id: 0 for c in compiled}
    started = time.perf_counter()
    for i, twin in enumerate(fleet):
        facts = evaluate_twin(f"d{i}", 1, twin["tags"], {}, twin["reported"], {}, compiled)
        plan_twin(facts, by_id, admit, 0)
    planner = time.perf_counter() - started
    started = time.perf_counter()
    for i, twin in enumerate(fleet):
        variables = twin_variables(f"d{i}", twin["tags"], twin["reported"], {})
        for c in compiled:
            matches(c.target, variables)
    floor = time.perf_counter() - started
    evaluations = twins * len(compiled)
    return twins / planner, evaluations / planner, evaluations / floor


async def seed(api: httpx.AsyncClient, twins: int) -> None:
    """Create the twins with tags, 1,000 per batch call, four calls in flight."""
    limit = asyncio.Semaphore(4)
    rng = random.Random(3)

    async def one(start: int) -> None:
        items = [
            {"deviceId": f"bench-{i:06d}", "create": True, "tags": synthetic_twin(i, rng)["tags"]}
            for i in range(start, min(start + 1000, twins))
        ]
        async with limit:
            answer = await api.post("/v1/twins/batch", json={"items": items}, timeout=120)
        answer.raise_for_status()
        bad = [r for r in answer.json()["results"] if r["status"] not in (200, 201)]
        if bad:
            raise RuntimeError(f"seeding refused {len(bad)} twins, e.g. {bad[0]}")

    await asyncio.gather(*(one(start) for start in range(0, twins, 1000)))


async def write_figure(stack: Stack, twins: int) -> tuple[float, float, int, int]:
    async with (
        httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=60) as api,
        httpx.AsyncClient(base_url=stack.app_url(ROLLOUT_APP), headers=stack.headers, timeout=60) as rollouts,
    ):
        started = time.perf_counter()
        await seed(api, twins)
        seeded = time.perf_counter() - started
        spec = {"id": "bench", "targetCondition": 'tags.fleet == "bench"', "priority": 1, "content": CONTENT}
        (await rollouts.post("/v1/configurations", json=spec)).raise_for_status()
        started = time.perf_counter()
        (await rollouts.post("/v1/configurations/bench/activate")).raise_for_status()
        while True:
            metrics = (await rollouts.get("/v1/configurations/bench/metrics")).json()
            if metrics["applied"] >= twins:
                break
            if time.perf_counter() - started > TIMEOUT:
                raise TimeoutError(f"rollout not done after {TIMEOUT:.0f}s: {metrics}")
            await asyncio.sleep(0.2)
        written = time.perf_counter() - started
        print(f"rollout: activation → {twins:,} desired written in {written:.1f} s", flush=True)
        sample = random.Random(5).sample(range(twins), min(1000, twins))
        reads = asyncio.Semaphore(20)

        async def read(i: int) -> httpx.Response:
            async with reads:
                return await api.get(f"/v1/twins/bench-{i:06d}")

        views = await asyncio.gather(*(read(i) for i in sample))
        verified = sum(1 for v in views if v.json()["state"].get("desired") == CONTENT)
        return seeded, written, verified, len(sample)


async def floor_figure(stack: Stack, twins: int) -> float:
    """Bulk state writes of twin-sized documents through the rollout app's daprd to the same Redis."""
    ports = stack.ports[ROLLOUT_APP]
    dapr_settings.DAPR_HTTP_PORT = ports.http  # type: ignore[attr-defined]  # the SDK's health check reads it (set at import)
    dapr_settings.DAPR_API_TOKEN = stack.dapr_token  # type: ignore[attr-defined]  # the sidecars take calls with it only
    sidecar = Sidecar(f"127.0.0.1:{ports.grpc}", ports.http)
    await sidecar.connect()
    try:
        rng = random.Random(9)
        documents = [{"desired": CONTENT, **synthetic_twin(i, rng), "version": 2} for i in range(twins)]
        limit = asyncio.Semaphore(4)

        async def one(start: int) -> None:
            async with limit:
                await sidecar.write_each(
                    [Write(f"bench-floor~{i}", documents[i], None) for i in range(start, min(start + 500, twins))]
                )

        started = time.perf_counter()
        await asyncio.gather(*(one(s) for s in range(0, twins, 500)))
        return time.perf_counter() - started
    finally:
        await sidecar.close()


def measure_rollout(base: Path, twins: int) -> RolloutFigures:
    planner_tps, planner_eps, floor_eps = measure_planner(twins)
    stack = Stack(base / "rollout")
    stack.start()
    try:
        seeded, written, verified, sampled = asyncio.run(write_figure(stack, twins))
        floor = asyncio.run(floor_figure(stack, twins))
    finally:
        stack.stop()
    return RolloutFigures(twins, seeded, written, floor, verified, sampled, planner_tps, planner_eps, floor_eps)
