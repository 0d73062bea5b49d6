"""Who each configuration targets and where each of those twins stands, kept up to date one twin at
a time (from `twin.changed`, or a page of a scan) — never by re-reading the fleet per change.

Pure in-memory bookkeeping: `put` replaces one twin's facts and adjusts every configuration's
counts by the difference; `refresh` moves applied twins whose per-device timeout passed to failed
(or retrying); `replace` re-places a configuration's members when its quarantined cohorts change.
Twins in a quarantined cohort are counted apart: they are not admitted, and neither their stage
shares nor their failures move the rollout.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from services.domain.rollout.cohorts import CohortCounts
from services.domain.rollout.configuration import CompiledConfiguration
from services.domain.rollout.twin_plan import Outcome, Placement, TwinFacts
from services.domain.software.twin_key import UpdateStatus

ADMITTED = frozenset({Outcome.PENDING, Outcome.SUCCEEDED, Outcome.FAILED, Outcome.RETRYING})
"""Outcomes of twins the rollout reached that count for cohorts."""


@dataclass(slots=True)
class ConfigurationCounts:
    """One configuration's members by outcome and stage, and its custom metrics."""

    members: dict[str, Placement] = field(default_factory=dict)
    by_stage: Counter[tuple[Outcome, int]] = field(default_factory=Counter)
    quarantined: Counter[Outcome] = field(default_factory=Counter)
    metrics: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    cohorts: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    """(key, value, failed) → admitted twins outside quarantine."""
    attempts: int = 0
    """Retries made (attempts beyond the first) over the members."""
    installed: int = 0
    waiting: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    retrying: set[str] = field(default_factory=set)
    zones: Counter[str] = field(default_factory=Counter)
    """Waiting twins per time zone."""
    order: list[tuple[bytes, str]] = field(default_factory=list)
    """Waiting twins in rollout order, each with its `rank`; may still hold twins that stopped
    waiting (skipped)."""
    ordered: set[str] = field(default_factory=set)
    """The twins `order` holds."""
    unordered: list[str] = field(default_factory=list)
    """Waiting twins not yet sorted into `order`."""


@dataclass(frozen=True, slots=True)
class StageCounts:
    admitted: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    superseded: int = 0
    rolled_back: int = 0
    retrying: int = 0


@dataclass(frozen=True, slots=True)
class ConfigurationStats:
    """A snapshot of one configuration's counts (what the rollout planner decides from). Twins in
    quarantined cohorts are only in `quarantined`."""

    targeted: int
    waiting: int
    stages: Mapping[int, StageCounts]
    metrics: Mapping[str, int]
    quarantined: int = 0
    cohorts: Mapping[tuple[str, str], CohortCounts] = field(default_factory=dict)
    phases: Mapping[str, int] = field(default_factory=dict)
    attempts: int = 0
    installed: int = 0

    @property
    def settling(self) -> int:
        """Admitted twins not yet settled: pending, or failed and to be tried again."""
        total = self.total()
        return total.pending + total.retrying

    def stage(self, index: int) -> StageCounts:
        return self.stages.get(index, StageCounts())

    def total(self, upto: int | None = None) -> StageCounts:
        """Counts over stages up to and including `upto` (all stages when None)."""
        parts = [c for s, c in self.stages.items() if upto is None or s <= upto]
        return StageCounts(*(sum(getattr(c, f) for c in parts) for f in StageCounts.__slots__))


_FIELD = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.PENDING: "pending",
    Outcome.SUPERSEDED: "superseded",
    Outcome.ROLLED_BACK: "rolled_back",
    Outcome.RETRYING: "retrying",
}
_COUNTED_PHASES = frozenset({UpdateStatus.WAITING_FOR_CONSENT.value, UpdateStatus.WAITING_FOR_INSTALL.value})


def rank(configuration_id: str, device_id: str) -> bytes:
    """A twin's stable place in a configuration's rollout order: pseudo-random (early stages are a
    sample of the fleet, not its alphabetical head) and the same after a restart."""
    return hashlib.blake2b(f"{configuration_id}\0{device_id}".encode(), digest_size=8).digest()


class Membership:
    def __init__(self) -> None:
        self.facts: dict[str, TwinFacts] = {}
        self.counts: defaultdict[str, ConfigurationCounts] = defaultdict(ConfigurationCounts)

    def version(self, device_id: str) -> int:
        facts = self.facts.get(device_id)
        return -1 if facts is None else facts.version

    def put(
        self,
        device_id: str,
        facts: TwinFacts | None,
        configurations: Mapping[str, CompiledConfiguration],
        now: int,
    ) -> None:
        """Replace one twin's facts (None: the twin is gone) and adjust the counts."""
        old = self.facts.pop(device_id, None)
        if old is not None:
            for cid in old.hits:
                self._remove(cid, device_id, old)
        if facts is None or (not facts.hits and not facts.marks):
            return  # nothing targets or marked it: not worth keeping
        self.facts[device_id] = facts
        for cid in facts.hits:
            c = configurations.get(cid)
            placement = facts.outcome(c, now) if c is not None else None
            if placement is not None:
                self._add(cid, device_id, placement, facts)

    def refresh(self, configurations: Mapping[str, CompiledConfiguration], now: int) -> set[str]:
        """Re-place pending twins whose per-device timeout may have passed; returns the twins whose
        placement changed (a retry may now be scheduled for them)."""
        moved: set[str] = set()
        for cid, c in configurations.items():
            if c.configuration.spec.rollout.device_timeout_seconds is None:
                continue
            counts = self.counts.get(cid)
            if counts is None:
                continue
            for device_id in list(counts.pending):
                facts = self.facts[device_id]
                placement = facts.outcome(c, now)
                if placement is not None and placement.outcome is not Outcome.PENDING:
                    self._remove(cid, device_id, facts)
                    self._add(cid, device_id, placement, facts)
                    moved.add(device_id)
        return moved

    def replace(self, configuration: CompiledConfiguration, now: int) -> set[str]:
        """Re-place every member of a configuration (its quarantine, retry requests or state
        changed); returns the members."""
        cid = configuration.id
        members = [d for d, _ in self.members(cid)]
        for device_id in members:
            facts = self.facts[device_id]
            self._remove(cid, device_id, facts)
            placement = facts.outcome(configuration, now)
            if placement is not None:
                self._add(cid, device_id, placement, facts)
        return set(members)

    def due_retries(self, configuration_id: str, now: float) -> list[str]:
        """Retrying twins whose retry is to be scheduled, or due."""
        counts = self.counts.get(configuration_id)
        if counts is None:
            return []
        return [d for d in counts.retrying if (at := counts.members[d].retry_at) is None or at <= now]

    def forget(self, configuration_id: str) -> None:
        """Drop a configuration's counts (deleted); the twins' facts are refreshed by the next scan."""
        self.counts.pop(configuration_id, None)

    def stats(self, configuration_id: str) -> ConfigurationStats:
        counts = self.counts.get(configuration_id) or ConfigurationCounts()
        stages: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (outcome, stage), n in counts.by_stage.items():
            if outcome is Outcome.WAITING or n == 0:
                continue
            stages[stage]["admitted"] += n
            stages[stage][_FIELD[outcome]] += n
        cohorts: dict[tuple[str, str], CohortCounts] = {}
        for (key, value, failed), n in counts.cohorts.items():
            if n:
                was = cohorts.get((key, value), CohortCounts())
                cohorts[(key, value)] = CohortCounts(was.admitted + n, was.failed + (n if failed else 0))
        quarantined = sum(counts.quarantined.values())
        return ConfigurationStats(
            targeted=len(counts.members) - quarantined,
            waiting=len(counts.waiting),
            stages={s: StageCounts(**v) for s, v in stages.items()},
            metrics=dict(counts.metrics),
            quarantined=quarantined,
            cohorts=cohorts,
            phases={p: n for p, n in counts.phases.items() if n},
            attempts=counts.attempts,
            installed=counts.installed,
        )

    def candidates(
        self,
        configuration_id: str,
        n: int,
        exclude: Iterable[str] = (),
        admissible: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Up to `n` waiting twins, first in the configuration's rollout order; with `admissible`
        (a twin's zone → whether it may be admitted now), only those."""
        counts = self.counts.get(configuration_id)
        if counts is None or n <= 0:
            return []
        if counts.unordered:
            # each twin is ranked once; two sorted runs are merged by one sort in linear time
            counts.order.extend((rank(configuration_id, d), d) for d in counts.unordered)
            counts.order.sort()
            counts.unordered.clear()
        skip = set(exclude)
        chosen: list[str] = []
        stale_front = 0  # twins at the front of the order that stopped waiting: dropped below
        seen_waiting = False
        for _, device_id in counts.order:
            if device_id not in counts.waiting:
                stale_front += not seen_waiting
                continue
            seen_waiting = True
            if device_id in skip or (
                admissible is not None and not admissible(self.facts[device_id].hits[configuration_id].zone)
            ):
                continue
            chosen.append(device_id)
            if len(chosen) >= n:
                break
        if stale_front > 256:
            counts.ordered.difference_update(d for _, d in counts.order[:stale_front])
            del counts.order[:stale_front]
        return chosen

    def waiting_zones(self, configuration_id: str) -> Mapping[str, int]:
        """Waiting twins per time zone (what admissions are decided over)."""
        counts = self.counts.get(configuration_id)
        return {} if counts is None else {z: n for z, n in counts.zones.items() if n}

    def members(self, configuration_id: str) -> Iterator[tuple[str, Placement]]:
        counts = self.counts.get(configuration_id)
        return iter(()) if counts is None else iter(counts.members.items())

    def _add(self, cid: str, device_id: str, placement: Placement, facts: TwinFacts) -> None:
        self._count(cid, device_id, placement, facts, 1)

    def _remove(self, cid: str, device_id: str, facts: TwinFacts) -> None:
        counts = self.counts.get(cid)
        if counts is None:
            return
        placement = counts.members.get(device_id)
        if placement is not None:
            self._count(cid, device_id, placement, facts, -1)

    def _count(self, cid: str, device_id: str, placement: Placement, facts: TwinFacts, sign: int) -> None:
        """Add (`sign` 1) or take away (-1) one member's placement from the counts."""
        counts = self.counts[cid]
        outcome = placement.outcome
        if sign > 0:
            counts.members[device_id] = placement
        else:
            del counts.members[device_id]
        if placement.quarantined:
            counts.quarantined[outcome] += sign
        else:
            counts.by_stage[(outcome, placement.stage)] += sign
            mark = facts.marks.get(cid)
            if outcome in ADMITTED and mark is not None:
                for key, value in mark.cohort.items():
                    counts.cohorts[(key, value, outcome is Outcome.FAILED)] += sign
        for members, wanted in (
            (counts.waiting, Outcome.WAITING),
            (counts.pending, Outcome.PENDING),
            (counts.retrying, Outcome.RETRYING),
        ):
            if outcome is wanted:
                (members.add if sign > 0 else members.discard)(device_id)
        if outcome is Outcome.WAITING:
            counts.zones[facts.hits[cid].zone] += sign
            if sign > 0 and device_id not in counts.ordered:
                counts.ordered.add(device_id)
                counts.unordered.append(device_id)
        if placement.phase in _COUNTED_PHASES:
            counts.phases[placement.phase] += sign
        counts.attempts += sign * max(0, placement.attempt - 1)
        mark = facts.marks.get(cid)
        if mark is not None and mark.install_at is not None and outcome is Outcome.SUCCEEDED:
            counts.installed += sign
        hit = facts.hits[cid]
        if sign > 0:
            counts.metrics.update(hit.metrics)
        else:
            counts.metrics.subtract(hit.metrics)
