"""A device's MQTT link speaking the device contract: requests matched to replies by clientToken,
deltas and documents queued as they arrive, in JSON or CBOR. Used by the fleet simulator and the
tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from typing import Any

import aiomqtt

from services.contracts.topics import Operation, Reply, TopicProfile, TwinAddress
from services.contracts.wire import WireEncoding, decode_payload, encode_payload
from services.devtools.pki import TlsIdentity
from services.domain.errors import TwinError


class Rejected(Exception):
    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload.get('code')}: {payload.get('message')}")
        self.code: int = payload.get("code", 0)
        self.payload = payload


class DeviceLink:
    """One device connection (its own credentials; QoS 1; persistent session unless `clean`):
    username/password, or with `tls` a client certificate on the broker's TLS listener (the
    broker takes the certificate's CN as the username; `password` is then unused).

    Requests go out in `encoding`; whatever arrives is decoded by its own first byte, and the
    newest arrivals' (topic, encoding) are kept in `received` so tests can check what was sent.
    """

    def __init__(
        self,
        device_id: str,
        password: str,
        host: str,
        port: int,
        profile: TopicProfile,
        shadow: str = "",
        *,
        clean: bool = True,
        client_id: str | None = None,
        encoding: WireEncoding = WireEncoding.JSON,
        tls: TlsIdentity | None = None,
        presence: bool = False,
    ) -> None:
        """`presence`: a last will reports `connection: disconnected` when the link drops (the
        device reports `connected` itself once up), as AWS IoT devices do with lifecycle wills."""
        self.address = TwinAddress(device_id, shadow)
        self.profile = profile
        self.encoding = encoding
        self.received: deque[tuple[str, WireEncoding]] = deque(maxlen=64)
        tls_params = None
        if tls is not None:
            tls_params = aiomqtt.TLSParameters(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
        self._client = aiomqtt.Client(
            host,
            port,
            username=None if tls else device_id,
            password=None if tls else password,
            identifier=client_id or device_id,
            clean_session=clean,
            keepalive=30,
            tls_params=tls_params,
            will=aiomqtt.Will(
                profile.request_topic(self.address, Operation.UPDATE),
                json.dumps({"state": {"reported": {"connection": "disconnected"}}}),
                qos=1,
            )
            if presence
            else None,
        )
        self._pending: dict[str, asyncio.Future[tuple[Reply, dict[str, Any]]]] = {}
        self.deltas: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.documents: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.untokened: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DeviceLink:
        await self._client.__aenter__()
        base = self.profile.reply_topic(self.address, Operation.UPDATE, Reply.ACCEPTED).rsplit("/", 2)[0]
        await self._client.subscribe(f"{base}/+/+", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            # aiomqtt waits for the disconnect to complete with no limit; a device leaving must not
            # hang the fleet (or a test's teardown) on it: after 5 s it is left to the broker
            async with asyncio.timeout(5):
                await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._client.messages:
            topic = str(message.topic)
            try:
                payload, encoding = decode_payload(bytes(message.payload))
            except TwinError:
                continue
            if not isinstance(payload, dict):
                continue
            self.received.append((topic, encoding))
            kind = topic.rsplit("/", 1)[-1]
            if kind == Reply.DELTA:
                self.deltas.put_nowait(payload)
            elif kind == Reply.DOCUMENTS:
                self.documents.put_nowait(payload)
            elif kind in (Reply.ACCEPTED, Reply.REJECTED):
                future = self._pending.pop(payload.get("clientToken", ""), None)
                if future is not None and not future.done():
                    future.set_result((Reply(kind), payload))
                else:
                    self.untokened.put_nowait((topic, payload))

    async def publish(self, op: Operation, payload: dict[str, Any] | bytes) -> None:
        """Publish a request: a document in the link's encoding, or bytes as they are."""
        body = payload if isinstance(payload, bytes) else encode_payload(payload, self.encoding)
        await self._client.publish(self.profile.request_topic(self.address, op), body, qos=1)

    async def send(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish a document on one of the device's other topics (events, …), in the link's encoding."""
        await self._client.publish(topic, encode_payload(payload, self.encoding), qos=1)

    async def request(
        self, op: Operation, payload: dict[str, Any] | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Send a request and wait for its reply; raises `Rejected` on `/rejected`."""
        body = dict(payload or {})
        token = body.setdefault("clientToken", uuid.uuid4().hex)
        return await self.request_encoded(op, encode_payload(body, self.encoding), token, timeout)

    async def request_encoded(self, op: Operation, body: bytes, token: str, timeout: float = 15.0) -> dict[str, Any]:
        """`request` with a payload already encoded (e.g. template-driven) carrying `token`."""
        future: asyncio.Future[tuple[Reply, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        await self.publish(op, body)
        try:
            reply, answer = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(token, None)
        if reply is Reply.REJECTED:
            raise Rejected(answer)
        return answer

    async def report(self, reported: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return await self.request(Operation.UPDATE, {"state": {"reported": reported}, **extra})

    async def get(self) -> dict[str, Any]:
        return await self.request(Operation.GET)

    async def next_delta(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.deltas.get(), timeout)

    def received_as(self, suffix: str) -> WireEncoding | None:
        """The encoding of the newest message received on a topic ending in `suffix`."""
        for topic, encoding in reversed(self.received):
            if topic.endswith(suffix):
                return encoding
        return None
