"""One twin under configurations: what the rollout knows of it, and the write that brings it in line.

The twin itself records which configurations were applied to it (`TwinDocument.configurations`, one
*mark* per configuration: status, the desired keys it won, its stage, when, its attempt and a
scheduled retry, when its install was triggered, its cohort values), written in the same twin
version as the desired keys. So the twin alone says what was done: the rollout app can die at
any instant and, reading twins again, neither applies a configuration twice nor skips one.

Conflicts are per top-level desired key: among the configurations that target the twin and were
admitted to it, the highest priority wins, ties → the newest. `plan_twin` is idempotent: planning
the twin its own write produced yields nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from services.contracts.rollout import ConfigurationState
from services.domain.access import in_scope
from services.domain.device.core import FAILED, UNSUPPORTED
from services.domain.json_values import JsonObject
from services.domain.rollout import retries
from services.domain.rollout.cohorts import cohort_value
from services.domain.rollout.conditions import matches, twin_variables
from services.domain.rollout.configuration import CompiledConfiguration, Configuration
from services.domain.rollout.schedule import DEFAULT_ZONE, admission, device_zone
from services.domain.software.twin_key import SOFTWARE_KEY, UpdateStatus, desired_artifact, verdict


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
    """When the current attempt was written (admission, a handover, a retry)."""
    reason: str = ""
    attempt: int = 1
    """1 for the first try, +1 per retry."""
    retry_at: int | None = None
    """When the next attempt is due (a retry is scheduled)."""
    install_at: int | None = None
    """Download-only configurations: when the install was triggered."""
    request: int = 0
    """The last operator retry request (its serial) this twin was retried for."""
    cohort: Mapping[str, str] = field(default_factory=dict)
    """The twin's cohort values when it was admitted (the configuration's cohort keys)."""

    def to_json(self) -> JsonObject:
        value: JsonObject = {"status": self.status.value, "keys": list(self.keys), "stage": self.stage, "at": self.at}
        if self.reason:
            value["reason"] = self.reason
        if self.attempt != 1:
            value["attempt"] = self.attempt
        for name, extra in (("retryAt", self.retry_at), ("installAt", self.install_at)):
            if extra is not None:
                value[name] = extra
        if self.request:
            value["request"] = self.request
        if self.cohort:
            value["cohort"] = dict(self.cohort)
        return value

    def patch_from(self, old: Mark | None) -> JsonObject:
        """This mark as a merge patch over `old` (fields it no longer has are removed)."""
        value = self.to_json()
        if old is not None:
            value |= {key: None for key in old.to_json() if key not in value}
        return value

    @classmethod
    def from_json(cls, value: Any) -> Mark | None:
        """A mark as stored on a twin; None for anything malformed (treated as absent)."""
        if not isinstance(value, dict):
            return None
        try:
            cohort = value.get("cohort") or {}
            return cls(
                status=MarkStatus(value["status"]),
                keys=tuple(str(k) for k in value.get("keys", ())),
                stage=int(value.get("stage", 0)),
                at=int(value.get("at", 0)),
                reason=str(value.get("reason", "")),
                attempt=max(1, int(value.get("attempt", 1))),
                retry_at=None if value.get("retryAt") is None else int(value["retryAt"]),
                install_at=None if value.get("installAt") is None else int(value["installAt"]),
                request=int(value.get("request", 0)),
                cohort={str(k): str(v) for k, v in cohort.items()} if isinstance(cohort, dict) else {},
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            return None


class Outcome(StrEnum):
    """Where one twin stands in one configuration's rollout."""

    WAITING = "waiting"
    """Targeted, not yet reached by the rollout."""
    QUARANTINED = "quarantined"
    """Targeted, not reached, and in a quarantined cohort: it is not admitted."""
    PENDING = "pending"
    """Applied; the device has not yet conformed or failed."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    """Failed, and the retry policy (or an operator) tries it again."""
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"


class Placement(NamedTuple):
    """Where one twin stands in one configuration, and why."""

    outcome: Outcome
    stage: int
    reason: str = ""
    failure: str = ""
    """The failure's kind (download, install, timeout, …) when failed or retrying."""
    attempt: int = 0
    retry_at: int | None = None
    """When retrying: when the next attempt is due (None: not yet scheduled, or due now)."""
    phase: str = ""
    """The device's update phase (e.g. WAITING_FOR_CONSENT) while it is pending or succeeded."""
    quarantined: bool = False
    """In a quarantined cohort: not admitted, and its failures halt nothing."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One configuration's conditions evaluated on one twin."""

    targeted: bool
    success: bool = False
    failure: bool = False
    metrics: frozenset[str] = frozenset()
    failure_kind: str = ""
    reason: str = ""
    phase: str = ""
    unhealthy: bool = False
    """The configuration's health gate holds the twin unhealthy (its `unhealthy` condition)."""
    zone: str = DEFAULT_ZONE
    """The time zone the twin's maintenance windows are in."""
    cohort: tuple[tuple[str, str], ...] = ()
    """The twin's values of the configuration's cohort keys, now."""

    def unjudged(self) -> Hit:
        """The same twin before the device answered the write just made."""
        return replace(self, success=False, failure=False, failure_kind="", reason="", phase="")


@dataclass(frozen=True, slots=True)
class TwinFacts:
    """What the rollout keeps per twin: version, marks, and each relevant configuration's
    evaluation. A configuration absent from `hits` neither targets the twin nor marked it."""

    device_id: str
    version: int
    marks: Mapping[str, Mark] = field(default_factory=dict)
    hits: Mapping[str, Hit] = field(default_factory=dict)

    def outcome(self, configuration: CompiledConfiguration, now: int) -> Placement | None:
        """Where this twin stands in `configuration`; None when it is not a member (not targeted;
        a twin that stopped matching leaves the counts at once)."""
        hit = self.hits.get(configuration.id)
        if hit is None or not hit.targeted:
            return None
        config = configuration.configuration
        mark = self.marks.get(configuration.id)
        if mark is None:
            if config.in_quarantine(dict(hit.cohort)) is not None:
                return Placement(Outcome.QUARANTINED, -1, quarantined=True)
            return Placement(Outcome.WAITING, -1)
        quarantined = config.in_quarantine(dict(mark.cohort)) is not None
        kept = Placement(Outcome.PENDING, mark.stage, attempt=mark.attempt, quarantined=quarantined)
        if mark.status is MarkStatus.SUPERSEDED:
            return kept._replace(outcome=Outcome.SUPERSEDED)
        if mark.status is MarkStatus.ROLLED_BACK:
            return kept._replace(outcome=Outcome.ROLLED_BACK)
        if mark.status is MarkStatus.ERROR:
            return kept._replace(outcome=Outcome.FAILED, reason=mark.reason, failure=retries.REFUSED)
        if hit.failure:
            failed = kept._replace(
                outcome=Outcome.FAILED,
                reason=hit.reason or "failure condition met",
                failure=hit.failure_kind or retries.CONDITION,
                phase=hit.phase,
            )
            return _retrying(config, self.device_id, mark, failed)
        if hit.success:
            return kept._replace(outcome=Outcome.SUCCEEDED, phase=hit.phase)
        timeout = config.spec.rollout.device_timeout_seconds
        if timeout is not None and now - mark.at >= timeout:
            failed = kept._replace(
                outcome=Outcome.FAILED, reason=f"no success within {timeout}s", failure=retries.TIMEOUT
            )
            return _retrying(config, self.device_id, mark, failed)
        return kept._replace(phase=hit.phase)


def _retrying(configuration: Configuration, device_id: str, mark: Mark, failed: Placement) -> Placement:
    """A failed placement, or retrying when an operator asked or the policy retries its kind."""
    request = configuration.retry_request(device_id)
    if retries.requested(request, mark.request, mark.at) and failed.failure != retries.REFUSED:
        return failed._replace(outcome=Outcome.RETRYING, retry_at=None)
    policy = configuration.spec.rollout.retry
    if configuration.state in (ConfigurationState.ACTIVE, ConfigurationState.COMPLETED) and retries.retries_left(
        policy, failed.failure, mark.attempt
    ):
        return failed._replace(outcome=Outcome.RETRYING, retry_at=mark.retry_at)
    return failed


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
    sections = {"tags": tags, "reported": reported, "desired": desired}
    hits: dict[str, Hit] = {}
    for c in compiled:
        targeted = in_scope(tags, c.scope) and matches(c.target, variables)
        mark = marks.get(c.id)
        if not targeted and mark is None:
            continue
        policy = c.configuration.spec.rollout
        judged = Judged()
        names: frozenset[str] = frozenset()
        unhealthy = False
        if targeted:
            names = frozenset(name for name, condition in c.metrics.items() if matches(condition, variables))
            unhealthy = c.unhealthy is not None and matches(c.unhealthy, variables)
            if mark is not None and mark.status is MarkStatus.APPLIED:
                judged = judge_keys(c, mark, reported, variables)
        cohort = tuple((key, cohort_value(sections, key)) for key in (policy.cohorts.keys if policy.cohorts else ()))
        hits[c.id] = Hit(
            targeted,
            judged.success,
            judged.failure,
            names,
            judged.kind,
            judged.reason,
            judged.phase,
            unhealthy,
            device_zone(policy.schedule, tags),
            cohort,
        )
    return TwinFacts(device_id, version, marks, hits)


@dataclass(frozen=True, slots=True)
class Judged:
    success: bool = False
    failure: bool = False
    kind: str = ""
    reason: str = ""
    phase: str = ""


def judge_keys(c: CompiledConfiguration, mark: Mark, reported: JsonObject, variables: JsonObject) -> Judged:
    """How the device answered the keys `mark` won: the configuration's own success and failure
    conditions when it has them; else software keys by their update verdict (this attempt only)
    and other keys by conformance and FAILED/UNSUPPORTED reports."""
    content = c.configuration.spec.content
    won = {k: effective_value(c.configuration, k, mark) for k in mark.keys if k in content}
    software = {k: verdict(reported.get(k), v) for k, v in won.items() if desired_artifact(v) is not None}
    plain = {k: v for k, v in won.items() if k not in software}
    phase = next((v.phase for v in software.values() if v.phase), "")
    if c.success is not None:
        success = matches(c.success, variables)
    else:
        success = all(v.state == "succeeded" for v in software.values()) and conforms(reported, plain)
    if c.failure is not None:
        failed = matches(c.failure, variables)
        return Judged(success, failed, retries.CONDITION if failed else "", "", phase)
    broken = next((v for v in software.values() if v.state == "failed"), None)
    if broken is not None:
        return Judged(success, True, broken.failure, broken.reason or broken.phase, phase)
    if reports_failure(reported, plain):
        return Judged(success, True, retries.FAILED, "", phase)
    return Judged(success, False, "", "", phase)


def effective_value(configuration: Configuration, key: str, mark: Mark) -> Any:
    """The desired value a configuration writes for `key` on a twin with `mark`: its content, and
    for a software update the attempt's `retry`, `"install": "later"` until the install is
    triggered (download-only; then `"now"`), and the auto-consent deadline."""
    value = configuration.spec.content[key]
    if key != SOFTWARE_KEY or desired_artifact(value) is None:
        return value
    extra: JsonObject = {}
    if mark.attempt > 1:
        extra["retry"] = mark.attempt - 1
    install = configuration.spec.rollout.install
    if install is not None:
        if install.later:
            # "now" rather than removing "later": a removed desired key sends devices no delta
            extra["install"] = "later" if mark.install_at is None else "now"
        if install.auto_consent_seconds is not None:
            extra["autoConsentAt"] = (mark.install_at or mark.at) + install.auto_consent_seconds
    return {**value, **extra} if extra else value


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
def _contributing(
    facts: TwinFacts, configurations: Mapping[str, CompiledConfiguration], admit: Mapping[str, int]
) -> dict[str, CompiledConfiguration]:
    """Live configurations that target the twin and were (or are now) admitted to it."""
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
    return contributing


def _winners(contributing: Mapping[str, CompiledConfiguration]) -> dict[str, CompiledConfiguration]:
    """Each contested key's winner: the highest `precedence()`."""
    winners: dict[str, CompiledConfiguration] = {}
    for c in sorted(contributing.values(), key=lambda c: c.configuration.precedence()):
        for key in c.configuration.spec.content:
            winners[key] = c  # ascending precedence: the last one written is the winner
    return winners


def contest(
    facts: TwinFacts, configurations: Mapping[str, CompiledConfiguration], candidate: str
) -> tuple[list[str], dict[str, str]]:
    """If `candidate` were admitted to this twin: the keys it would win, and those it would lose
    (key → the configuration that keeps it) — the same rule as `plan_twin`."""
    winners = _winners(_contributing(facts, configurations, {candidate: 0}))
    content = configurations[candidate].configuration.spec.content
    won = sorted(k for k in content if winners.get(k) is not None and winners[k].id == candidate)
    lost = {k: winners[k].id for k in sorted(content) if k in winners and winners[k].id != candidate}
    return won, lost


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
    their keys as they are, unless rolling back (then their rollback content is written once).
    A failed twin is retried (the mark schedules it, then the next attempt is written), and a
    download-only update is installed once the operator triggered it."""
    contributing = _contributing(facts, configurations, admit)
    winners = _winners(contributing)
    owners = {
        key: cid
        for cid, mark in facts.marks.items()
        if mark.status is MarkStatus.APPLIED and cid in configurations and configurations[cid].configuration.state.live
        for key in mark.keys
    }

    new_marks: dict[str, Mark] = {}
    for cid, c in contributing.items():
        won = tuple(sorted(k for k, w in winners.items() if w.id == cid))
        status = MarkStatus.APPLIED if won else MarkStatus.SUPERSEDED
        old = facts.marks.get(cid)
        if old is None:
            mark = Mark(status, won, admit[cid], now, cohort=dict(facts.hits[cid].cohort))
            if _install_asked(c.configuration, facts.device_id, mark):
                mark = replace(mark, install_at=now)
        elif old.status is status and old.keys == won:
            mark = _next_attempt(c, facts, old, now) or _installing(c.configuration, facts.device_id, old, now) or old
        else:
            mark = replace(old, status=status, keys=won, at=now)
        new_marks[cid] = mark

    desired: JsonObject = {}
    for key, c in winners.items():
        mark = new_marks[c.id]
        old = facts.marks.get(c.id)
        resend = old is not None and (old.attempt, old.install_at) != (mark.attempt, mark.install_at)
        if owners.get(key) != c.id or resend:
            desired[key] = _as_patch(effective_value(c.configuration, key, mark))
    for key in owners:
        if key not in winners:
            desired[key] = None

    marks: JsonObject = {
        cid: m.patch_from(facts.marks.get(cid)) for cid, m in new_marks.items() if m != facts.marks.get(cid)
    }
    for cid, mark in facts.marks.items():
        other = configurations.get(cid)
        if other is None or cid in contributing:
            continue
        state = other.configuration.state
        found = facts.hits.get(cid)
        targeted = found is not None and found.targeted
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


ROLLOUT_FIELDS = ("retry", "install", "autoConsentAt")
"""What a rollout adds to a software reference (a desired value is written as a merge patch: the
fields an attempt does not have are removed, whoever wrote them before)."""


def _as_patch(value: Any) -> Any:
    if desired_artifact(value) is None:
        return value
    return {**dict.fromkeys(ROLLOUT_FIELDS), **value}


def _next_attempt(c: CompiledConfiguration, facts: TwinFacts, mark: Mark, now: int) -> Mark | None:
    """A retrying twin's mark: its retry scheduled (first the due time is recorded), or, once due
    (or asked by an operator), its next attempt; None when nothing is to be done now."""
    if mark.status is not MarkStatus.APPLIED:
        return None
    placement = facts.outcome(c, now)
    if placement is None or placement.outcome is not Outcome.RETRYING:
        return None
    configuration = c.configuration
    request = configuration.retry_request(facts.device_id)
    if retries.requested(request, mark.request, mark.at):
        assert request is not None
        return replace(mark, attempt=mark.attempt + 1, at=now, retry_at=None, request=request.serial)
    policy = configuration.spec.rollout.retry
    assert policy is not None
    if mark.retry_at is None:
        return replace(mark, retry_at=now + round(retries.backoff(policy, mark.attempt)))
    if mark.retry_at <= now and admission(configuration.spec.rollout.schedule, facts.hits[c.id].zone, now).now:
        return replace(mark, attempt=mark.attempt + 1, at=now, retry_at=None)
    return None


def _install_asked(configuration: Configuration, device_id: str, mark: Mark) -> bool:
    install = configuration.spec.rollout.install
    return (
        install is not None
        and install.later
        and mark.install_at is None
        and configuration.install_triggers.covers(device_id, mark.stage)
    )


def _installing(configuration: Configuration, device_id: str, mark: Mark, now: int) -> Mark | None:
    """A download-only twin's mark once the operator triggered its install (None: not asked)."""
    if mark.status is MarkStatus.APPLIED and _install_asked(configuration, device_id, mark):
        return replace(mark, install_at=now)
    return None


def same_attempt(a: Mark | None, b: Mark | None) -> bool:
    """Whether two marks ask the device the same (status, keys, attempt, install): a mark that
    only scheduled a retry leaves the device's answer standing."""
    if a is None or b is None:
        return a is b
    return (a.status, a.keys, a.attempt, a.install_at) == (b.status, b.keys, b.attempt, b.install_at)


def error_marks(write: TwinWrite, reason: str, now: int) -> JsonObject:
    """Marks recording that the twin-store refused `write` for the configurations it admitted: they
    count the twin as failed instead of trying again and again."""
    return {cid: Mark(MarkStatus.ERROR, (), stage, now, reason).to_json() for cid, stage in write.admitted.items()}
