"""Cohorts: groups of twins sharing one value of a tag or reported field (hardware revision,
previous version, region), and finding the one the failures concentrate in.

A twin's cohort values are read when it is admitted and kept on its mark (a twin's reported version
changes with the update it is given; the cohort is about the version it had). `concentrated`
returns the cohorts to quarantine: enough failures (`minFailures`), most of the failures of their
key (`sharePercent`), and a failure rate above the rest's beyond noise (`health.worse`) — so a
cohort holding most twins, failing as often as the others, is not singled out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.contracts.rollout import CohortPolicy
from services.domain.errors import bad_request
from services.domain.json_values import JsonObject
from services.domain.rollout.health import Rate, worse

COHORT_KEY = re.compile(r"^(tags|reported|desired)(\.[A-Za-z0-9_-]{1,64}){1,6}$")
MAX_VALUE_CHARS = 64
ABSENT = "(none)"


def check_cohort_policy(policy: CohortPolicy) -> None:
    for key in policy.keys:
        if not COHORT_KEY.match(key):
            raise bad_request(
                f"rollout.cohorts.keys: {key!r} must be tags.<name> or reported.<path> (dotted names, at most 6)"
            )


def cohort_value(twin: Mapping[str, JsonObject], key: str) -> str:
    """The value of `key` (`tags.hwRev`, `reported.software.version`) on a twin given as its
    sections, as text (absent: "(none)"; strings as they are, other values as JSON)."""
    section, *path = key.split(".")
    value: Any = twin.get(section, {})
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text[:MAX_VALUE_CHARS]


@dataclass(frozen=True, slots=True)
class CohortCounts:
    admitted: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class Concentration:
    key: str
    value: str
    cohort: Rate
    rest: Rate

    def note(self) -> str:
        return (
            f"cohort {self.key}={self.value} quarantined: {self.cohort.hits}/{self.cohort.total} failed "
            f"vs {self.rest.hits}/{self.rest.total} elsewhere; the rest goes on"
        )


def concentrated(policy: CohortPolicy, counts: Mapping[tuple[str, str], CohortCounts]) -> list[Concentration]:
    """The cohorts (key, value) whose failures stand out, most failures first; `counts` are the
    admitted and failed twins per cohort, over the twins not yet quarantined."""
    found: list[Concentration] = []
    for key in policy.keys:
        groups = {value: c for (k, value), c in counts.items() if k == key}
        admitted = sum(c.admitted for c in groups.values())
        failed = sum(c.failed for c in groups.values())
        if failed == 0:
            continue
        for value, c in groups.items():
            if c.failed < policy.min_failures or c.admitted == admitted:
                continue
            if c.failed * 100 < policy.share_percent * failed:
                continue
            cohort, rest = Rate(c.failed, c.admitted), Rate(failed - c.failed, admitted - c.admitted)
            if worse(cohort, rest):
                found.append(Concentration(key, value, cohort, rest))
    return sorted(found, key=lambda c: (-c.cohort.hits, c.key, c.value))
