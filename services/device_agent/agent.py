"""The device agent's behaviour: keep the device in step with its twin, offline-first.

Boot and every reconnect: get the twin -> apply what differs -> report (reconcile). Deltas are
applied as they come, discarding any not newer than what was applied. Events go through the
outbox; durable commands run once (results are kept, so a redelivered command is answered again,
not run again). All applying is serialised, so handlers never run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from services.contracts.agent import AgentStatus, OutboxStatus
from services.contracts.commands import CommandMessage, CommandResultMessage, CommandStatus
from services.contracts.topics import DeviceChannels, Operation, Reply, TopicProfile, TwinAddress
from services.device_agent.handlers import Handler, HandlerFailed, ReportsProgress
from services.device_agent.link import AgentSidecar, Unreachable
from services.device_agent.metrics import APPLIES, COMMANDS, DELTAS, DROPPED, OUTBOX, RECONNECTS
from services.device_agent.outbox import Outbox
from services.domain.device.core import (
    Applied,
    DeviceView,
    Failed,
    Outcome,
    diff_patch,
    plan_apply,
    report_for,
    take_delta,
    take_document,
    took_report,
)
from services.domain.json_values import JsonObject

log = structlog.get_logger()
VIEW_KEY = "agent~view"
COMMAND_RESULT_TTL = 7 * 24 * 3600


CommandRunner = Callable[[JsonObject], Awaitable[JsonObject]]


class RequestRejected(Exception):
    def __init__(self, payload: JsonObject) -> None:
        super().__init__(f"{payload.get('code')}: {payload.get('message')}")
        self.code = int(payload.get("code", 0))


class DeviceAgent:
    def __init__(
        self,
        device_id: str,
        profile: TopicProfile,
        sidecar: AgentSidecar,
        handlers: Sequence[Handler],
        outbox: Outbox,
        *,
        probe_interval: float,
        request_timeout: float,
        resync_interval: float,
        heartbeat_interval: float,
    ) -> None:
        self.address = TwinAddress(device_id)
        self.profile = profile
        self.channels = DeviceChannels(device_id)
        self.sidecar = sidecar
        self.handlers = {h.key: h for h in handlers}
        self.outbox = outbox
        self.probe_interval = probe_interval
        self.request_timeout = request_timeout
        self.resync_interval = resync_interval
        self.heartbeat_interval = heartbeat_interval
        self.view = DeviceView()
        self.connected = False
        self.commands: dict[str, CommandRunner] = {"ping": self._ping, "reconcile": self._reconcile_command}
        self._pending: dict[str, asyncio.Future[tuple[Reply, JsonObject]]] = {}
        self._apply_lock = asyncio.Lock()
        self._command_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._events_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.log = log.bind(device_id=device_id)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        # The app's lifespan connects the sidecar; every sidecar call waits for that.
        self.view = DeviceView.from_json(await self.sidecar.load(VIEW_KEY))
        await self.outbox.load()
        self._gauge()
        self._tasks.append(asyncio.create_task(self._flusher()))
        while True:
            if not self.connected:
                await self._probe()
            self._wake.clear()
            await self._on_connected()
            last_reconcile = time.monotonic()
            while self.connected and not self._wake.is_set():
                # MQTT reconnects happen inside the sidecar, unseen by the app: a heartbeat probe
                # notices an outage, and the reconcile after it catches up on what was missed.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.heartbeat_interval)
                if self._wake.is_set() or time.monotonic() - last_reconcile >= self.resync_interval:
                    break
                try:
                    await self.sidecar.send(self.channels.probe, {"ts": time.time()})
                except Unreachable:
                    self.lost()

    async def _probe(self) -> None:
        """Publish to the probe topic until the broker acknowledges (nobody subscribes to it)."""
        while True:
            try:
                await self.sidecar.send(self.channels.probe, {"ts": time.time()})
            except Unreachable:
                await asyncio.sleep(self.probe_interval)
                continue
            self.connected = True
            RECONNECTS.inc()
            self.log.info("cloud reachable")
            return

    async def _on_connected(self) -> None:
        try:
            await self.reconcile()
            await self.sidecar.send(self.channels.commands_sync, {})
            self._events_ready.set()
        except Unreachable:
            self.lost()
        except (RequestRejected, TimeoutError) as error:
            self.log.warning("reconcile failed; retrying", error=str(error))
            await asyncio.sleep(self.probe_interval)
            self._wake.set()

    def request_reconcile(self) -> None:
        """Reconcile soon (a handler's wait ended: consent given, a deadline passed)."""
        self._wake.set()

    def lost(self) -> None:
        """The broker stopped acknowledging: probe until it is back, then reconcile."""
        if self.connected:
            self.log.warning("cloud unreachable; working offline")
        self.connected = False
        self._wake.set()

    # -- twin --------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """get -> apply what differs -> report."""
        async with self._apply_lock:
            try:
                document = await self.request(Operation.GET, {})
            except RequestRejected as error:
                if error.code != 404:
                    raise
                document = {"state": {}, "version": self.view.version}
            view = take_document(self.view, document)
            await self._converge(view if view is not None else self.view)

    async def on_delta(self, message: JsonObject) -> None:
        async with self._apply_lock:
            view = take_delta(self.view, message)
            if view is None:
                DELTAS.labels("discarded").inc()
                return
            DELTAS.labels("taken").inc()
            try:
                await self._converge(view)
            except Unreachable:
                self.lost()
            except (RequestRejected, TimeoutError) as error:
                self.log.warning("report after delta failed; will reconcile", error=str(error))
                self._wake.set()

    async def _converge(self, view: DeviceView) -> None:
        self.view = view
        await self.sidecar.store(VIEW_KEY, view.to_json())
        current = {key: await handler.current() for key, handler in self.handlers.items()}
        done = {key: h.satisfied for key, h in self.handlers.items() if isinstance(h, ReportsProgress)}
        plan = plan_apply(view, current, self.handlers.keys(), done)
        outcomes: dict[str, Outcome] = {}
        for key, desired in plan.apply.items():
            outcomes[key] = await self._apply(key, desired)
        # Against the reported state as it is now: long applies report their progress meanwhile.
        patch = report_for(self.view, current, outcomes, plan.unsupported)
        if patch:
            await self.request(Operation.UPDATE, {"state": {"reported": patch}})
            self.view = took_report(self.view, patch)
            await self.sidecar.store(VIEW_KEY, self.view.to_json())
        self.log.info("converged", version=self.view.version, applied=sorted(plan.apply), reported=sorted(patch))

    async def _apply(self, key: str, desired: Any) -> Outcome:
        handler = self.handlers[key]
        if isinstance(handler, ReportsProgress):
            handler.report = lambda value: self._report_progress(key, value)
        try:
            value = await handler.apply(desired)
        except HandlerFailed as error:
            APPLIES.labels(key, "failed").inc()
            return Failed(error.reason)
        except Exception as error:  # a handler bug must not take the agent down
            self.log.exception("handler error", key=key)
            APPLIES.labels(key, "failed").inc()
            return Failed(f"handler error: {type(error).__name__}: {error}")
        APPLIES.labels(key, "applied").inc()
        return Applied(value)

    async def _report_progress(self, key: str, value: Any) -> None:
        """Report an intermediate value of `key` while its handler works (best effort: an update
        keeps going offline, and the final report says how it ended)."""
        patch = {key: diff_patch(self.view.reported.get(key), value)}
        try:
            await self.request(Operation.UPDATE, {"state": {"reported": patch}})
        except (Unreachable, RequestRejected, TimeoutError) as error:
            self.log.info("progress not reported", key=key, error=str(error))
            return
        self.view = took_report(self.view, patch)
        await self.sidecar.store(VIEW_KEY, self.view.to_json())

    async def request(self, op: Operation, payload: JsonObject) -> JsonObject:
        """Send a twin request and wait for its answer (matched by clientToken)."""
        token = uuid.uuid4().hex
        future: asyncio.Future[tuple[Reply, JsonObject]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            await self.sidecar.send(self.profile.request_topic(self.address, op), {**payload, "clientToken": token})
            reply, answer = await asyncio.wait_for(future, self.request_timeout)
        finally:
            self._pending.pop(token, None)
        if reply is Reply.REJECTED:
            raise RequestRejected(answer)
        return answer

    def on_reply(self, reply: Reply, payload: JsonObject) -> None:
        future = self._pending.get(str(payload.get("clientToken", "")))
        if future is not None and not future.done():
            future.set_result((reply, payload))

    # -- events ------------------------------------------------------------------------------
    async def record_event(self, type_: str, data: JsonObject, ts: float | None = None) -> int:
        seq = await self.outbox.append(type_, data, ts)
        self._gauge()
        self._events_ready.set()
        return seq

    async def _flusher(self) -> None:
        while True:
            await self._events_ready.wait()
            self._events_ready.clear()
            if not self.connected:
                continue
            try:
                await self.outbox.flush()
            except Unreachable:
                self.lost()
            self._gauge()

    def _gauge(self) -> None:
        OUTBOX.set(self.outbox.meta.size)
        DROPPED.set(self.outbox.meta.dropped)

    # -- durable commands --------------------------------------------------------------------
    async def on_command(self, command: CommandMessage) -> None:
        """Run a command once and send its result; a command seen before gets its kept result.
        Commands are taken one at a time: after a reconnect the broker's queued copy and the
        sync's re-publish of the same command arrive together."""
        key = f"command~{command.id}"
        async with self._command_lock:
            kept = await self.sidecar.load(key)
            if kept is None:
                if command.expires_at < time.time():
                    COMMANDS.labels("expired").inc()
                    self.log.info("command expired before it arrived", command_id=command.id)
                    return
                result = await self._run_command(command)
                await self.sidecar.store(key, result.payload(), ttl_seconds=COMMAND_RESULT_TTL)
                COMMANDS.labels(result.status.lower()).inc()
            else:
                result = CommandResultMessage.model_validate(kept)
                COMMANDS.labels("repeated").inc()
        try:
            await self.sidecar.send(self.channels.command_result(command.id), result.payload())
        except Unreachable:
            self.lost()  # the result is kept; the sync after reconnecting sends it again

    async def _run_command(self, command: CommandMessage) -> CommandResultMessage:
        runner = self.commands.get(command.name)
        if runner is None:
            return CommandResultMessage(status=CommandStatus.FAILED, reason=f"unknown command {command.name!r}")
        try:
            return CommandResultMessage(status=CommandStatus.SUCCEEDED, result=await runner(command.args))
        except Exception as error:  # noqa: BLE001 - a command's failure is its result
            return CommandResultMessage(status=CommandStatus.FAILED, reason=f"{type(error).__name__}: {error}")

    async def _ping(self, args: JsonObject) -> JsonObject:
        return {"pong": time.time(), **args}

    async def _reconcile_command(self, args: JsonObject) -> JsonObject:
        self._wake.set()
        return {"version": self.view.version}

    def status(self) -> AgentStatus:
        return AgentStatus(
            device_id=self.address.device_id,
            connected=self.connected,
            view=self.view.to_json(),
            outbox=OutboxStatus(pending=self.outbox.meta.size, dropped=self.outbox.meta.dropped),
        )
