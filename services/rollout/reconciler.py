"""The rollout reconciler: keeps every configuration's membership from `twin.changed`, runs the
planner each round, and carries out its decisions as batched, conditional twin writes.

One loop does the work (planning rounds and writes), so decisions never interleave; event handlers
only update the membership (and the recent device events health gates count) and mark twins to look
at. Everything it holds in memory can be lost: configurations, their stage, holds, soaks, cohorts
and operator requests are stored, and each twin records what was applied to it (attempts, scheduled
retries, triggered installs), so after a restart a scan of the fleet rebuilds the same picture and
the same next step. Device events from before the restart are unknown: a health soak under way
runs on until it has watched its full length.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import structlog

from services.clients.base import ApiError, Unreachable
from services.clients.twin_store import TwinStoreClient
from services.contracts.events import DeviceEventRecorded, TwinChanged
from services.contracts.rollout import ConfigurationState
from services.contracts.twins import BatchItem, BatchResult, FullTwinSummary, TwinView, WriteOutcome
from services.domain.rollout.admissions import decide
from services.domain.rollout.configuration import CompiledConfiguration, Configuration
from services.domain.rollout.health import EventLog
from services.domain.rollout.membership import Membership
from services.domain.rollout.planner import Allowance
from services.domain.rollout.twin_plan import (
    TwinFacts,
    TwinWrite,
    error_marks,
    evaluate_twin,
    parse_marks,
    plan_twin,
    same_attempt,
)
from services.platform.lifecycle import TimeSlices
from services.platform.sidecar import WriteFailed
from services.rollout.metrics import EVALUATIONS, EVENTS_KEPT, WRITES, record_decision, record_mark, record_stats
from services.rollout.settings import RolloutSettings
from services.rollout.store import ConfigurationStore

log = structlog.get_logger()


class Reconciler:
    def __init__(self, store: ConfigurationStore, twins: TwinStoreClient, settings: RolloutSettings) -> None:
        self.store = store
        self.twins = twins
        self.settings = settings
        self.membership = Membership()
        self.compiled: dict[str, CompiledConfiguration] = {}
        self.ready = asyncio.Event()
        """Set once the stored configurations are loaded (events wait for it)."""
        self._unscanned: set[str] = set()
        """Configurations whose membership is incomplete until the running scan ends."""
        self._scan_lock = asyncio.Lock()
        self._scans: set[asyncio.Task[None]] = set()
        self._dirty: set[str] = set()
        self._intents: defaultdict[str, dict[str, int]] = defaultdict(dict)
        """Admissions decided but not yet written: device → {configuration: stage}."""
        self._stale: dict[str, float] = {}
        """Twins whose write met a newer version: when to re-read them if no event comes."""
        self._allowances: dict[str, Allowance] = {}
        self._wake = asyncio.Event()
        self.events = EventLog(retention=settings.rollout_event_retention)
        """Recent device events of the types health gates count."""
        self.observing_since = time.time()
        """Device events from before this instant are unknown (this process started)."""
        self.outside_window: dict[str, int] = {}
        """Per configuration: waiting twins not admissible in the last round."""
        self._pruned = 0.0
        self._slices = TimeSlices()

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Load configurations, scan the fleet if any is in force, then plan and write forever."""
        while True:
            try:
                configurations = await self.store.load()
                break
            except Exception as error:  # noqa: BLE001 - the store may still be starting
                log.warning("configurations not loaded yet", error=str(error))
                await asyncio.sleep(1)
        for configuration in configurations:
            if configuration.state is not ConfigurationState.DRAFT:
                self.compiled[configuration.id] = CompiledConfiguration(configuration)
        self.ready.set()
        if self.compiled:
            self.start_scan(set(self.compiled))
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except Exception as error:  # noqa: BLE001 - the next round tries again
                log.warning("rollout round failed", error=repr(error))
                await asyncio.sleep(1)
            spent = time.monotonic() - started
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, self.settings.rollout_tick_seconds - spent))
            self._wake.clear()

    def start_scan(self, configuration_ids: set[str]) -> None:
        self._unscanned |= configuration_ids
        task = asyncio.create_task(self._scan(configuration_ids))
        self._scans.add(task)
        task.add_done_callback(self._scans.discard)

    async def _scan(self, configuration_ids: set[str]) -> None:
        """Page through the fleet, evaluating every configuration on every twin (on activation and
        at start only; afterwards `twin.changed` keeps membership current)."""
        async with self._scan_lock:
            while True:
                try:
                    seen = 0
                    async for page in self.twins.pages(self.settings.rollout_page):
                        now = int(time.time())
                        for view in page:
                            if view.shadow:
                                continue
                            self._observe_view(view, now)
                            seen += 1
                            await self._slices.pause()
                        await asyncio.sleep(0)
                    break
                except (ApiError, Unreachable) as error:
                    log.warning("fleet scan failed; starting over", error=str(error))
                    await asyncio.sleep(1)
            self._unscanned -= configuration_ids
            log.info("fleet scanned", twins=seen, configurations=sorted(configuration_ids))
            self._wake.set()

    # -- observing twins -----------------------------------------------------------------------
    async def twin_changed(self, events: Iterable[TwinChanged]) -> None:
        await self.ready.wait()
        now = int(time.time())
        for event in events:
            await self._slices.pause()
            if event.shadow:
                continue
            if event.current is None:
                if event.version >= self.membership.version(event.device_id):
                    self.membership.put(event.device_id, None, self.compiled, now)
                    self._intents.pop(event.device_id, None)
                continue
            state = event.current.get("state", {})
            self._observe(
                event.device_id,
                event.version,
                event.tags,
                state.get("desired", {}),
                state.get("reported", {}),
                event.configurations,
                now,
            )
        self._wake.set()

    async def device_events(self, events: Iterable[DeviceEventRecorded]) -> None:
        """Keep the device events some health gate counts (by when they arrived, not device time)."""
        await self.ready.wait()
        wanted = self.counted_event_types()
        if not wanted:
            return
        now = time.time()
        for event in events:
            if event.type in wanted:
                self.events.add(event.device_id, event.seq, event.type, now)

    def counted_event_types(self) -> set[str]:
        return {
            kind
            for c in self.compiled.values()
            if c.configuration.state.live and (gate := c.configuration.spec.rollout.health) is not None
            for kind in gate.events
        }

    def _observe_view(self, view: FullTwinSummary | TwinView, now: int) -> None:
        self._observe(view.device_id, view.version, view.tags, view.desired, view.reported, view.configurations, now)

    def _observe(
        self,
        device_id: str,
        version: int,
        tags: dict[str, Any],
        desired: dict[str, Any],
        reported: dict[str, Any],
        configurations: dict[str, Any],
        now: int,
    ) -> None:
        """Take a twin at `version` unless a newer one is already known (events and scan pages
        arrive in any order; equal versions are re-evaluated: the event carries the full twin)."""
        if version < self.membership.version(device_id):
            return
        facts = evaluate_twin(device_id, version, tags, desired, reported, configurations, list(self.compiled.values()))
        EVALUATIONS.inc(len(self.compiled))
        self.membership.put(device_id, facts, self.compiled, now)
        self._stale.pop(device_id, None)
        if facts.hits or facts.marks:
            self._dirty.add(device_id)

    # -- configurations ------------------------------------------------------------------------
    def configuration_changed(self, configuration: Configuration, *, scan: bool = False) -> None:
        """Take a stored configuration's new revision into account (from the API or a round)."""
        previous = self.compiled.get(configuration.id)
        if configuration.state is ConfigurationState.DRAFT:
            return
        compiled = CompiledConfiguration(configuration)
        self.compiled[configuration.id] = compiled
        if scan:
            self.start_scan({configuration.id})
        if previous is not None and _replaces_members(previous.configuration, configuration):
            # placements depend on these (quarantine, retries, installs, state): place every member
            # again and look at each (an abort hands its keys on or rolls back; a trigger installs)
            self._dirty |= self.membership.replace(compiled, int(time.time()))
        self._wake.set()

    def configuration_deleted(self, configuration_id: str) -> None:
        self.compiled.pop(configuration_id, None)
        self.membership.forget(configuration_id)

    # -- one round -----------------------------------------------------------------------------
    async def round(self) -> None:
        now = time.time()
        self._dirty |= self.membership.refresh(self.compiled, int(now))
        for cid in self.compiled:
            self._dirty.update(self.membership.due_retries(cid, now))
        if now - self._pruned > 30:
            soaks = [g.soak_seconds for c in self.compiled.values() if (g := c.configuration.spec.rollout.health)]
            self.events.retention = max([self.settings.rollout_event_retention, *soaks])
            self.events.prune(now)
            self._pruned = now
            EVENTS_KEPT.set(sum(1 for _ in self.events.devices()))
        await self._progress(now)
        await self._recheck_stale(now)
        await self._write_dirty(int(now))
        for cid, compiled in self.compiled.items():
            record_stats(compiled.configuration, self.membership.stats(cid), self.outside_window.get(cid, 0))

    async def _progress(self, now: float) -> None:
        """One planner step per configuration in force: a decision is stored (then taken into
        account), admissions become intents, written by `_write_dirty` this same round.

        While the fleet scan still runs, a configuration whose current stage takes every targeted
        twin, unpaced, admits the twins seen so far as they come (the scan is pipelined with the
        writes: who comes first does not matter when everyone is admitted at once); a staged or
        paced one waits for the whole fleet, so its stages keep their order. Decisions (next stage,
        completed, halted) always wait until every twin was seen."""
        for cid, compiled in list(self.compiled.items()):
            configuration = compiled.configuration
            if configuration.state not in (ConfigurationState.ACTIVE, ConfigurationState.COMPLETED):
                continue
            if cid in self._unscanned and not _admits_all_at_once(configuration):
                continue
            in_flight = {d for d, intents in self._intents.items() if cid in intents}
            allowance = self._allowances.get(cid) or Allowance.fresh(now)
            decision = decide(compiled, self.membership, self.events, allowance, now, in_flight, self.observing_since)
            if decision.changed and cid in self._unscanned:
                continue
            self._allowances[cid] = decision.allowance
            self.outside_window[cid] = decision.outside_window
            if decision.changed:
                try:
                    await self.store.save(decision.configuration)
                except WriteFailed as error:
                    log.warning("configuration changed meanwhile; next round", id=cid, error=str(error))
                    continue
                log.info("rollout step", id=cid, notes=decision.notes)
                record_decision(configuration, decision.configuration)
                self.configuration_changed(decision.configuration)
                continue
            for device_id in decision.admit:
                self._intents[device_id][cid] = decision.stage
                self._dirty.add(device_id)

    async def _recheck_stale(self, now: float) -> None:
        due = [d for d, at in self._stale.items() if at <= now]
        for device_id in due[:100]:
            self._stale.pop(device_id, None)
            try:
                view = await self.twins.get(device_id)
            except (ApiError, Unreachable) as error:
                log.warning("twin re-read failed", device_id=device_id, error=str(error))
                self._stale[device_id] = now + self.settings.rollout_stale_after
                continue
            if view is None:
                self.membership.put(device_id, None, self.compiled, int(now))
                self._intents.pop(device_id, None)
            else:
                self._observe_view(view, int(now))

    async def _write_dirty(self, now: int) -> None:
        batch_size = self.settings.rollout_batch
        writes: list[TwinWrite] = []
        for device_id in list(self._dirty):
            if device_id in self._stale:
                continue
            self._dirty.discard(device_id)
            facts = self.membership.facts.get(device_id)
            if facts is None:
                self._intents.pop(device_id, None)
                continue
            intents = self._intents.get(device_id, {})
            write = plan_twin(facts, self.compiled, intents, now)
            if write is None:
                self._intents.pop(device_id, None)
                continue
            writes.append(write)
        if not writes:
            return
        limit = asyncio.Semaphore(self.settings.rollout_concurrency)
        batches = [writes[i : i + batch_size] for i in range(0, len(writes), batch_size)]
        await asyncio.gather(*(self._write_batch(batch, limit, now) for batch in batches))

    async def _write_batch(self, batch: list[TwinWrite], limit: asyncio.Semaphore, now: int) -> None:
        async with limit:
            try:
                results = await self.twins.write([_item(w) for w in batch])
            except (ApiError, Unreachable) as error:
                log.warning("batch write failed; retrying next round", twins=len(batch), error=str(error))
                WRITES.labels("unavailable").inc(len(batch))
                self._dirty |= {w.device_id for w in batch}
                await asyncio.sleep(1)
                return
        refused: list[TwinWrite] = []
        for write, result in zip(batch, results, strict=True):
            outcome = result.outcome
            WRITES.labels(outcome.value).inc()
            if result.landed:
                self._written(write, result, now)
            elif outcome is WriteOutcome.CONFLICT:
                self._stale[write.device_id] = time.time() + self.settings.rollout_stale_after
            elif outcome is WriteOutcome.NOT_FOUND:
                self.membership.put(write.device_id, None, self.compiled, now)
                self._intents.pop(write.device_id, None)
            elif write.admitted and result.version is not None:
                marks = error_marks(write, f"{result.status}: {result.message}", now)
                refused.append(TwinWrite(write.device_id, result.version, {}, marks))
                log.warning("twin refused the configuration", device_id=write.device_id, message=result.message)
            else:
                log.warning(
                    "twin write refused", device_id=write.device_id, status=result.status, message=result.message
                )
                self._intents.pop(write.device_id, None)
        if refused:
            async with limit:
                try:
                    answers = await self.twins.write([_item(w) for w in refused])
                except (ApiError, Unreachable):
                    self._dirty |= {w.device_id for w in refused}
                    return
            for write, result in zip(refused, answers, strict=True):
                if result.landed:
                    self._written(write, result, now)

    def _written(self, write: TwinWrite, result: BatchResult, now: int) -> None:
        """Book a landed write until its `twin.changed` brings the re-evaluated twin."""
        self._intents.pop(write.device_id, None)
        old = self.membership.facts.get(write.device_id)
        if old is None or result.version is None or result.version <= old.version:
            return
        marks = parse_marks(result.configurations or {})
        changed = {cid for cid in set(marks) | set(old.marks) if marks.get(cid) != old.marks.get(cid)}
        for cid in changed:
            record_mark(old.marks.get(cid), marks.get(cid), cid)
        # the device has yet to answer what changed for it (a scheduled retry changes nothing for it)
        asked = {cid for cid in changed if not same_attempt(old.marks.get(cid), marks.get(cid))}
        hits = {cid: h.unjudged() if cid in asked else h for cid, h in old.hits.items()}
        facts = TwinFacts(write.device_id, result.version, marks, hits)
        self.membership.put(write.device_id, facts, self.compiled, now)

    def scanned(self, configuration_id: str) -> bool:
        """Whether the configuration's membership covers the whole fleet (its scan ended)."""
        return configuration_id not in self._unscanned

    @property
    def busy(self) -> bool:
        """Whether writes or scans are still under way (tests and benchmarks wait on it)."""
        return bool(self._dirty or self._intents or self._stale or self._unscanned)


def _replaces_members(before: Configuration, after: Configuration) -> bool:
    """Whether a change of the configuration changes where its members stand or what they need."""
    return (
        before.state is not after.state
        or before.quarantined != after.quarantined
        or before.retry_serial != after.retry_serial
        or before.install_triggers != after.install_triggers
    )


def _admits_all_at_once(configuration: Configuration) -> bool:
    """Whether the configuration's current stage covers every targeted twin, with no pace (flat
    or ramped)."""
    policy = configuration.spec.rollout
    stage = policy.stages[min(configuration.stage, len(policy.stages) - 1)]
    return stage.percent == 100 and policy.max_per_minute is None and policy.ramp is None


def _item(write: TwinWrite) -> BatchItem:
    """A planned twin write as the twin-store's batch item (conditional on the version planned on)."""
    return BatchItem(
        device_id=write.device_id,
        desired=write.desired or None,
        configurations=write.configurations or None,
        if_version=write.expected_version,
    )
