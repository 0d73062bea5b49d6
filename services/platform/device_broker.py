"""An app's own MQTT connection to the device broker, for the device path's hot ends: the
twin-store takes device requests from it and answers on it, the delta app sends deltas and
documents on it. State and internal events stay on Dapr; only the per-message hop through a
sidecar is gone (it cost as much CPU as the app itself, `make bench`).

Delivery is what daprd's `pubsub.mqtt3` gave, made explicit: QoS 1 on a persistent session (a
fixed client id per instance, clean session off), and a message is acknowledged only after its
handler returned, i.e. after its write is durable and its reply published. A handler that raises
is run again (with backoff) while the message is held; a process that dies holding messages gets
them again from the broker when it reconnects (MQTT resends unacknowledged messages of a
persistent session), and the clientToken replay answers a request that was already applied.
An acknowledgement is only ever sent on the connection the message came on: after a reconnect
the broker resends what was not acknowledged, so a late acknowledgement is dropped, never sent
for a packet id the new connection gave to another message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho
import structlog

from services.contracts.wire import WireEncoding, encode_payload

log = structlog.get_logger()
Handler = Callable[[str, bytes], Awaitable[None]]
"""(topic, payload) → done once the message may be acknowledged; raises to have it run again."""
_TLS_SCHEMES = {"ssl", "tls", "mqtts", "tcps"}
_MANY_IN_FLIGHT = 10_000
"""Publishes in flight at once beyond which aiomqtt warns (far above what the apps put in flight)."""
DeviceMessage = tuple[str, dict[str, Any], WireEncoding]
"""(topic, payload, the device's encoding) of one message to a device."""


class DevicePublisher(Protocol):
    """What publishes to device topics: a `DeviceBroker`, or a `Sidecar` (through daprd)."""

    async def publish_device(
        self, topic: str, payload: dict[str, Any], encoding: WireEncoding = WireEncoding.JSON
    ) -> None: ...

    async def publish_devices(self, messages: Sequence[DeviceMessage]) -> None:
        """All of them, in order; returns once all were published, raises if any was not."""
        ...


async def publish_in_chunks(publisher: DevicePublisher, messages: Sequence[DeviceMessage], chunk: int) -> None:
    """`messages` in order, at most `chunk` of them in flight at once."""
    for start in range(0, len(messages), chunk):
        await publisher.publish_devices(messages[start : start + chunk])


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`tcp://user:password@host:port` (as `pubsub.mqtt3` takes it; `ssl://`/`mqtts://` for TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in {"tcp", "mqtt", *_TLS_SCHEMES} or not parts.hostname:
            raise ValueError("the device broker URL must look like tcp://user:password@host:port")
        tls = parts.scheme in _TLS_SCHEMES
        return cls(
            parts.hostname,
            parts.port or (8883 if tls else 1883),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            tls,
        )


class DeviceBroker:
    """One persistent-session connection (reconnected for ever while `run` runs): subscriptions
    delivered to `handler` with manual acknowledgement, and QoS 1 publishes."""

    def __init__(self, url: Callable[[], Awaitable[str]], client_id: str, max_inflight: int = 0) -> None:
        """`url` gives the broker's URL when first connecting (from the secret store: it holds the
        service account's password). `max_inflight` bounds paho's QoS 1 publishes in flight; 0
        leaves the bound to the callers (the apps' publish concurrency and batch sizes): with a
        bound, paho walks every message it holds on each acknowledgement (a third of the
        publisher's CPU with 1,000 in flight, 20,000 messages to a local Mosquitto)."""
        self._url = url
        self._address: BrokerAddress | None = None
        self._client_id = client_id
        self._subscriptions: list[str] = []
        self._handler: Handler | None = None
        self._max_inflight = max_inflight
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._generation = 0
        self._replaced = asyncio.Event()
        """Set once a newer connection than the current one is up (then a fresh one is made)."""
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(self, subscriptions: Sequence[str], handler: Handler) -> None:
        """Subscribe to `subscriptions` (QoS 1) on every connection and hand what arrives to
        `handler`; call before `run`."""
        self._subscriptions = list(subscriptions)
        self._handler = handler

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def ping(self) -> None:
        """Raise unless connected (readiness)."""
        if not self._connected.is_set():
            raise RuntimeError("not connected to the device broker")

    async def run(self) -> None:
        """Connect, subscribe and deliver; on any connection loss, connect again."""
        delay = 0.1
        while True:
            try:
                await self._session()
                delay = 0.1
            except aiomqtt.MqttError as error:
                log.warning("device broker connection lost", error=str(error))
            except Exception as error:  # noqa: BLE001 - e.g. the secret store not answering yet: try again
                log.warning("device broker not connected", error=repr(error))
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 2.0)

    async def _session(self) -> None:
        if self._address is None:
            self._address = BrokerAddress.parse(await self._url())
        address = self._address
        client = aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=self._client_id,
            clean_session=False,
            keepalive=30,
            max_inflight_messages=self._max_inflight,
            tls_context=ssl.create_default_context() if address.tls else None,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        client._client.manual_ack_set(True)  # aiomqtt 2.5 does not expose paho's manual acknowledgement
        # Hundreds of publishes in flight is the design (a batch's replies, a fan-out), not a sign
        # of trouble: aiomqtt would log a warning for each one beyond 10.
        client.pending_calls_threshold = 2 * (self._max_inflight or _MANY_IN_FLIGHT)
        async with client:
            self._generation += 1
            generation = self._generation
            for topic in self._subscriptions:
                await client.subscribe(topic, qos=1)
            self._client = client
            self._replaced.set()
            self._replaced = asyncio.Event()
            self._connected.set()
            log.info("device broker connected", client_id=self._client_id, subscriptions=self._subscriptions)
            async for message in client.messages:
                task = asyncio.create_task(self._deliver(client, generation, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, client: aiomqtt.Client, generation: int, message: aiomqtt.Message) -> None:
        assert self._handler is not None
        topic, payload = str(message.topic), bytes(message.payload)
        delay = 0.05
        while True:
            try:
                await self._handler(topic, payload)
                break
            except Exception as error:  # noqa: BLE001 - held and run again; the replay keeps it exactly-once
                if generation != self._generation:
                    return  # the broker resends it on the new connection
                log.warning("device message not handled yet; again", topic=topic, error=str(error))
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 1.0)
        if message.qos > 0 and generation == self._generation and self._client is client:
            client._client.ack(message.mid, message.qos)

    async def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        """QoS 1: returns once the broker acknowledged it; waits up to `timeout` for a connection."""
        async with asyncio.timeout(timeout):
            while True:
                await self._connected.wait()
                client = self._client
                if client is None:
                    continue
                try:
                    await client.publish(topic, payload, qos=1, timeout=timeout)
                    return
                except aiomqtt.MqttError:
                    if self._client is client:
                        raise
                    # The connection was replaced meanwhile: publish on the new one.

    async def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float = 10.0) -> None:
        """QoS 1, all at once, in order on one connection: returns once the broker acknowledged
        every one; waits up to `timeout` in all. If the connection is lost first, all of them go
        out again on the next one (at least once, as QoS 1 promises).

        What `publish` does for each, for a fraction of the CPU: aiomqtt's `publish` costs a
        coroutine, a timeout and an event per message and walks every pending call twice (≈ 140 µs
        of CPU per message at 256 in flight against ≈ 55 here, 20,000 messages to a local
        Mosquitto). paho queues them all and one future counts the acknowledgements, each
        registered where aiomqtt's acknowledgement callback looks for it (aiomqtt 2.5 has no batch
        publish)."""
        if not messages:
            return
        async with asyncio.timeout(timeout):
            while True:
                await self._connected.wait()
                client, replaced = self._client, self._replaced
                if client is None:
                    continue
                acks = _Acknowledgements(client._pending_publishes)
                try:
                    for topic, payload in messages:
                        info = client._client.publish(topic, payload, qos=1)
                        if info.rc != paho.MQTT_ERR_SUCCESS:
                            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                        if not info.is_published():
                            acks.expect(info.mid)
                    if await acks.wait(client._disconnected):
                        return
                except aiomqtt.MqttError:
                    if self._client is client and not client._disconnected.done():
                        raise
                finally:
                    acks.forget()
                await replaced.wait()  # lost: all of them again on the next connection

    async def publish_device(
        self, topic: str, payload: dict[str, Any], encoding: WireEncoding = WireEncoding.JSON
    ) -> None:
        """A raw payload to a device topic, in the device's encoding (as `Sidecar.publish_device`)."""
        await self.publish(topic, encode_payload(payload, encoding))

    async def publish_devices(self, messages: Sequence[DeviceMessage]) -> None:
        """Raw payloads to device topics, each in its device's encoding, as one `publish_many`."""
        await self.publish_many([(topic, encode_payload(payload, encoding)) for topic, payload, encoding in messages])

    async def close(self) -> None:
        """Cancel the deliveries under way (their messages stay unacknowledged: redelivered)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Ack:
    """One message's acknowledgement, where aiomqtt's callback calls `set()` on it."""

    __slots__ = ("batch",)

    def __init__(self, batch: _Acknowledgements) -> None:
        self.batch = batch

    def set(self) -> None:
        self.batch.acknowledged()


class _Acknowledgements:
    """Counts the acknowledgements a batch of publishes waits for."""

    def __init__(self, pending: dict[int, Any]) -> None:
        self._pending = pending
        self._mids: list[int] = []
        self._left = 0
        self._done = asyncio.get_running_loop().create_future()

    def expect(self, mid: int) -> None:
        if mid in self._pending:
            raise RuntimeError(f"a publish with message id {mid} is pending already")
        self._pending[mid] = _Ack(self)
        self._mids.append(mid)
        self._left += 1

    def acknowledged(self) -> None:
        self._left -= 1
        if self._left == 0 and not self._done.done():
            self._done.set_result(None)

    async def wait(self, disconnected: asyncio.Future[None]) -> bool:
        """True once all were acknowledged, False if the connection was lost first."""
        if self._left == 0:
            return True
        await asyncio.wait({self._done, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        return self._done.done()

    def forget(self) -> None:
        """Drop the registrations still waiting (after a timeout or a lost connection)."""
        if self._left == 0:
            return  # the callback took each one
        for mid in self._mids:
            ack = self._pending.get(mid)
            if isinstance(ack, _Ack) and ack.batch is self:
                del self._pending[mid]
        self._done.cancel()
