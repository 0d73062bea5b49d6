"""The rollout app's REST contract (`/v1/configurations`): the configuration a caller submits, and
how a configuration, its progress, history and members are shown. camelCase on the wire."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from services.contracts.api import ApiModel, RequestModel
from services.domain.json_values import JsonObject

MAX_STAGES = 20


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Stage(_Model):
    """One rollout stage: a cumulative share of the targeted twins, by percent or by count."""

    percent: Annotated[float, Field(gt=0, le=100)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Stage:
        if (self.percent is None) == (self.count is None):
            raise ValueError("a stage is either {'percent': p} or {'count': n}")
        return self

    def cumulative_target(self, targeted: int) -> int:
        """How many of `targeted` twins this stage and the ones before it cover."""
        if self.percent is not None:
            return min(targeted, math.ceil(self.percent * targeted / 100 - 1e-9))
        return min(targeted, self.count or 0)

    def label(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


class HaltAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"


class FailureThreshold(_Model):
    """A stage halts when more of its twins failed than `count`, or more than `percent` of them."""

    percent: Annotated[float, Field(ge=0, le=100)] | None = None
    count: Annotated[int, Field(ge=0)] | None = None
    action: HaltAction = HaltAction.PAUSE


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")
MAX_WINDOWS = 14
MAX_COHORT_KEYS = 3


class Window(_Model):
    """A recurring maintenance window in the device's local time: weekly (`days`, default every
    day, from `start` to `end` as HH:MM or HH:MM:SS; an end at or before the start runs past
    midnight) or cron (`cron`, five fields, when it opens; `durationMinutes` it stays open)."""

    days: list[Weekday] | None = None
    start: str | None = None
    end: str | None = None
    cron: str | None = None
    duration_minutes: Annotated[int, Field(ge=1, le=1430)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        weekly = self.start is not None or self.end is not None or self.days is not None
        cron = self.cron is not None or self.duration_minutes is not None
        if weekly == cron:
            raise ValueError("a window is either weekly {start, end, days?} or cron {cron, durationMinutes}")
        if weekly:
            if self.start is None or self.end is None:
                raise ValueError("a weekly window needs start and end (HH:MM or HH:MM:SS)")
            for value in (self.start, self.end):
                if not TIME_OF_DAY.match(value):
                    raise ValueError(f"{value!r} is not a time of day (HH:MM or HH:MM:SS)")
            if _seconds_of_day(self.start) == _seconds_of_day(self.end):
                raise ValueError("a window's end must differ from its start")
            if self.days is not None and not self.days:
                raise ValueError("days is empty: leave it out for every day")
        elif self.cron is None or self.duration_minutes is None:
            raise ValueError("a cron window needs cron and durationMinutes")
        return self


def _seconds_of_day(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0)


class Schedule(_Model):
    """When a rollout may admit twins: from `startAt` until `endAt` (unix seconds), and inside
    the recurring `windows` (any of them; none: at any time) in each device's time zone — the
    IANA zone in its tag `timezoneTag`, else `timezone`. A device is admitted only if its install
    (`installSeconds`) fits before its window closes; otherwise it waits for the next one."""

    start_at: int | None = None
    end_at: int | None = None
    windows: list[Window] = Field(default_factory=list, max_length=MAX_WINDOWS)
    timezone: str = "UTC"
    timezone_tag: str | None = None
    install_seconds: Annotated[int, Field(ge=0, le=86_400)] = 0

    @model_validator(mode="after")
    def _ends_after_start(self) -> Schedule:
        if self.start_at is not None and self.end_at is not None and self.end_at <= self.start_at:
            raise ValueError("endAt must be after startAt")
        return self


class RetryPolicy(_Model):
    """Failed twins are tried again, up to `attempts` more times, after `backoffSeconds` growing by
    `factor` per attempt (at most `maxBackoffSeconds`), for the failure reasons named in `on`
    (download, metadata, integrity, install, health, expired, consent, timeout; never signature,
    version or refused)."""

    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff_seconds: Annotated[int, Field(ge=0, le=86_400)] = 60
    factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_backoff_seconds: Annotated[int, Field(ge=0)] = 3600
    on: list[str] = Field(default_factory=lambda: ["download", "timeout"], min_length=1)


class InstallPolicy(_Model):
    """For software content: `later` downloads only, and the install waits for a trigger (per
    device, per stage or for all); devices that ask for local consent install anyway
    `autoConsentSeconds` after the install was asked (None: only with consent)."""

    later: bool = False
    auto_consent_seconds: Annotated[int, Field(ge=0)] | None = None


class Ramp(_Model):
    """An exponential pace: `basePerMinute`, times `factor` after every `every` twins succeeded
    (at most `maxPerMinute` when set)."""

    base_per_minute: Annotated[int, Field(ge=1)]
    factor: Annotated[float, Field(ge=1.1, le=5)]
    every: Annotated[int, Field(ge=1)]


class HealthGate(_Model):
    """A stage is promoted only when its updated twins are no less healthy than a hold-out of
    targeted twins not yet updated, over `soakSeconds` after the stage settled. A twin is
    unhealthy when the CEL `unhealthy` holds on it, or when it sent one of the device event
    `events` types during the soak. Updated twins may be worse by `marginPercent` points, and
    only a difference beyond noise (a one-sided 95% interval) holds the stage."""

    unhealthy: str | None = None
    events: list[str] = Field(default_factory=list, max_length=10)
    soak_seconds: Annotated[int, Field(ge=1, le=7 * 86_400)] = 300
    margin_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    label: str = Field("unhealthy", min_length=1, max_length=40)

    @model_validator(mode="after")
    def _says_what(self) -> HealthGate:
        if self.unhealthy is None and not self.events:
            raise ValueError("a health gate needs an `unhealthy` condition or event types")
        return self


class CohortPolicy(_Model):
    """When failures concentrate in one value of a tag or reported field (`keys`, e.g.
    `tags.hwRev`, `reported.software.version`; the value a twin had when it was admitted), only
    that cohort is halted: at least `minFailures` of its twins failed, it holds at least
    `sharePercent` of the failures, and it fails more often than the rest beyond noise."""

    keys: list[str] = Field(min_length=1, max_length=MAX_COHORT_KEYS)
    min_failures: Annotated[int, Field(ge=1)] = 3
    share_percent: Annotated[float, Field(gt=0, le=100)] = 80.0


class RolloutPolicy(_Model):
    stages: list[Stage] = Field(default_factory=lambda: [Stage(percent=100)], min_length=1, max_length=MAX_STAGES)
    max_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Most twins written per minute (None: as fast as the store takes them)."""
    ramp: Ramp | None = None
    """An exponential pace instead of a flat one (`maxPerMinute` caps it)."""
    success_condition: str | None = None
    """CEL; default: the twin's reported state conforms to the content this configuration won."""
    failure_condition: str | None = None
    """CEL; default: a content key is reported with status FAILED or UNSUPPORTED (the device agent's
    answer for a refused or unknown setting)."""
    device_timeout_seconds: Annotated[int, Field(ge=1)] | None = None
    """A twin applied this long ago that has neither succeeded nor failed counts as failed."""
    failure_threshold: FailureThreshold | None = None
    rollback_content: JsonObject | None = None
    """Written to the twins this configuration was applied to when it is aborted."""
    schedule: Schedule | None = None
    retry: RetryPolicy | None = None
    install: InstallPolicy | None = None
    health: HealthGate | None = None
    cohorts: CohortPolicy | None = None

    @model_validator(mode="after")
    def _stages_grow(self) -> RolloutPolicy:
        kinds = {"percent" if s.percent is not None else "count" for s in self.stages}
        values = [s.percent if s.percent is not None else s.count for s in self.stages]
        if len(kinds) == 1 and any(b is not None and a is not None and b <= a for a, b in pairwise(values)):
            raise ValueError("stages are cumulative: each must cover more twins than the one before")
        return self


class ConfigurationSpec(_Model):
    """What a caller submits (`POST /v1/configurations`)."""

    id: str
    target_condition: str
    priority: int = 0
    content: JsonObject
    metrics: dict[str, str] = Field(default_factory=dict)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


class ConfigurationState(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ABORTED = "aborted"
    COMPLETED = "completed"

    @property
    def live(self) -> bool:
        """Live configurations own their keys on the twins they were applied to."""
        return self in (ConfigurationState.ACTIVE, ConfigurationState.PAUSED, ConfigurationState.COMPLETED)


class HistoryEntry(_Model):
    at: int
    message: str


class Hold(StrEnum):
    """Why an active rollout admits no twin although some wait (none: it admits at its pace)."""

    NONE = ""
    START = "start"
    """Before its `startAt`."""
    WINDOW = "window"
    """No waiting twin is inside a maintenance window its install fits in."""
    ENDED = "ended"
    """Past its `endAt`: no more admissions."""


class Cohort(_Model):
    """A cohort the rollout halted: twins whose `key` had `value` when admitted (waiting twins:
    now). `failed`/`admitted` are the counts that quarantined it."""

    key: str
    value: str
    failed: int
    admitted: int
    at: int

    def label(self) -> str:
        return f"{self.key}={self.value}"


class HealthComparison(_Model):
    """A health gate's verdict on a stage: unhealthy twins among the updated and the hold-out."""

    stage: int
    at: int
    updated: int
    updated_unhealthy: int
    holdout: int
    holdout_unhealthy: int
    passed: bool
    message: str


class InstallTriggers(_Model):
    """Installs the operator asked for (download-only configurations): all twins, stages, devices."""

    all: bool = False
    stages: list[int] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)

    def covers(self, device_id: str, stage: int) -> bool:
        return self.all or stage in self.stages or device_id in self.devices


class RetryRequest(_Model):
    """An operator's retry: twins failed in the attempt they were on at `at` are tried again once
    (`serial` tells requests apart; a twin's mark records the last one it served)."""

    serial: int
    at: int


class StageProgress(ApiModel):
    """One stage's counts: `target` is its own share (not cumulative), `state` one of waiting,
    active, soaking, paused, aborted, done."""

    index: int
    target: int
    admitted: int
    succeeded: int
    failed: int
    pending: int
    retrying: int = 0
    superseded: int
    state: str


class RolloutProgress(ApiModel):
    """Where a configuration's rollout stands, over the twins it targets now (less those in
    quarantined cohorts, counted apart)."""

    targeted: int
    waiting: int
    applied: int
    succeeded: int
    failed: int
    pending: int
    retrying: int = 0
    """Failed, a retry scheduled."""
    superseded: int
    rolled_back: int
    quarantined: int = 0
    """Twins in quarantined cohorts (not admitted any more; their failures halt nothing)."""
    outside_window: int = 0
    """Waiting twins not admissible now (outside their maintenance window, or before the start)."""
    awaiting_consent: int = 0
    """Software updates downloaded, waiting for the device's local consent."""
    awaiting_install: int = 0
    """Download-only updates downloaded and verified, waiting for the install trigger."""
    installed: int = 0
    """Download-only configurations: twins whose install was triggered and that run the update."""
    attempts: int = 0
    """Attempts made beyond the first (retries), over the twins admitted."""
    custom: dict[str, int]
    stages: list[StageProgress]
    complete: bool
    """Whether the counts cover the whole fleet (false while the scan after activation runs)."""
    rate_per_minute: float | None = None
    """The pace now (flat or ramped); None: unpaced."""


class ConfigurationView(ConfigurationSpec):
    """A configuration as the API shows it: the spec plus its lifecycle and progress."""

    state: ConfigurationState
    stage: int
    reason: str
    hold: Hold = Hold.NONE
    soak_since: int | None = None
    quarantined: list[Cohort] = Field(default_factory=list)
    health_checks: list[HealthComparison] = Field(default_factory=list)
    install_triggers: InstallTriggers = Field(default_factory=InstallTriggers)
    created_at: int
    activated_at: int | None
    updated_at: int
    progress: RolloutProgress
    scope: dict[str, str] = Field(default_factory=dict)
    """The creator's tag scope, ANDed into the target condition (empty: the whole fleet)."""


class ConfigurationList(ApiModel):
    items: list[ConfigurationView]


class HistoryList(ApiModel):
    items: list[HistoryEntry]
    """Oldest first."""


class MemberStatus(ApiModel):
    """One targeted twin in a configuration: waiting, quarantined, pending, succeeded, failed,
    retrying, superseded or rolled_back; the stage it was admitted to (-1: not yet); why it failed
    (`failure` names the kind: download, install, timeout, …); its attempts (1 + retries), when
    the next retry is due, and the device's update phase (e.g. WAITING_FOR_CONSENT)."""

    device_id: str
    status: str
    stage: int
    reason: str
    failure: str = ""
    attempts: int = 0
    retry_at: int | None = None
    phase: str = ""


class MemberList(ApiModel):
    items: list[MemberStatus]


class CancelBody(ApiModel):
    rollback: bool = True
    """Write the rollback content (if the configuration has one) to the twins it reached."""


class RetryBody(RequestModel):
    """`POST …/retry`: try failed twins again now — these `devices`, or every failed twin."""

    devices: list[str] | None = Field(default=None, max_length=1000)


class InstallBody(RequestModel):
    """`POST …/install`: install a download-only update on `devices`, one `stage` (1-based, as
    shown), or `all` twins (now and those admitted later)."""

    devices: list[str] | None = Field(default=None, max_length=1000)
    stage: int | None = Field(default=None, ge=1)
    all: bool = False


class ReleaseBody(RequestModel):
    """`POST …/release`: admit a quarantined cohort again (`key=value` as shown)."""

    cohort: str


class PreviewBody(RequestModel):
    """`POST /v1/configurations/preview` (`spec`) or `POST …/{id}/preview` (the stored draft):
    what an activation at `startAt` (default now) would do, each admitted twin assumed to succeed
    `assumeSeconds` after its write, projected up to `horizonSeconds`."""

    spec: JsonObject | None = None
    start_at: int | None = None
    assume_seconds: int = Field(default=60, ge=0, le=86_400)
    horizon_seconds: int = Field(default=30 * 86_400, ge=1, le=366 * 86_400)
    limit: int = Field(default=1000, ge=0, le=100_000)


class PreviewDevice(ApiModel):
    """One twin the configuration would select: the stage and time it would be admitted (None:
    not within the horizon), the keys it would win, and those it would lose (key → the
    configuration that keeps it)."""

    device_id: str
    stage: int | None
    admit_at: int | None
    wins: list[str]
    loses: dict[str, str]


class StageProjection(ApiModel):
    index: int
    target: int
    starts_at: int | None
    """When its first twin is admitted."""
    admitted_by: int | None
    """When its last twin is admitted."""
    done_at: int | None
    """When it is settled and the next one starts (or the rollout completes)."""


class PreviewView(ApiModel):
    """A dry run: computed by the same planner as the rollout, over the twins as they are now."""

    targeted: int
    devices: list[PreviewDevice]
    truncated: bool
    """More twins are selected than `limit` lists."""
    stages: list[StageProjection]
    completes_at: int | None
    history: list[HistoryEntry]
    """The decisions the rollout would log, with their projected times."""
    assumptions: str
