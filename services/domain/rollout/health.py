"""Health after an update, compared with twins not yet updated: rates of unhealthy twins, a
comparison that tells a real difference from noise, and the recent device events it counts.

`worse(a, b, margin)` holds when group `a` is unhealthy more often than group `b` by more than
`margin` beyond what chance explains: the lower end of a one-sided Agresti-Caffo interval for the
difference of the two rates (add one healthy and one unhealthy twin to each group, then Wald) is
above the margin. Small groups therefore never hold a stage on one unlucky twin, and large ones
hold it on a small but real difference. The same test finds cohorts that fail more than the rest.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

Z_ONE_SIDED_95 = 1.6449
MAX_EVENT_DEVICES = 200_000
"""Devices whose recent events are kept (the least recently heard from are dropped first)."""
MAX_EVENTS_PER_DEVICE = 256


@dataclass(frozen=True, slots=True)
class Rate:
    """`hits` of `total` twins (unhealthy, or failed)."""

    hits: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.hits / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.percent:.1f}% ({self.hits}/{self.total})"


def worse(a: Rate, b: Rate, margin_percent: float = 0.0, z: float = Z_ONE_SIDED_95) -> bool:
    """Whether `a`'s rate exceeds `b`'s by more than `margin_percent` points, beyond noise. With no
    twins in `b`, `a` is compared with the margin itself (its lower Wilson bound above it)."""
    if a.total == 0:
        return False
    margin = margin_percent / 100.0
    if b.total == 0:
        return _wilson_lower(a, z) > margin
    pa = (a.hits + 1) / (a.total + 2)
    pb = (b.hits + 1) / (b.total + 2)
    spread = math.sqrt(pa * (1 - pa) / (a.total + 2) + pb * (1 - pb) / (b.total + 2))
    return (pa - pb) - z * spread > margin


def _wilson_lower(rate: Rate, z: float) -> float:
    n, p = rate.total, rate.hits / rate.total
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    updated: Rate
    holdout: Rate
    passed: bool
    message: str


def judge(stage: int, label: str, updated: Rate, holdout: Rate, margin_percent: float) -> HealthVerdict:
    """A stage's health verdict with the message the history shows (`stage` 0-based)."""
    against = f"{holdout} in hold-out" if holdout.total else f"a margin of {margin_percent:g}% (no hold-out left)"
    comparison = f"{label} {updated} vs {against}"
    if worse(updated, holdout, margin_percent):
        return HealthVerdict(updated, holdout, False, f"stage {stage + 1} held: {comparison}")
    return HealthVerdict(updated, holdout, True, f"stage {stage + 1} health ok: {comparison}")


def soak_ends(soak_since: float, observing_since: float, soak_seconds: float) -> float:
    """When a soak that started at `soak_since` has been watched for its full length: events from
    before `observing_since` (this process started) are unknown, so the soak runs on past it."""
    return max(soak_since, observing_since) + soak_seconds


class EventLog:
    """Recent device events of the types health gates count, per device and sequence number (a
    redelivered event counts once), by the time the cloud received them (device clocks drift)."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._events: OrderedDict[str, dict[int, tuple[float, str]]] = OrderedDict()

    def add(self, device_id: str, seq: int, kind: str, at: float) -> None:
        events = self._events.setdefault(device_id, {})
        self._events.move_to_end(device_id)
        events.setdefault(seq, (at, kind))
        if len(events) > MAX_EVENTS_PER_DEVICE:
            for old in sorted(events)[: len(events) - MAX_EVENTS_PER_DEVICE]:
                del events[old]
        while len(self._events) > MAX_EVENT_DEVICES:
            self._events.popitem(last=False)

    def count(self, device_id: str, kinds: Collection[str], since: float) -> int:
        return sum(1 for at, kind in self._events.get(device_id, {}).values() if at >= since and kind in kinds)

    def prune(self, now: float) -> None:
        horizon = now - self.retention
        for device_id in list(self._events):
            events = self._events[device_id]
            for seq in [s for s, (at, _) in events.items() if at < horizon]:
                del events[seq]
            if not events:
                del self._events[device_id]

    def devices(self) -> Iterable[str]:
        return self._events.keys()
