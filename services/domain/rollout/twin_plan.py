"""One twin under configurations: what the rollout knows of it, and the write that brings it in line.

The twin itself records which configurations were applied to it (`TwinDocument.configurations`, one
*mark* per configuration: status, the desired keys it won, its stage, when), written in the same
twin version as the desired keys. So the twin alone says what was done: the rollout app can die at
any instant and, reading twins again, neither applies a configuration twice nor skips one.

Conflicts are per top-level desired key: among the configurations that target the twin and were
admitted to it, the highest priority wins, ties → the newest. `plan_twin` is idempotent: planning
the twin its own write produced yields nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.contracts.rollout import ConfigurationState
from services.domain.access import in_scope
from services.domain.device.core import FAILED, UNSUPPORTED
from services.domain.json_values import JsonObject
from services.domain.rollout.conditions import matches, twin_variables
from services.domain.rollout.configuration import CompiledConfiguration
from services.domain.software.twin_key import UpdateStatus, desired_artifact


class MarkStatus(StrEnum):
    APPLIED = "applied"
    """Its winning keys are written into desired."""
    SUPERSEDED = "superseded"
    """Admitted, but configurations of higher priority won every key."""
    ROLLED_BACK = "rolled_back"
    ERROR = "error"
    """The twin-store refused the write (e.g. the content would make the twin too large)."""


@dataclass(frozen=True, slots=True)
class Mark:
    status: MarkStatus
    keys: tuple[str, ...] = ()
    stage: int = 0
    at: int = 0
    reason: str = ""

    def to_json(self) -> JsonObject:
        value: JsonObject = {"status": self.status.value, "keys": list(self.keys), "stage": self.stage, "at": self.at}
        if self.reason:
            value["reason"] = self.reason
        return value

    @classmethod
    def from_json(cls, value: Any) -> Mark | None:
        """A mark as stored on a twin; None for anything malformed (treated as absent)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                status=MarkStatus(value["status"]),
                keys=tuple(str(k) for k in value.get("keys", ())),
                stage=int(value.get("stage", 0)),
                at=int(value.get("at", 0)),
                reason=str(value.get("reason", "")),
            )
        except (KeyError, ValueError, TypeError):
            return None


class Outcome(StrEnum):
    """Where one twin stands in one configuration's rollout."""

    WAITING = "waiting"
    """Targeted, not yet reached by the rollout."""
    PENDING = "pending"
    """Applied; the device has not yet conformed or failed."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Hit:
    """One configuration's conditions evaluated on one twin."""

    targeted: bool
    success: bool = False
    failure: bool = False
    metrics: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TwinFacts:
    """What the rollout keeps per twin: version, marks, and each relevant configuration's
    evaluation. A configuration absent from `hits` neither targets the twin nor marked it."""

    device_id: str
    version: int
    marks: Mapping[str, Mark] = field(default_factory=dict)
    hits: Mapping[str, Hit] = field(default_factory=dict)

    def outcome(self, configuration: CompiledConfiguration, now: int) -> tuple[Outcome, int, str] | None:
        """(outcome, stage, reason) of this twin in `configuration`; None when it is not a member
        (not targeted; a twin that stopped matching leaves the counts at once)."""
        hit = self.hits.get(configuration.id)
        if hit is None or not hit.targeted:
            return None
        mark = self.marks.get(configuration.id)
        if mark is None:
            return Outcome.WAITING, -1, ""
        if mark.status is MarkStatus.SUPERSEDED:
            return Outcome.SUPERSEDED, mark.stage, ""
        if mark.status is MarkStatus.ROLLED_BACK:
            return Outcome.ROLLED_BACK, mark.stage, ""
        if mark.status is MarkStatus.ERROR:
            return Outcome.FAILED, mark.stage, mark.reason
        if hit.failure:
            return Outcome.FAILED, mark.stage, "failure condition met"
        if hit.success:
            return Outcome.SUCCEEDED, mark.stage, ""
        timeout = configuration.configuration.spec.rollout.device_timeout_seconds
        if timeout is not None and now - mark.at >= timeout:
            return Outcome.FAILED, mark.stage, f"no success within {timeout}s"
        return Outcome.PENDING, mark.stage, ""


@dataclass(frozen=True, slots=True)
class TwinWrite:
    """One conditional write to a twin: desired keys and marks, in one version."""

    device_id: str
    expected_version: int
    desired: JsonObject
    configurations: JsonObject
    admitted: Mapping[str, int] = field(default_factory=dict)
    """Configurations this write admits the twin to, with their stage (for the caller's books)."""


# -- evaluation ------------------------------------------------------------------------------------
def parse_marks(configurations: Any) -> dict[str, Mark]:
    if not isinstance(configurations, dict):
        return {}
    return {cid: mark for cid, value in configurations.items() if (mark := Mark.from_json(value)) is not None}


def evaluate_twin(
    device_id: str,
    version: int,
    tags: JsonObject,
    desired: JsonObject,
    reported: JsonObject,
    configurations: JsonObject,
    compiled: Sequence[CompiledConfiguration],
) -> TwinFacts:
    """Evaluate every configuration's conditions on one twin (evaluation never raises)."""
    marks = parse_marks(configurations)
    variables = twin_variables(device_id, tags, reported, desired)
    hits: dict[str, Hit] = {}
    for c in compiled:
        targeted = in_scope(tags, c.scope) and matches(c.target, variables)
        mark = marks.get(c.id)
        if not targeted and mark is None:
            continue
        success = failure = False
        names: frozenset[str] = frozenset()
        if targeted:
            names = frozenset(name for name, condition in c.metrics.items() if matches(condition, variables))
            if mark is not None and mark.status is MarkStatus.APPLIED:
                won = {k: c.configuration.spec.content[k] for k in mark.keys if k in c.configuration.spec.content}
                success = matches(c.success, variables) if c.success is not None else conforms(reported, won)
                failure = matches(c.failure, variables) if c.failure is not None else reports_failure(reported, won)
        hits[c.id] = Hit(targeted, success, failure, names)
    return TwinFacts(device_id, version, marks, hits)


def conforms(reported: Any, wanted: Any) -> bool:
    """Whether `reported` holds `wanted` (objects: every wanted key conforms, a wanted null meaning
    the key is absent; anything else: equal as JSON, where `true` is not `1`)."""
    if isinstance(wanted, dict):
        if not isinstance(reported, dict):
            return False
        return all(
            (key not in reported) if value is None else (key in reported and conforms(reported[key], value))
            for key, value in wanted.items()
        )
    return isinstance(reported, bool) == isinstance(wanted, bool) and bool(reported == wanted)


def reports_failure(reported: JsonObject, wanted: JsonObject) -> bool:
    """Whether the device reported one of the wanted keys as FAILED, UNSUPPORTED or (a software
    update) ROLLED_BACK — for a software update, of the artifact wanted, not an earlier one."""
    for key in wanted:
        value = reported.get(key)
        if not isinstance(value, dict) or value.get("status") not in (FAILED, UNSUPPORTED, UpdateStatus.ROLLED_BACK):
            continue
        if "attempt" in value and value["attempt"] != desired_artifact(wanted[key]):
            continue
        return True
    return False


# -- planning --------------------------------------------------------------------------------------
def plan_twin(
    facts: TwinFacts,
    configurations: Mapping[str, CompiledConfiguration],
    admit: Mapping[str, int],
    now: int,
) -> TwinWrite | None:
    """The write that brings one twin in line with the configurations, or None when it is.

    `admit` names configurations the rollout now extends to this twin (id → stage); they count only
    if they target it. Live configurations contribute where they target the twin and are admitted;
    each contested key goes to the highest `precedence()`. A live configuration's key on a twin it
    no longer targets is handed to the next contributor or removed. Aborted configurations leave
    their keys as they are, unless rolling back (then their rollback content is written once)."""
    contributing: dict[str, CompiledConfiguration] = {}
    for cid, c in configurations.items():
        state = c.configuration.state
        hit = facts.hits.get(cid)
        if not state.live or hit is None or not hit.targeted:
            continue
        mark = facts.marks.get(cid)
        if (mark is not None and mark.status in (MarkStatus.APPLIED, MarkStatus.SUPERSEDED)) or (
            mark is None and cid in admit
        ):
            contributing[cid] = c

    winners: dict[str, CompiledConfiguration] = {}
    for c in sorted(contributing.values(), key=lambda c: c.configuration.precedence()):
        for key in c.configuration.spec.content:
            winners[key] = c  # ascending precedence: the last one written is the winner
    owners = {
        key: cid
        for cid, mark in facts.marks.items()
        if mark.status is MarkStatus.APPLIED and cid in configurations and configurations[cid].configuration.state.live
        for key in mark.keys
    }

    desired: JsonObject = {}
    for key, c in winners.items():
        if owners.get(key) != c.id:
            desired[key] = c.configuration.spec.content[key]
    for key in owners:
        if key not in winners:
            desired[key] = None

    marks: JsonObject = {}
    for cid in contributing:
        won = tuple(sorted(k for k, w in winners.items() if w.id == cid))
        status = MarkStatus.APPLIED if won else MarkStatus.SUPERSEDED
        old = facts.marks.get(cid)
        if old is not None and old.status is status and old.keys == won:
            continue
        stage = old.stage if old is not None else admit[cid]
        marks[cid] = Mark(status, won, stage, now).to_json()
    for cid, mark in facts.marks.items():
        other = configurations.get(cid)
        if other is None or cid in contributing:
            continue
        state = other.configuration.state
        hit = facts.hits.get(cid)
        targeted = hit is not None and hit.targeted
        if state.live and (mark.status in (MarkStatus.APPLIED, MarkStatus.SUPERSEDED) or not targeted):
            marks[cid] = None  # stopped matching: leaves the configuration (its keys handled above)
        elif state is ConfigurationState.ABORTED and other.configuration.rollback and mark.status is MarkStatus.APPLIED:
            for key, value in (other.configuration.spec.rollout.rollback_content or {}).items():
                if key not in winners:
                    desired[key] = value
            marks[cid] = Mark(MarkStatus.ROLLED_BACK, (), mark.stage, now).to_json()

    if not desired and not marks:
        return None
    admitted = {cid: admit[cid] for cid in contributing if cid in admit and cid not in facts.marks}
    return TwinWrite(facts.device_id, facts.version, desired, marks, admitted)


def error_marks(write: TwinWrite, reason: str, now: int) -> JsonObject:
    """Marks recording that the twin-store refused `write` for the configurations it admitted: they
    count the twin as failed instead of trying again and again."""
    return {cid: Mark(MarkStatus.ERROR, (), stage, now, reason).to_json() for cid, stage in write.admitted.items()}
