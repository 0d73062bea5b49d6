"""The device side of the twin contract, pure and transport-agnostic: what a device knows of its
twin, which deltas and documents to take, what to apply, and what to report afterwards.

Drives both the device agent (handlers that touch files, ConfigMaps, installers) and the fleet
simulator (state in memory). A device applies desired values per top-level key; a key without a
handler is reported as unsupported, a handler that fails reports its reason under its key, so the
twin shows why a device diverges instead of diverging silently.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from services.domain.json_values import JsonObject, json_equal
from services.domain.twin.merge import merge_patch

FAILED = "FAILED"
UNSUPPORTED = "UNSUPPORTED"


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What a device knows of its twin: the desired state it has taken in, the reported state the
    twin holds for it, and the twin version its desired knowledge is from."""

    desired: JsonObject = field(default_factory=dict)
    reported: JsonObject = field(default_factory=dict)
    version: int = 0

    def to_json(self) -> JsonObject:
        return {"desired": self.desired, "reported": self.reported, "version": self.version}

    @staticmethod
    def from_json(value: JsonObject | None) -> DeviceView:
        if not value:
            return DeviceView()
        return DeviceView(value.get("desired") or {}, value.get("reported") or {}, int(value.get("version", 0)))


def take_document(view: DeviceView, document: JsonObject) -> DeviceView | None:
    """Take a full document (a `/get/accepted` payload: `state.desired`, `state.reported`,
    `version`). None when it is older than what the device already knows."""
    version = int(document.get("version", 0))
    if version < view.version:
        return None
    state = document.get("state") or {}
    return DeviceView(state.get("desired") or {}, state.get("reported") or {}, version)


def take_delta(view: DeviceView, message: JsonObject) -> DeviceView | None:
    """Take a `/delta` message. None (discard) unless its version is newer than what the device
    knows: a redelivered or overtaken delta must never undo a newer desired state.

    A delta holds only the desired leaves that differ from reported, so it is merged into the
    desired state the device knows (desired keys removed since are only learnt from a document).
    """
    version = int(message.get("version", 0))
    if version <= view.version:
        return None
    return replace(view, desired=merge_patch(view.desired, message.get("state") or {}), version=version)


def took_report(view: DeviceView, reported_patch: JsonObject) -> DeviceView:
    """The view after the twin accepted a reported-state patch."""
    return replace(view, reported=merge_patch(view.reported, reported_patch))


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    apply: dict[str, Any]
    """Top-level key -> desired value, for keys whose handler's current value differs."""
    unsupported: list[str]
    """Desired keys no handler takes."""


Satisfied = Callable[[Any, Any], bool]
"""(value in effect, desired value) -> nothing to apply."""


def plan_apply(
    view: DeviceView,
    current: Mapping[str, Any],
    supported: Collection[str],
    satisfied: Mapping[str, Satisfied] | None = None,
) -> ApplyPlan:
    """What to apply so the device matches its desired state. `current` is each handler's value
    now in effect (None when it has none); applying is idempotent, so equal values are skipped.
    A handler whose reported value is not the desired value itself (a software update reports
    status and progress) says by `satisfied` when there is nothing left to do."""
    apply: dict[str, Any] = {}
    unsupported: list[str] = []
    for key, want in view.desired.items():
        done = (satisfied or {}).get(key, json_equal)
        if key not in supported:
            unsupported.append(key)
        elif not done(current.get(key), want):
            apply[key] = want
    return ApplyPlan(apply, unsupported)


@dataclass(frozen=True, slots=True)
class Applied:
    value: Any
    """The value now in effect (what to report)."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


Outcome = Applied | Failed


def outcome_value(outcome: Outcome) -> Any:
    """What to report under a key for an outcome."""
    if isinstance(outcome, Applied):
        return outcome.value
    return {"status": FAILED, "reason": outcome.reason}


def unsupported_value(key: str) -> JsonObject:
    return {"status": UNSUPPORTED, "reason": f"this device has no handler for {key!r}"}


def report_for(
    view: DeviceView, current: Mapping[str, Any], outcomes: Mapping[str, Outcome], unsupported: Collection[str]
) -> JsonObject:
    """The reported-state patch that makes the twin show, for every handled key, the value now in
    effect (or the failure), and for every unsupported key that it is unsupported. Keys the device
    does not manage are left alone; unchanged keys are left out (empty patch: nothing to send)."""
    target: JsonObject = {}
    for key, value in current.items():
        target[key] = outcome_value(outcomes[key]) if key in outcomes else value
    for key in unsupported:
        target[key] = unsupported_value(key)
    patch: JsonObject = {}
    for key, value in target.items():
        if key in view.reported and json_equal(view.reported[key], value):
            continue
        if value is None and key not in view.reported:
            continue
        patch[key] = diff_patch(view.reported.get(key), value)
    return patch


def diff_patch(old: Any, new: Any) -> Any:
    """A JSON merge patch turning `old` into `new` (nulls for removed keys, nested objects
    diffed); for non-objects it is `new` itself."""
    if not isinstance(new, dict):
        return new
    if not isinstance(old, dict):
        # Replacing a scalar by an object needs the scalar gone first: an object patch on a
        # scalar merges into nothing, which is the same as writing the object.
        return {k: v for k, v in new.items() if v is not None}
    patch: JsonObject = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key in old and json_equal(old[key], value):
            continue
        patch[key] = diff_patch(old.get(key), value)
    return patch


def apply_in_memory(state: JsonObject, plan: ApplyPlan) -> tuple[JsonObject, dict[str, Outcome]]:
    """Apply a plan to a device whose state is a plain document (the fleet simulator)."""
    outcomes: dict[str, Outcome] = {key: Applied(value) for key, value in plan.apply.items()}
    return {**state, **plan.apply}, outcomes
