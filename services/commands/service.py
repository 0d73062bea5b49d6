"""The commands app's shell around `services.domain.commands`: queue, deliver, take results,
answer syncs, expire, cancel. Handlers translate transport to these calls; decisions are the core's.

Writes go index entry -> due shard -> record -> publish -> DELIVERED, so a crash anywhere leaves
at worst an index entry without a record (forgotten once its time is up) or a stored command not
yet published (the device's next sync or the sweep publishes it). Publishing again is always safe:
the device de-duplicates by command id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import structlog

from services.commands.metrics import CANCELLED, COMPLETED, DELIVERED, EXPIRED, QUEUED, RESULTS, SWEPT, SYNCS
from services.commands.settings import CommandsSettings
from services.commands.store import CommandStore
from services.contracts.commands import CommandStatus
from services.contracts.topics import DeviceChannels
from services.contracts.wire import decode_payload
from services.domain.commands.index import CommandIndex, Settled, resend_due, settle
from services.domain.commands.record import DeviceCommand, cancel, complete, deliver, expire
from services.domain.commands.requests import CommandRequest, new_command, parse_request, parse_result, same_request
from services.domain.errors import TwinError, conflict, not_found, too_many_requests
from services.platform.sidecar import Sidecar, gather_bounded
from services.platform.state import StateRepository, StoreBusy

log = structlog.get_logger()
Step = Callable[[DeviceCommand], DeviceCommand]


class Outcome(StrEnum):
    """What the app answers daprd for one delivered device message."""

    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    DROP = "DROP"


class CommandService:
    def __init__(
        self,
        sidecar: Sidecar,
        settings: CommandsSettings,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._sidecar = sidecar
        self._settings = settings
        self._clock = clock
        self._new_id = new_id
        self.store = CommandStore(
            StateRepository(sidecar), settings.commands_retention, settings.commands_max_listed, clock
        )

    # -- REST ------------------------------------------------------------------------------------
    async def create(self, device_id: str, body: Any) -> tuple[DeviceCommand, bool]:
        """Queue a command and publish it at once: `(command, True)`. A request naming an `id` that
        exists is an idempotent retry: `(that command, False)`, or 409 if it asked for another."""
        request = parse_request(body)
        if request.id is not None:
            existing = await self.store.command(device_id, request.id)
            if existing is not None:
                return await self._again(existing, request), False
        now = self._clock()
        command = new_command(device_id, request, self._new_id(), now)
        limit = self._settings.commands_max_pending

        def add(index: CommandIndex) -> CommandIndex:
            if command.id not in index.entries and index.live_pending(now) >= limit:
                raise too_many_requests(f"device {device_id} has {limit} pending commands; wait for some to finish")
            return index.with_commands([command])

        await self.store.update_index(device_id, add)
        await self.store.schedule(
            device_id, min(command.expires_at, command.created_at + self._settings.commands_redeliver_after)
        )
        if not await self.store.create(command):  # the same id created meanwhile (a racing retry)
            existing = await self.store.command(device_id, command.id)
            if existing is None:
                raise StoreBusy(f"command {command.id} of {device_id} vanished while being created")
            return await self._again(existing, request), False
        QUEUED.inc()
        log.info(
            "command queued",
            device_id=device_id,
            command_id=command.id,
            name=command.name,
            expires_at=command.expires_at,
        )
        return await self._send(command, "create"), True

    async def get(self, device_id: str, command_id: str) -> DeviceCommand:
        """The command as it is now (a due one is expired on the way); 404 when unknown."""
        command = await self.store.command(device_id, command_id)
        if command is None:
            raise not_found(f"no command {command_id} for device {device_id}")
        return await self._settled(command)

    async def list_commands(self, device_id: str, status: CommandStatus | None, limit: int) -> list[DeviceCommand]:
        """The device's commands, newest first, optionally only those in `status`."""
        index = await self.store.index(device_id)
        ids = index.newest_first()
        records = await self.store.commands(device_id, ids)
        found: list[DeviceCommand] = []
        for command_id in ids:
            record = records[command_id]
            if record is None:
                continue
            record = await self._settled(record)
            if status is None or record.status is status:
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    async def cancel(self, device_id: str, command_id: str) -> DeviceCommand:
        """CANCELLED; 404 when unknown, 409 when it already finished (or expired)."""
        await self.get(device_id, command_id)
        changed = await self._apply(device_id, command_id, lambda c: cancel(c, self._clock()))
        if changed is None:
            raise not_found(f"no command {command_id} for device {device_id}")
        return changed[1]

    # -- device messages -------------------------------------------------------------------------
    async def take_result(self, device_id: str, command_id: str, payload: bytes) -> Outcome:
        """A device's result: the first one completes the command, any later one (or one after the
        command expired or was cancelled) is ignored. Malformed results are dropped."""
        where = {"device_id": device_id, "command_id": command_id}
        try:
            result = parse_result(decode_payload(payload)[0])
        except TwinError as error:
            RESULTS.labels("malformed").inc()
            log.warning("malformed command result dropped", error=error.message, **where)
            return Outcome.DROP
        changed = await self._apply(device_id, command_id, lambda c: complete(c, result, self._clock()))
        if changed is None:
            RESULTS.labels("unknown").inc()
            log.info("result for an unknown command ignored", **where)
        elif changed[0].pending and changed[1].status is result.status:
            RESULTS.labels("taken").inc()
        else:
            RESULTS.labels("ignored").inc()
            log.info("command result ignored", status=changed[1].status.value, offered=result.status.value, **where)
        return Outcome.SUCCESS

    async def sync(self, device_id: str) -> int:
        """The device (re)connected: publish every pending, unexpired command of it again, oldest
        first; returns how many."""
        SYNCS.inc()
        settled = await self._settle_device(device_id)
        for command in settled.pending:
            await self._send(command, "sync")
        log.info("device synced its commands", device_id=device_id, pending=len(settled.pending))
        return len(settled.pending)

    # -- the sweep -------------------------------------------------------------------------------
    async def sweep_once(self) -> int:
        """One round: look at up to `commands_sweep_batch` due devices (earliest first) — expire what
        is due, publish what was never published — then reschedule each. Returns devices visited."""
        now = self._clock()
        due = sorted(entry for shard in await self.store.shards() for entry in shard.due(now))
        due = due[: self._settings.commands_sweep_batch]
        outcomes = await gather_bounded(
            asyncio.Semaphore(16), [self._visit(device_id, token) for _, device_id, token in due]
        )
        for (_, device_id, _), outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("sweep of a device failed; retried next round", device_id=device_id, error=str(outcome))
        SWEPT.inc(len(due))
        return len(due)

    async def run_sweeper(self) -> None:
        """Sweep every `commands_sweep_interval` seconds, for ever (a task of the app's lifespan)."""
        while True:
            try:
                await self.sweep_once()
            except Exception as error:  # noqa: BLE001 - the next round tries again
                log.warning("sweep round failed", error=str(error))
            await asyncio.sleep(self._settings.commands_sweep_interval)

    async def _visit(self, device_id: str, token: str) -> None:
        settled = await self._settle_device(device_id)
        now = self._clock()
        redeliver_after = self._settings.commands_redeliver_after
        for command in resend_due(settled.pending, now, redeliver_after):
            await self._send(command, "sweep")
        index = await self.store.index(device_id)
        await self.store.reschedule(device_id, token, index.next_due(self._clock(), redeliver_after))

    # -- shared steps ----------------------------------------------------------------------------
    async def _again(self, existing: DeviceCommand, request: CommandRequest) -> DeviceCommand:
        """An idempotent create of `existing`; a never-published one is published now."""
        if not same_request(existing, request):
            raise conflict(f"command id {existing.id} is already used by a different command")
        command = await self._settled(existing)
        return await self._send(command, "create") if command.status is CommandStatus.QUEUED else command

    async def _send(self, command: DeviceCommand, via: str) -> DeviceCommand:
        """Publish the command to its device, then count the delivery; a failed publish is logged
        and left to the next sync or sweep."""
        topic = DeviceChannels(command.device_id).command(command.id)
        try:
            await self._sidecar.publish_device(topic, command.message())
        except Exception as error:  # noqa: BLE001 - still pending: sync or the sweep publishes it again
            log.warning("command publish failed", device_id=command.device_id, command_id=command.id, error=str(error))
            return command
        DELIVERED.labels(via).inc()
        log.info("command published", device_id=command.device_id, command_id=command.id, via=via)
        changed = await self._apply(command.device_id, command.id, lambda c: deliver(c, self._clock()))
        return command if changed is None else changed[1]

    async def _settled(self, command: DeviceCommand) -> DeviceCommand:
        """`command`, expired in the store first if its time is up (lazy expiry)."""
        if not command.due(self._clock()):
            return command
        changed = await self._apply(command.device_id, command.id, lambda c: expire(c, self._clock()))
        return command if changed is None else changed[1]

    async def _settle_device(self, device_id: str) -> Settled:
        """Expire the device's due commands and refresh its index from the records."""
        index = await self.store.index(device_id)
        records = await self.store.commands(device_id, index.pending_ids())
        now = self._clock()
        settled = settle(index, records, now)
        seen = list(settled.seen)
        for command in settled.expired:
            changed = await self._transition(device_id, command.id, lambda c: expire(c, now))
            if changed is not None:
                seen.append(changed[1])
        if settled.forget or seen:
            await self.store.update_index(device_id, lambda ix: ix.with_commands(seen).without(settled.forget))
        return settled

    async def _apply(self, device_id: str, command_id: str, step: Step) -> tuple[DeviceCommand, DeviceCommand] | None:
        """`_transition`, then the index learns of a command that finished."""
        changed = await self._transition(device_id, command_id, step)
        if changed is not None and changed[0].pending and not changed[1].pending:
            after = changed[1]
            await self.store.update_index(device_id, lambda ix: ix.with_commands([after]))
        return changed

    async def _transition(
        self, device_id: str, command_id: str, step: Step
    ) -> tuple[DeviceCommand, DeviceCommand] | None:
        """One conditional transition of the record, counted and logged when its status changed."""
        changed = await self.store.transition(device_id, command_id, step)
        if changed is not None and changed[0].status is not changed[1].status:
            _count(changed[1])
        return changed


def _count(after: DeviceCommand) -> None:
    where = {"device_id": after.device_id, "command_id": after.id, "deliveries": after.deliveries}
    if after.status is CommandStatus.EXPIRED:
        EXPIRED.inc()
        log.info("command expired", **where)
    elif after.status is CommandStatus.CANCELLED:
        CANCELLED.inc()
        log.info("command cancelled", **where)
    elif after.status in (CommandStatus.SUCCEEDED, CommandStatus.FAILED):
        COMPLETED.labels(after.status.value).inc()
        log.info("command completed", status=after.status.value, reason=after.reason, **where)
