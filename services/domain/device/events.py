"""Device events from a device's outbox to the cloud: the cloud's per-device ordering and
de-duplication.

A device numbers its events 1, 2, 3, … and sends them in order, in batches, until the broker has
acknowledged each batch; so the cloud may see a batch again (after a lost PUBACK) or, because
deliveries run concurrently, a later batch before an earlier one. `accept_batch` keeps exactly the
events not seen yet, and asks for a retry when an earlier batch has not arrived. A device whose
outbox overflowed says so with `skipped_through`: events up to there will never come.

The events taken from a batch go to the sinks under a name made of their range, so the range must
not depend on how the device happened to cut its batches: a take that stopped halfway (the sinks
wrote, the cursor did not) and is redone from a batch cut elsewhere would otherwise store the same
events twice under two names. So the cursor is advanced first, holding the taken events as
`pending`; the sinks get exactly those; and the next delivery hands any `pending` left over (a take
that stopped halfway) to the sinks again, same range, same bytes, before taking anything new.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from services.contracts.device_events import DeviceEvent, EventBatch
from services.domain.errors import invalid
from services.domain.json_values import JsonObject


def parse_batch(payload: Any) -> EventBatch:
    """An `EventBatch` from a decoded payload; a malformed one raises a 400 `TwinError`."""
    try:
        return EventBatch.model_validate(payload)
    except ValidationError as error:
        raise invalid("event batch", error) from None


@dataclass(frozen=True, slots=True)
class EventCursor:
    """What the cloud has taken from one device: the next sequence number it expects, how many
    events the device reported lost, since when it has been waiting for a missing batch, and the
    events last taken while their hand-over to the sinks is not known to be complete."""

    next_seq: int = 1
    lost: int = 0
    gap_since: float | None = None
    pending: tuple[DeviceEvent, ...] = ()

    def to_json(self) -> JsonObject:
        value: JsonObject = {"next_seq": self.next_seq, "lost": self.lost, "gap_since": self.gap_since}
        if self.pending:
            value["pending"] = [event.model_dump() for event in self.pending]
        return value

    @staticmethod
    def from_json(value: JsonObject | None) -> EventCursor:
        if not value:
            return EventCursor()
        pending = tuple(DeviceEvent.model_validate(event) for event in value.get("pending") or ())
        return EventCursor(int(value["next_seq"]), int(value.get("lost", 0)), value.get("gap_since"), pending)

    def handed_over(self) -> EventCursor:
        """The cursor once the sinks hold its pending events."""
        return replace(self, pending=())


@dataclass(frozen=True, slots=True)
class Accepted:
    fresh: list[DeviceEvent]
    """The events not seen before, in order (may be empty: a re-sent batch)."""
    cursor: EventCursor
    """The cursor past them, holding them as `pending` until the sinks have them."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """An earlier batch has not arrived yet: retry this one later (`cursor` records the wait)."""

    missing_from: int
    cursor: EventCursor


def accept_batch(cursor: EventCursor, batch: EventBatch, now: float, gap_timeout: float) -> Accepted | Waiting:
    """Take a batch in order. A batch past a gap waits for the missing events up to `gap_timeout`
    seconds, then is taken anyway and the missing events are counted as lost."""
    expected = cursor.next_seq
    lost = cursor.lost
    if batch.skipped_through >= expected:
        lost += batch.skipped_through + 1 - expected
        expected = batch.skipped_through + 1
    if batch.first > expected:
        started = cursor.gap_since if cursor.gap_since is not None else now
        if now - started < gap_timeout:
            return Waiting(expected, replace(cursor, gap_since=started))
        lost += batch.first - expected
        expected = batch.first
    fresh = [event for event in batch.events if event.seq >= expected]
    next_seq = max(expected, batch.last + 1)
    return Accepted(fresh, EventCursor(next_seq, lost, None, tuple(fresh)))
