"""REST API: create, edit (drafts only), activate, pause, resume, cancel and delete configurations;
read their metrics, per-stage counts, history and per-twin status."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ValidationError

from services.domain.errors import bad_request, conflict
from services.domain.rollout.configuration import (
    Action,
    Configuration,
    ConfigurationSpec,
    ConfigurationState,
    apply_action,
    check_deletable,
    new_configuration,
    replace_spec,
    validate_spec,
)
from services.domain.rollout.planner import stage_targets
from services.domain.rollout.twin_plan import Outcome
from services.platform.sidecar import WriteFailed
from services.rollout.reconciler import Reconciler
from services.rollout.store import ConfigurationStore

LOAD_WAIT_SECONDS = 30.0


async def _loaded(request: Request) -> None:
    """Answer only once the stored configurations are loaded (just after a restart they are not):
    a 503 beats a wrong 404."""
    try:
        await asyncio.wait_for(request.app.state.reconciler.ready.wait(), LOAD_WAIT_SECONDS)
    except TimeoutError:
        raise HTTPException(503, "configurations are still loading; try again") from None


router = APIRouter(prefix="/v1/configurations", tags=["configurations"], dependencies=[Depends(_loaded)])


class CancelBody(BaseModel):
    rollback: bool = True


def _reconciler(request: Request) -> Reconciler:
    reconciler: Reconciler = request.app.state.reconciler
    return reconciler


def _store(request: Request) -> ConfigurationStore:
    return _reconciler(request).store


def _spec(request: Request, body: Any) -> ConfigurationSpec:
    try:
        spec = ConfigurationSpec.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise bad_request(f"{where}: {first['msg']}") from None
    validate_spec(spec, request.app.state.limits)
    return spec


def metrics_view(reconciler: Reconciler, configuration: Configuration) -> dict[str, Any]:
    stats = reconciler.membership.stats(configuration.id)
    total = stats.total()
    targets = stage_targets(configuration, stats.targeted)
    stages = []
    for index, target in enumerate(targets):
        counts = stats.stage(index)
        if configuration.stage > index or configuration.state is ConfigurationState.COMPLETED:
            state = "done"
        elif configuration.stage == index and configuration.state is not ConfigurationState.DRAFT:
            state = configuration.state.value
        else:
            state = "waiting"
        stages.append(
            {
                "index": index,
                "target": target - (targets[index - 1] if index else 0),
                "admitted": counts.admitted,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "pending": counts.pending,
                "superseded": counts.superseded,
                "state": state,
            }
        )
    return {
        "targeted": stats.targeted,
        "waiting": stats.waiting,
        "applied": total.admitted - total.superseded,
        "succeeded": total.succeeded,
        "failed": total.failed,
        "pending": total.pending,
        "superseded": total.superseded,
        "rolledBack": total.rolled_back,
        "custom": {name: stats.metrics.get(name, 0) for name in configuration.spec.metrics},
        "stages": stages,
        "complete": reconciler.scanned(configuration.id),
    }


def view(reconciler: Reconciler, configuration: Configuration) -> dict[str, Any]:
    body = configuration.spec.model_dump(mode="json", by_alias=True)
    body.update(
        state=configuration.state.value,
        stage=configuration.stage,
        reason=configuration.reason,
        createdAt=configuration.created_at,
        activatedAt=configuration.activated_at,
        updatedAt=configuration.updated_at,
        progress=metrics_view(reconciler, configuration),
    )
    return body


@router.post("", status_code=201)
async def create(request: Request, body: Annotated[Any, Body()]) -> dict[str, Any]:
    """A new configuration, in draft: nothing is written to twins until it is activated."""
    configuration = new_configuration(_spec(request, body), int(time.time()))
    await _store(request).create(configuration)
    return view(_reconciler(request), configuration)


@router.get("")
async def list_configurations(request: Request) -> dict[str, Any]:
    reconciler = _reconciler(request)
    items = sorted(reconciler.store.all(), key=lambda c: c.created_at)
    return {"items": [view(reconciler, c) for c in items]}


@router.get("/{configuration_id}")
async def get(request: Request, configuration_id: str) -> dict[str, Any]:
    return view(_reconciler(request), _store(request).get(configuration_id))


@router.put("/{configuration_id}")
async def edit(request: Request, configuration_id: str, body: Annotated[Any, Body()]) -> dict[str, Any]:
    """Replace a draft's spec (409 once active: create a new configuration instead)."""
    spec = _spec(request, body)
    if spec.id != configuration_id:
        raise bad_request(f"the body's id {spec.id!r} is not the path's {configuration_id!r}")
    updated = replace_spec(_store(request).get(configuration_id), spec, int(time.time()))
    await _save(request, updated)
    return view(_reconciler(request), updated)


@router.delete("/{configuration_id}", status_code=204)
async def delete(request: Request, configuration_id: str) -> Response:
    check_deletable(_store(request).get(configuration_id))
    await _store(request).delete(configuration_id)
    _reconciler(request).configuration_deleted(configuration_id)
    return Response(status_code=204)


async def _act(request: Request, configuration_id: str, action: Action, rollback: bool = True) -> dict[str, Any]:
    updated = apply_action(_store(request).get(configuration_id), action, int(time.time()), rollback)
    await _save(request, updated)
    _reconciler(request).configuration_changed(updated, scan=action == "activate")
    return view(_reconciler(request), updated)


async def _save(request: Request, configuration: Configuration) -> None:
    try:
        await _store(request).save(configuration)
    except WriteFailed:
        raise conflict(f"configuration {configuration.id} changed meanwhile; read it and try again") from None


@router.post("/{configuration_id}/activate")
async def activate(request: Request, configuration_id: str) -> dict[str, Any]:
    """Start the rollout: the fleet is scanned for targeted twins, then stage 1 begins."""
    return await _act(request, configuration_id, "activate")


@router.post("/{configuration_id}/pause")
async def pause(request: Request, configuration_id: str) -> dict[str, Any]:
    """Admit no more twins (those applied keep the content; twins that stop matching still leave)."""
    return await _act(request, configuration_id, "pause")


@router.post("/{configuration_id}/resume")
async def resume(request: Request, configuration_id: str) -> dict[str, Any]:
    """Carry on; a stage that halted on its failures is accepted as it is."""
    return await _act(request, configuration_id, "resume")


@router.post("/{configuration_id}/cancel")
async def cancel(request: Request, configuration_id: str, body: CancelBody | None = None) -> dict[str, Any]:
    """Stop for good (aborted); with rollback content, the twins it reached get it unless
    `{"rollback": false}`."""
    return await _act(request, configuration_id, "cancel", body.rollback if body else True)


@router.get("/{configuration_id}/metrics")
async def metrics(request: Request, configuration_id: str) -> dict[str, Any]:
    return metrics_view(_reconciler(request), _store(request).get(configuration_id))


@router.get("/{configuration_id}/history")
async def history(request: Request, configuration_id: str) -> dict[str, Any]:
    """Every decision of the rollout, oldest first, each saying why."""
    configuration = _store(request).get(configuration_id)
    return {"items": [h.model_dump() for h in configuration.history]}


@router.get("/{configuration_id}/devices")
async def devices(
    request: Request,
    configuration_id: str,
    status: Annotated[Outcome | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Targeted twins and where each stands (waiting, pending, succeeded, failed, …)."""
    _store(request).get(configuration_id)
    items = []
    for device_id, (outcome, stage, reason) in sorted(_reconciler(request).membership.members(configuration_id)):
        if status is not None and outcome is not status:
            continue
        items.append({"deviceId": device_id, "status": outcome.value, "stage": stage, "reason": reason})
        if len(items) >= limit:
            break
    return {"items": items}
