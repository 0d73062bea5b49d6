"""The one Dapr client of a process: state with ETags, raw device publishes, bulk event publishes,
secrets.

Reads and single-event publishes go to daprd's HTTP API (aiohttp), everything else through the
SDK's gRPC client. Per call, measured on this 2-core machine: a bulk read of one twin cost this
process ≈ 560 µs of CPU through grpc.aio against ≈ 320 µs over HTTP (daprd ≈ 650 against ≈ 500);
publishing one event ≈ 580 + 800 µs (this process + daprd) as a gRPC bulk against ≈ 275 + 625 over
HTTP. State writes and bulk publishes stay on gRPC: daprd's HTTP API for those decodes the JSON
into Go values, so an integer beyond 2**53 is stored rounded (`9007199254740993` comes back
`…992`) and `1e-05` as `0.00001`; a single publish's body is passed on as it is, like gRPC's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import grpc
import httpx
from dapr.aio.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions
from dapr.conf import settings as dapr_settings

from services.contracts.wire import WireEncoding, encode_payload
from services.domain.json_values import fast_dumps, fast_loads
from services.platform.names import DEVICE_BROKER, INTERNAL_PUBSUB, SECRET_STORE, STATE_STORE

if TYPE_CHECKING:  # the broker client (aiomqtt, paho) stays out of apps that never use it
    from services.platform.device_broker import DeviceMessage

T = TypeVar("T")
_RAW = {"rawPayload": "true"}
_JSON = "application/json"
EVENT_CONTENT_TYPE = "text/plain"
"""How our events travel inside their CloudEvents: as JSON text (`data` a string), never as a JSON
`data` value. daprd parses a JSON `data` into Go values when it delivers the event, so an integer
beyond 2**53 (`9007199254740993`, a 64-bit serial or bitmask in a twin) reached the apps — and the
device's delta — rounded to a double; a string it passes on as it is. `event_json` reads either."""
# The SDK's asyncio save_bulk_state hands item options to protobuf unconverted (it expects the
# proto message there), so we pass the proto form.
_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write).get_proto()  # type: ignore[no-untyped-call]


class WriteFailed(Exception):
    """At least one conditional write was refused (lost an ETag race, or the store failed)."""


class SidecarTimeout(Exception):
    """A call to the sidecar did not answer within its timeout; whether it took effect is unknown
    (a write may have landed): callers re-read, or leave it to a redelivery."""


CALL_TIMEOUT = 15.0
"""Seconds any one sidecar call may take: a call that never answers (a stuck channel) must not hold
a caller — and the locks it holds — for ever."""


@dataclass(frozen=True, slots=True)
class Stored:
    key: str
    value: dict[str, Any] | None
    etag: str | None


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    value: dict[str, Any]
    etag: str | None
    """The ETag read with the old value; None for a key that did not exist (first write)."""
    ttl_seconds: int | None = None
    """> 0: the store drops the key after that long; -1: removes a TTL the key had; None: leaves
    the key's TTL as it is."""


class Sidecar:
    """Thin wrapper over the Dapr SDK's asyncio client, created once per process.

    daprd only becomes healthy after the app listens, and the SDK client's constructor blocks until
    the sidecar is healthy; so the client is made by `connect()` (run as a task from the app's
    lifespan) once the sidecar answers, and every call awaits that.
    """

    def __init__(self, grpc_address: str, http_port: int, call_timeout: float = CALL_TIMEOUT) -> None:
        self._grpc_address = grpc_address
        self.call_timeout = call_timeout
        self._http_url = f"http://127.0.0.1:{http_port}"
        self._health_url = f"{self._http_url}/v1.0/healthz/outbound"
        self._client_ready: asyncio.Future[DaprClient] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def ping(self) -> None:
        """Raise unless the sidecar is up and its components are ready (readiness)."""
        async with httpx.AsyncClient(timeout=2) as http:
            (await http.get(self._health_url)).raise_for_status()
        if self._client_ready is None or not self._client_ready.done():
            raise RuntimeError("the sidecar client is not connected yet")

    async def connect(self) -> None:
        """Wait for the sidecar's outbound health, then create the client (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._client_ready is None:
            self._client_ready = loop.create_future()
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    if (await http.get(self._health_url)).is_success:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        if not self._client_ready.done():
            self._client_ready.set_result(DaprClient(address=self._grpc_address))

    @property
    async def _client(self) -> DaprClient:
        if self._client_ready is None:
            self._client_ready = asyncio.get_running_loop().create_future()
        # Shielded: a caller that gives up (its timeout) must not cancel the one shared future,
        # or every later call fails with CancelledError although the sidecar came up.
        return await asyncio.shield(self._client_ready)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One SDK call (`method` of the Dapr client), waiting for the client first; raises
        `SidecarTimeout` when it takes longer than `call_timeout` in all."""

        async def run() -> Any:
            return await getattr(await self._client, method)(*args, **kwargs)

        return await self._timed(method, run())

    async def post(self, method: str, path: str, body: bytes, expect: int, content_type: str = _JSON) -> bytes:
        """POST `body` (of `content_type`) to daprd's HTTP API once the sidecar is up and return
        the answer's body; raises RuntimeError unless it answered `expect`, and `SidecarTimeout`
        like `call` (`method` names the call in both)."""

        async def run() -> tuple[int, bytes]:
            await self._client  # the sidecar answers (and this waits for it as every call does)
            if self._http is None:
                token = dapr_settings.DAPR_API_TOKEN
                self._http = aiohttp.ClientSession(
                    self._http_url,
                    headers={"dapr-api-token": token} if token else None,
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
            async with self._http.post(path, data=body, headers={"content-type": content_type}) as response:
                return response.status, await response.read()

        status, answer = await self._timed(method, run())
        if status != expect:
            raise RuntimeError(f"{method} failed: {status} {answer[:300].decode(errors='replace')}")
        return answer

    async def _timed(self, method: str, call: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(call, self.call_timeout)
        except TimeoutError:
            raise SidecarTimeout(f"{method} did not answer within {self.call_timeout:g} s") from None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._client_ready is not None and self._client_ready.done():
            await self._client_ready.result().close()  # type: ignore[no-untyped-call]

    async def get_many(self, keys: Sequence[str], store: str = STATE_STORE) -> dict[str, Stored]:
        if not keys:
            return {}
        body = fast_dumps({"keys": list(keys), "parallelism": 8})
        answer = await self.post("get_bulk_state", f"/v1.0/state/{store}/bulk", body, 200)
        found: dict[str, Stored] = {}
        for item in fast_loads(answer):
            if item.get("error"):
                raise RuntimeError(f"state read of {item['key']} failed: {item['error']}")
            found[item["key"]] = Stored(item["key"], item.get("data"), item.get("etag") or None)
        return {key: found.get(key, Stored(key, None, None)) for key in keys}

    async def get(self, key: str, store: str = STATE_STORE) -> Stored:
        return (await self.get_many([key], store))[key]

    async def write_each(self, writes: Sequence[Write], store: str = STATE_STORE) -> None:
        """Write every item, each conditional on its own ETag (first-write concurrency, so an item
        without an ETag is only created, never overwritten). Raises `WriteFailed` when any item was
        refused; the others may have landed (stores do not roll back), so callers re-read."""
        if not writes:
            return
        items = [
            StateItem(
                key=w.key,
                value=fast_dumps(w.value),
                etag=w.etag,
                options=_FIRST_WRITE,
                metadata={} if w.ttl_seconds is None else {"ttlInSeconds": str(w.ttl_seconds)},
            )
            for w in writes
        ]
        try:
            await self.call("save_bulk_state", store, items)
        except (grpc.aio.AioRpcError, DaprGrpcError) as error:
            raise WriteFailed(str(error.details())) from error

    async def delete(self, key: str, store: str = STATE_STORE) -> None:
        await self.call("delete_state", store, key)

    async def publish_device(
        self, topic: str, payload: dict[str, Any], encoding: WireEncoding = WireEncoding.JSON
    ) -> None:
        """Publish a raw payload (no CloudEvent envelope) to a device topic, in the device's encoding."""
        if encoding is WireEncoding.JSON:
            data: str | bytes = json.dumps(payload, separators=(",", ":"))
        else:
            data = encode_payload(payload, encoding)
        await self.call(
            "publish_event", DEVICE_BROKER, topic, data, publish_metadata=_RAW, data_content_type=encoding.content_type
        )

    async def publish_devices(self, messages: Sequence[DeviceMessage]) -> None:
        """`publish_device` for each, concurrently; raises the first failure."""
        results = await asyncio.gather(*(self.publish_device(*m) for m in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def secret(self, key: str) -> str:
        """One secret from the secret store (key material never comes from code or settings)."""
        response = await self.call("get_secret", SECRET_STORE, key)
        return str(response.secret[key])

    async def publish_events(self, topic: str, events: Sequence[str]) -> None:
        """Publish JSON events (as text, `EVENT_CONTENT_TYPE`) to the internal pub/sub; raises if any
        entry failed."""
        if not events:
            return
        if len(events) == 1:  # a lone REST write's `twin.changed`, every audit record
            path = f"/v1.0/publish/{INTERNAL_PUBSUB}/{topic}"
            await self.post("publish_event", path, events[0].encode(), 204, EVENT_CONTENT_TYPE)
            return
        response = await self.call(
            "publish_events", INTERNAL_PUBSUB, topic, list(events), data_content_type=EVENT_CONTENT_TYPE
        )
        if response.failed_entries:
            raise RuntimeError(f"{len(response.failed_entries)} event(s) to {topic} not published")


async def gather_bounded(limit: asyncio.Semaphore, coroutines: Sequence[Any]) -> list[Any]:
    """Run coroutines concurrently with at most `limit` in flight; exceptions are returned."""

    async def run(coro: Any) -> Any:
        async with limit:
            return await coro

    return await asyncio.gather(*(run(c) for c in coroutines), return_exceptions=True)
