"""REST API: create, edit (drafts only), activate, pause, resume, cancel and delete configurations;
retry failed twins, trigger download-only installs, release a quarantined cohort, preview (dry
run) before activating; read their metrics, per-stage counts, history and per-twin status. The
shapes are `services.contracts.rollout`; the numbers come from `services.domain.rollout.progress`."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ValidationError

from services.contracts.rollout import (
    CancelBody,
    ConfigurationList,
    ConfigurationSpec,
    ConfigurationState,
    ConfigurationView,
    HistoryList,
    InstallBody,
    MemberList,
    MemberStatus,
    PreviewBody,
    PreviewView,
    ReleaseBody,
    RetryBody,
    RolloutProgress,
)
from services.domain.access import Scope, covers
from services.domain.errors import bad_request, conflict, forbidden
from services.domain.rollout.configuration import (
    Action,
    Configuration,
    apply_action,
    check_deletable,
    new_configuration,
    release_cohort,
    replace_spec,
    request_retry,
    trigger_install,
    validate_spec,
)
from services.domain.rollout.progress import rollout_progress
from services.domain.rollout.twin_plan import Outcome
from services.platform.auth import Caller
from services.platform.http import provided
from services.platform.sidecar import WriteFailed
from services.rollout.metrics import forget, record_operator
from services.rollout.preview import preview as dry_run
from services.rollout.reconciler import Reconciler
from services.rollout.settings import RolloutSettings

M = TypeVar("M", bound=BaseModel)

LOAD_WAIT_SECONDS = 30.0
Rollouts = Annotated[Reconciler, provided(Reconciler)]
Settings = Annotated[RolloutSettings, provided(RolloutSettings)]


async def _loaded(reconciler: Rollouts) -> None:
    """Answer only once the stored configurations are loaded (just after a restart they are not):
    a 503 beats a wrong 404."""
    try:
        await asyncio.wait_for(reconciler.ready.wait(), LOAD_WAIT_SECONDS)
    except TimeoutError:
        raise HTTPException(503, "configurations are still loading; try again") from None


async def _in_scope(request: Request, reconciler: Rollouts, caller: Caller) -> None:
    """A scoped caller reaches only configurations created within its scope (403 otherwise)."""
    configuration_id = request.path_params.get("configuration_id")
    if configuration_id is not None and caller.scope:
        configuration = reconciler.store.get(configuration_id)
        if not covers(caller.scope, configuration.scope):
            raise forbidden(f"configuration {configuration_id} is not within your scope")


router = APIRouter(
    prefix="/v1/configurations", tags=["configurations"], dependencies=[Depends(_loaded), Depends(_in_scope)]
)


def _parse(model: type[M], body: Any) -> M:
    """A request body as `model`, or a 400 naming the first problem (changing nothing)."""
    try:
        return model.model_validate({} if body is None else body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise bad_request(f"{where}: {first['msg']}") from None


def _spec(settings: RolloutSettings, body: Any) -> ConfigurationSpec:
    spec = _parse(ConfigurationSpec, body)
    validate_spec(spec, settings.limits())
    return spec


def progress(reconciler: Reconciler, configuration: Configuration) -> RolloutProgress:
    stats = reconciler.membership.stats(configuration.id)
    outside = reconciler.outside_window.get(configuration.id, 0)
    return rollout_progress(configuration, stats, reconciler.scanned(configuration.id), outside)


def view(reconciler: Reconciler, configuration: Configuration) -> ConfigurationView:
    return ConfigurationView(
        **configuration.spec.model_dump(),
        state=configuration.state,
        stage=configuration.stage,
        reason=configuration.reason,
        hold=configuration.hold,
        soak_since=configuration.soak_since,
        quarantined=configuration.quarantined,
        health_checks=configuration.health_checks,
        install_triggers=configuration.install_triggers,
        created_at=configuration.created_at,
        activated_at=configuration.activated_at,
        updated_at=configuration.updated_at,
        progress=progress(reconciler, configuration),
        scope=configuration.scope,
    )


@router.post("", status_code=201, response_model=ConfigurationView)
async def create(
    reconciler: Rollouts, settings: Settings, caller: Caller, body: Annotated[Any, Body()]
) -> ConfigurationView:
    """A new configuration, in draft: nothing is written to twins until it is activated. A scoped
    caller's configuration targets only twins within its scope."""
    configuration = new_configuration(_spec(settings, body), int(time.time()), caller.scope)
    await reconciler.store.create(configuration)
    return view(reconciler, configuration)


@router.get("", response_model=ConfigurationList)
async def list_configurations(reconciler: Rollouts, caller: Caller) -> ConfigurationList:
    items = sorted((c for c in reconciler.store.all() if covers(caller.scope, c.scope)), key=lambda c: c.created_at)
    return ConfigurationList(items=[view(reconciler, c) for c in items])


@router.get("/{configuration_id}", response_model=ConfigurationView)
async def get(reconciler: Rollouts, configuration_id: str) -> ConfigurationView:
    return view(reconciler, reconciler.store.get(configuration_id))


@router.put("/{configuration_id}", response_model=ConfigurationView)
async def edit(
    reconciler: Rollouts, settings: Settings, configuration_id: str, body: Annotated[Any, Body()]
) -> ConfigurationView:
    """Replace a draft's spec (409 once active: create a new configuration instead)."""
    spec = _spec(settings, body)
    if spec.id != configuration_id:
        raise bad_request(f"the body's id {spec.id!r} is not the path's {configuration_id!r}")
    updated = replace_spec(reconciler.store.get(configuration_id), spec, int(time.time()))
    await _save(reconciler, updated)
    return view(reconciler, updated)


@router.delete("/{configuration_id}", status_code=204)
async def delete(reconciler: Rollouts, configuration_id: str) -> Response:
    check_deletable(reconciler.store.get(configuration_id))
    await reconciler.store.delete(configuration_id)
    reconciler.configuration_deleted(configuration_id)
    forget(configuration_id)
    return Response(status_code=204)


async def _act(
    reconciler: Reconciler, configuration_id: str, action: Action, rollback: bool = True
) -> ConfigurationView:
    updated = apply_action(reconciler.store.get(configuration_id), action, int(time.time()), rollback)
    await _save(reconciler, updated)
    reconciler.configuration_changed(updated, scan=action == "activate")
    return view(reconciler, updated)


async def _save(reconciler: Reconciler, configuration: Configuration) -> None:
    try:
        await reconciler.store.save(configuration)
    except WriteFailed:
        raise conflict(f"configuration {configuration.id} changed meanwhile; read it and try again") from None


@router.post("/{configuration_id}/activate", response_model=ConfigurationView)
async def activate(reconciler: Rollouts, configuration_id: str) -> ConfigurationView:
    """Start the rollout: the fleet is scanned for targeted twins, then stage 1 begins."""
    return await _act(reconciler, configuration_id, "activate")


@router.post("/{configuration_id}/pause", response_model=ConfigurationView)
async def pause(reconciler: Rollouts, configuration_id: str) -> ConfigurationView:
    """Admit no more twins (those applied keep the content; twins that stop matching still leave)."""
    return await _act(reconciler, configuration_id, "pause")


@router.post("/{configuration_id}/resume", response_model=ConfigurationView)
async def resume(reconciler: Rollouts, configuration_id: str) -> ConfigurationView:
    """Carry on; a stage that halted on its failures is accepted as it is."""
    return await _act(reconciler, configuration_id, "resume")


@router.post("/{configuration_id}/cancel", response_model=ConfigurationView)
async def cancel(reconciler: Rollouts, configuration_id: str, body: CancelBody | None = None) -> ConfigurationView:
    """Stop for good (aborted); with rollback content, the twins it reached get it unless
    `{"rollback": false}`."""
    return await _act(reconciler, configuration_id, "cancel", body.rollback if body else True)


async def _change(reconciler: Reconciler, updated: Configuration, decision: str) -> ConfigurationView:
    await _save(reconciler, updated)
    record_operator(updated, decision)
    reconciler.configuration_changed(updated)
    return view(reconciler, updated)


@router.post("/{configuration_id}/retry", response_model=ConfigurationView)
async def retry(reconciler: Rollouts, configuration_id: str, body: Annotated[Any, Body()] = None) -> ConfigurationView:
    """Try failed twins again now — `{"devices": [...]}`, or every failed twin — once each, whatever
    their failure and attempts so far (a refused write excepted)."""
    asked = _parse(RetryBody, body)
    updated = request_retry(reconciler.store.get(configuration_id), asked.devices, int(time.time()))
    return await _change(reconciler, updated, "retry_asked")


@router.post("/{configuration_id}/install", response_model=ConfigurationView)
async def install(reconciler: Rollouts, configuration_id: str, body: Annotated[Any, Body()]) -> ConfigurationView:
    """Install a download-only update: `{"devices": [...]}`, `{"stage": n}` or `{"all": true}`."""
    asked = _parse(InstallBody, body)
    updated = trigger_install(reconciler.store.get(configuration_id), asked, int(time.time()))
    return await _change(reconciler, updated, "install_triggered")


@router.post("/{configuration_id}/release", response_model=ConfigurationView)
async def release(reconciler: Rollouts, configuration_id: str, body: Annotated[Any, Body()]) -> ConfigurationView:
    """Admit a quarantined cohort again (`{"cohort": "tags.hwRev=B"}`); its failures count again."""
    asked = _parse(ReleaseBody, body)
    updated = release_cohort(reconciler.store.get(configuration_id), asked.cohort, int(time.time()))
    return await _change(reconciler, updated, "released")


@router.post("/preview", response_model=PreviewView)
async def preview_spec(
    reconciler: Rollouts, settings: Settings, caller: Caller, body: Annotated[Any, Body()]
) -> PreviewView:
    """A dry run of a spec (`{"spec": {...}}`, not stored): the twins it would select, the keys each
    would win or lose, the projected stage timeline under its pace and windows."""
    asked = _parse(PreviewBody, body)
    if asked.spec is None:
        raise bad_request("spec: a configuration spec to preview is required (or POST …/{id}/preview)")
    return await _preview(reconciler, settings, _spec(settings, asked.spec), asked, caller.scope)


@router.post("/{configuration_id}/preview", response_model=PreviewView)
async def preview_stored(
    reconciler: Rollouts, settings: Settings, configuration_id: str, body: Annotated[Any, Body()] = None
) -> PreviewView:
    """A dry run of a stored draft, as if it were activated now (or at `startAt`)."""
    asked = _parse(PreviewBody, body)
    if asked.spec is not None:
        raise bad_request("spec: a stored configuration is previewed as stored; POST /v1/configurations/preview")
    configuration = reconciler.store.get(configuration_id)
    if configuration.state is not ConfigurationState.DRAFT:
        raise conflict(f"configuration {configuration_id} is {configuration.state}: a preview is for drafts")
    return await _preview(reconciler, settings, configuration.spec, asked, configuration.scope)


async def _preview(
    reconciler: Reconciler, settings: RolloutSettings, spec: ConfigurationSpec, body: PreviewBody, scope: Scope
) -> PreviewView:
    return await dry_run(
        spec,
        body,
        dict(reconciler.compiled),
        reconciler.twins,
        page=settings.rollout_page,
        tick=settings.rollout_tick_seconds,
        scope=scope,
    )


@router.get("/{configuration_id}/metrics", response_model=RolloutProgress)
async def metrics(reconciler: Rollouts, configuration_id: str) -> RolloutProgress:
    return progress(reconciler, reconciler.store.get(configuration_id))


@router.get("/{configuration_id}/history", response_model=HistoryList)
async def history(reconciler: Rollouts, configuration_id: str) -> HistoryList:
    """Every decision of the rollout, oldest first, each saying why."""
    return HistoryList(items=reconciler.store.get(configuration_id).history)


@router.get("/{configuration_id}/devices", response_model=MemberList)
async def devices(
    reconciler: Rollouts,
    configuration_id: str,
    status: Annotated[Outcome | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemberList:
    """Targeted twins and where each stands (waiting, pending, succeeded, failed, retrying, …), with
    their attempts, failure kind, next retry and update phase."""
    reconciler.store.get(configuration_id)
    items: list[MemberStatus] = []
    for device_id, placement in sorted(reconciler.membership.members(configuration_id)):
        if status is not None and placement.outcome is not status:
            continue
        items.append(
            MemberStatus(
                device_id=device_id,
                status=placement.outcome.value,
                stage=placement.stage,
                reason=placement.reason,
                failure=placement.failure,
                attempts=placement.attempt,
                retry_at=placement.retry_at,
                phase=placement.phase,
            )
        )
        if len(items) >= limit:
            break
    return MemberList(items=items)
