"""The dry run's shell: read the fleet as it is now, evaluate the configuration (and those already in
force) on every twin, then hand the pure projection (`domain.rollout.preview`) what it needs."""

from __future__ import annotations

import asyncio
import time

from services.clients.twin_store import TwinStoreClient
from services.contracts.rollout import (
    ConfigurationSpec,
    HistoryEntry,
    PreviewBody,
    PreviewDevice,
    PreviewView,
    StageProjection,
)
from services.domain.access import Scope
from services.domain.errors import bad_request
from services.domain.rollout.configuration import CompiledConfiguration, activate, new_configuration
from services.domain.rollout.membership import rank
from services.domain.rollout.planner import stage_targets
from services.domain.rollout.preview import project, simulated_twins
from services.domain.rollout.twin_plan import TwinFacts, contest, evaluate_twin
from services.rollout.metrics import PREVIEWS


async def preview(
    spec: ConfigurationSpec,
    body: PreviewBody,
    in_force: dict[str, CompiledConfiguration],
    twins: TwinStoreClient,
    *,
    page: int,
    tick: float,
    scope: Scope | None = None,
) -> PreviewView:
    """What activating `spec` at `body.start_at` would do, against the configurations `in_force`;
    created within `scope`, it selects only twins within it (as the real configuration would)."""
    timeout = spec.rollout.device_timeout_seconds
    if timeout is not None and body.assume_seconds >= timeout:
        raise bad_request(f"assumeSeconds ({body.assume_seconds}) must be below the device timeout ({timeout}s)")
    start = float(body.start_at if body.start_at is not None else int(time.time()))
    candidate = CompiledConfiguration(activate(new_configuration(spec, int(start), scope), int(start)))
    configurations = {cid: c for cid, c in in_force.items() if cid != spec.id and c.configuration.state.live} | {
        spec.id: candidate
    }
    facts: dict[str, TwinFacts] = {}
    async for items in twins.pages(page):
        for view in items:
            if view.shadow:
                continue
            found = evaluate_twin(
                view.device_id,
                view.version,
                view.tags,
                view.desired,
                view.reported,
                view.configurations,
                list(configurations.values()),
            )
            hit = found.hits.get(spec.id)
            if hit is not None and hit.targeted:
                facts[view.device_id] = found
    contests = {d: contest(f, configurations, spec.id) for d, f in facts.items()}
    superseded = frozenset(d for d, (won, _) in contests.items() if not won)
    projection = await asyncio.to_thread(  # pure and CPU-bound: off the loop the reconciler runs on
        project,
        candidate,
        simulated_twins(facts, spec.id),
        start,
        assume=body.assume_seconds,
        tick=tick,
        horizon=body.horizon_seconds,
        superseded=superseded,
    )
    PREVIEWS.inc()
    never = (float("inf"), 0)
    order = sorted(facts, key=lambda d: (projection.admissions.get(d, never)[1], rank(spec.id, d)))
    devices = [
        PreviewDevice(
            device_id=d,
            stage=admitted[0] if (admitted := projection.admissions.get(d)) else None,
            admit_at=int(admitted[1]) if admitted else None,
            wins=contests[d][0],
            loses=contests[d][1],
        )
        for d in order[: body.limit]
    ]
    targets = stage_targets(candidate.configuration, len(facts))
    stages = [
        StageProjection(
            index=index,
            target=target - (targets[index - 1] if index else 0),
            starts_at=_second(times.starts_at),
            admitted_by=_second(times.admitted_by),
            done_at=_second(times.done_at),
        )
        for index, (target, times) in enumerate(zip(targets, projection.stages, strict=True))
    ]
    history = [HistoryEntry(at=int(at), message=m) for at, m in projection.history]
    return PreviewView(
        targeted=len(facts),
        devices=devices,
        truncated=len(order) > body.limit,
        stages=stages,
        completes_at=_second(projection.completes_at),
        history=[HistoryEntry(at=int(start), message=candidate.configuration.history[-1].message), *history],
        assumptions=(
            f"writes land at once; each admitted twin succeeds {body.assume_seconds}s after its write and "
            f"stays healthy; rounds every {tick:g}s; twins as they are now ({len(facts)} targeted)"
        ),
    )


def _second(value: float | None) -> int | None:
    return None if value is None else int(value)
