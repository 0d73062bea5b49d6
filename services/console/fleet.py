"""The console's worker: the fleet index (`services.domain.twin.fleet`) kept from `twin.changed`
and rebuilt by one scan of the twin-store at start, and the live hub that passes each change on
to the browsers following it (server-sent events), each within its caller's scope.

One console instance holds the whole index: its subscription is the app's (competing consumers
across replicas would each see only a share), so the console runs as one replica."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from services.clients.twin_store import TwinStoreClient
from services.console import metrics
from services.contracts.console import LiveChange
from services.contracts.events import DeviceEventRecorded, TwinChanged
from services.contracts.twins import FullTwinSummary
from services.domain.access import Scope, in_scope
from services.domain.twin.fleet import Entry, Facet, FleetIndex, entry_of

log = structlog.get_logger()
RELOAD = "reload"


def entry_of_change(event: TwinChanged) -> Entry:
    current = event.current
    reported = None if current is None else (current.get("state") or {}).get("reported") or {}
    return entry_of(event.device_id, event.version, event.timestamp, reported, event.tags, event.wire.value)


def entry_of_summary(item: FullTwinSummary) -> Entry:
    return entry_of(item.device_id, item.version, item.timestamp, item.reported, item.tags, item.wire)


@dataclass(eq=False)
class Subscriber:
    scope: Scope
    device: str
    queue: asyncio.Queue[LiveChange | str] = field(default_factory=lambda: asyncio.Queue(1000))


class LiveHub:
    """Fan-out of twin changes to live subscribers; one that falls behind gets `reload` (its page
    fetches afresh) instead of the changes it missed."""

    def __init__(self, queue_size: int) -> None:
        self._subscribers: set[Subscriber] = set()
        self._queue_size = queue_size

    @asynccontextmanager
    async def subscribed(self, scope: Scope, device: str = "") -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(scope, device, asyncio.Queue(self._queue_size))
        self._subscribers.add(subscriber)
        metrics.LIVE.set(len(self._subscribers))
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            metrics.LIVE.set(len(self._subscribers))

    def publish(self, changes: Iterable[tuple[LiveChange, dict[str, object]]]) -> None:
        for change, tags in changes:
            for subscriber in self._subscribers:
                if subscriber.device and subscriber.device != change.device_id:
                    continue
                if subscriber.scope and not in_scope(tags, subscriber.scope):
                    continue
                try:
                    subscriber.queue.put_nowait(change)
                except asyncio.QueueFull:
                    metrics.LIVE_DROPPED.inc()
                    while not subscriber.queue.empty():
                        subscriber.queue.get_nowait()
                    subscriber.queue.put_nowait(RELOAD)


class RecentEvents:
    """The last `per_device` events of the `devices` most recently heard from (`device.events`),
    de-duplicated and ordered by (device, seq) as that topic's contract asks."""

    def __init__(self, per_device: int = 20, devices: int = 10_000) -> None:
        self._per_device = per_device
        self._devices = devices
        self._events: OrderedDict[str, dict[int, DeviceEventRecorded]] = OrderedDict()

    def add(self, events: Sequence[DeviceEventRecorded]) -> None:
        for event in events:
            kept = self._events.setdefault(event.device_id, {})
            self._events.move_to_end(event.device_id)
            kept[event.seq] = event
            if len(kept) > self._per_device:
                del kept[min(kept)]
            if len(self._events) > self._devices:
                self._events.popitem(last=False)

    def of(self, device_id: str) -> list[DeviceEventRecorded]:
        """Newest first."""
        return [e for _, e in sorted(self._events.get(device_id, {}).items(), reverse=True)]

    async def take(self, events: Sequence[DeviceEventRecorded]) -> None:
        self.add(events)


class FleetView:
    """The index, its rebuild, and the hub fed by the same changes."""

    def __init__(self, twins: TwinStoreClient, hub: LiveHub, scan_page: int) -> None:
        self.index = FleetIndex()
        self.hub = hub
        self.ready = False
        self._twins = twins
        self._scan_page = scan_page

    async def twin_changed(self, events: Sequence[TwinChanged]) -> None:
        live = []
        for event in events:
            if event.shadow:
                continue  # named shadows are not devices
            applied = self.index.apply(entry_of_change(event))
            metrics.CHANGES.labels("applied" if applied else "ignored").inc()
            if applied:
                change = LiveChange(
                    device_id=event.device_id,
                    version=event.version,
                    timestamp=event.timestamp,
                    cause=event.cause,
                    deleted=event.current is None,
                )
                live.append((change, dict(event.tags)))
        self._export()
        self.hub.publish(live)

    def _export(self) -> None:
        metrics.INDEXED.set(len(self.index))
        _, counts = self.index.counts()
        metrics.DEVICES.clear()
        for facet in (Facet.CONNECTION, Facet.ENCODING, Facet.SOFTWARE):
            for value, count in counts[facet].items():
                metrics.DEVICES.labels(facet.value, value).set(count)

    async def rebuild(self) -> None:
        """Read every twin once (retrying while the twin-store is not up yet); events arriving
        meanwhile are applied as they come, the newer version winning either way."""
        started = time.monotonic()
        while True:
            try:
                async for page in self._twins.pages(self._scan_page):
                    self.index.apply_all(entry_of_summary(item) for item in page if not item.shadow)
                    metrics.INDEXED.set(len(self.index))
                    await asyncio.sleep(0)
                break
            except Exception as error:  # noqa: BLE001 - the twin-store may not be up yet: try again
                log.warning("fleet index scan failed; retrying", error=repr(error))
                await asyncio.sleep(1.0)
        self.ready = True
        self._export()
        metrics.REBUILD_SECONDS.set(time.monotonic() - started)
        log.info("fleet index rebuilt", twins=len(self.index), seconds=round(time.monotonic() - started, 2))
