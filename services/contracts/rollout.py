"""The rollout app's REST contract (`/v1/configurations`): the configuration a caller submits, and
how a configuration, its progress, history and members are shown. camelCase on the wire."""

from __future__ import annotations

import math
from enum import StrEnum
from itertools import pairwise
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from services.contracts.api import ApiModel
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


class RolloutPolicy(_Model):
    stages: list[Stage] = Field(default_factory=lambda: [Stage(percent=100)], min_length=1, max_length=MAX_STAGES)
    max_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Most twins written per minute (None: as fast as the store takes them)."""
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


class StageProgress(ApiModel):
    """One stage's counts: `target` is its own share (not cumulative), `state` one of waiting,
    active, paused, aborted, done."""

    index: int
    target: int
    admitted: int
    succeeded: int
    failed: int
    pending: int
    superseded: int
    state: str


class RolloutProgress(ApiModel):
    """Where a configuration's rollout stands, over the twins it targets now."""

    targeted: int
    waiting: int
    applied: int
    succeeded: int
    failed: int
    pending: int
    superseded: int
    rolled_back: int
    custom: dict[str, int]
    stages: list[StageProgress]
    complete: bool
    """Whether the counts cover the whole fleet (false while the scan after activation runs)."""


class ConfigurationView(ConfigurationSpec):
    """A configuration as the API shows it: the spec plus its lifecycle and progress."""

    state: ConfigurationState
    stage: int
    reason: str
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
    """One targeted twin in a configuration: waiting, pending, succeeded, failed, superseded or
    rolled_back, the stage it was admitted to (-1: not yet) and why it failed."""

    device_id: str
    status: str
    stage: int
    reason: str


class MemberList(ApiModel):
    items: list[MemberStatus]


class CancelBody(ApiModel):
    rollback: bool = True
    """Write the rollback content (if the configuration has one) to the twins it reached."""
