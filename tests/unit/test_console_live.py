"""The console's live hub and recent events, in process: scope and device filters, a subscriber
that falls behind is told to reload, events de-duplicated and ordered by (device, seq)."""

from __future__ import annotations

from services.console.fleet import RELOAD, LiveHub, RecentEvents
from services.contracts.console import LiveChange
from services.contracts.events import DeviceEventRecorded


def change(device_id: str, version: int) -> LiveChange:
    return LiveChange(device_id=device_id, version=version, timestamp=version, cause="desired", deleted=False)


async def test_subscribers_get_only_their_scope_and_device_and_a_slow_one_is_told_to_reload() -> None:
    hub = LiveHub(queue_size=3)
    async with (
        hub.subscribed({"region": "eu"}) as eu,
        hub.subscribed({}, device="a") as only_a,
        hub.subscribed({}) as everything,
    ):
        hub.publish([(change("a", 1), {"region": "eu"}), (change("b", 1), {"region": "us"})])
        assert [eu.queue.get_nowait().device_id] == ["a"] and eu.queue.empty()  # type: ignore[union-attr]
        assert only_a.queue.qsize() == 1
        hub.publish([(change("c", v), {}) for v in range(1, 4)])  # 2 + 3 > 3 queued
        assert everything.queue.get_nowait() == RELOAD  # what it missed is dropped; it reloads instead
    async with hub.subscribed({}) as later:
        assert later.queue.empty()


def event(device_id: str, seq: int) -> DeviceEventRecorded:
    return DeviceEventRecorded(device_id=device_id, seq=seq, ts=float(seq), type="t")


def test_recent_events_are_deduplicated_newest_first_and_bounded() -> None:
    recent = RecentEvents(per_device=3, devices=2)
    recent.add([event("a", 2), event("a", 1), event("a", 2), event("a", 4), event("a", 3)])
    assert [e.seq for e in recent.of("a")] == [4, 3, 2]
    recent.add([event("b", 1), event("c", 1)])  # a is the least recently heard from: dropped
    assert recent.of("a") == [] and [e.seq for e in recent.of("c")] == [1]
