"""Who each configuration targets and where each of those twins stands, kept up to date one twin at
a time (from `twin.changed`, or a page of a scan) — never by re-reading the fleet per change.

Pure in-memory bookkeeping: `put` replaces one twin's facts and adjusts every configuration's
counts by the difference; `refresh` moves applied twins whose per-device timeout passed to failed.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from services.domain.rollout.configuration import CompiledConfiguration
from services.domain.rollout.twin_plan import Outcome, TwinFacts

Placement = tuple[Outcome, int, str]
"""(outcome, stage, reason) of one twin in one configuration."""


@dataclass(slots=True)
class ConfigurationCounts:
    """One configuration's members by outcome and stage, and its custom metrics."""

    members: dict[str, Placement] = field(default_factory=dict)
    by_stage: Counter[tuple[Outcome, int]] = field(default_factory=Counter)
    metrics: Counter[str] = field(default_factory=Counter)
    waiting: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class StageCounts:
    admitted: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    superseded: int = 0
    rolled_back: int = 0


@dataclass(frozen=True, slots=True)
class ConfigurationStats:
    """A snapshot of one configuration's counts (what the rollout planner decides from)."""

    targeted: int
    waiting: int
    stages: Mapping[int, StageCounts]
    metrics: Mapping[str, int]

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
}


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

    def refresh(self, configurations: Mapping[str, CompiledConfiguration], now: int) -> None:
        """Re-place pending twins whose per-device timeout may have passed."""
        for cid, c in configurations.items():
            if c.configuration.spec.rollout.device_timeout_seconds is None:
                continue
            counts = self.counts.get(cid)
            if counts is None:
                continue
            for device_id in list(counts.pending):
                facts = self.facts[device_id]
                placement = facts.outcome(c, now)
                if placement is not None and placement[0] is not Outcome.PENDING:
                    self._remove(cid, device_id, facts)
                    self._add(cid, device_id, placement, facts)

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
        return ConfigurationStats(
            targeted=len(counts.members),
            waiting=len(counts.waiting),
            stages={s: StageCounts(**v) for s, v in stages.items()},
            metrics=dict(counts.metrics),
        )

    def candidates(self, configuration_id: str, n: int, exclude: Iterable[str] = ()) -> list[str]:
        """Up to `n` waiting twins, first in the configuration's rollout order."""
        counts = self.counts.get(configuration_id)
        if counts is None or n <= 0:
            return []
        skip = set(exclude)
        pool = (d for d in counts.waiting if d not in skip)
        return heapq.nsmallest(n, pool, key=lambda d: rank(configuration_id, d))

    def members(self, configuration_id: str) -> Iterator[tuple[str, Placement]]:
        counts = self.counts.get(configuration_id)
        return iter(()) if counts is None else iter(counts.members.items())

    def _add(self, cid: str, device_id: str, placement: Placement, facts: TwinFacts) -> None:
        counts = self.counts[cid]
        outcome, stage, _ = placement
        counts.members[device_id] = placement
        counts.by_stage[(outcome, stage)] += 1
        if outcome is Outcome.WAITING:
            counts.waiting.add(device_id)
        elif outcome is Outcome.PENDING:
            counts.pending.add(device_id)
        counts.metrics.update(facts.hits[cid].metrics)

    def _remove(self, cid: str, device_id: str, facts: TwinFacts) -> None:
        counts = self.counts.get(cid)
        if counts is None:
            return
        placement = counts.members.pop(device_id, None)
        if placement is None:
            return
        outcome, stage, _ = placement
        counts.by_stage[(outcome, stage)] -= 1
        counts.waiting.discard(device_id)
        counts.pending.discard(device_id)
        counts.metrics.subtract(facts.hits[cid].metrics)
