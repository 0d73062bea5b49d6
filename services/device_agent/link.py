"""The agent's two Dapr components: its MQTT link to the cloud broker (raw payloads, the device's
own credentials) and its local SQLite state store (twin cache, outbox, command results).

Spoken over daprd's HTTP API with the httpx client the agent has anyway: the Dapr SDK's gRPC
client (grpc, protobuf, aiohttp) would be most of a small device's memory for five calls.

Values are stored as JSON text: daprd's HTTP state API parses a JSON value into Go values, so an
integer beyond 2**53 (a 64-bit counter in an event, a serial in the twin) would come back rounded
to a double; a string it keeps as it is. A value an older agent stored as JSON is still read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from services.contracts.wire import WireEncoding, encode_payload
from services.domain.json_values import fast_dumps, fast_loads
from services.platform.names import AGENT_BROKER, AGENT_STATE


class Unreachable(Exception):
    """The broker did not acknowledge a publish in time: the cloud counts as unreachable."""


class AgentSidecar:
    """The agent's daprd, over HTTP on loopback."""

    def __init__(
        self, http_port: int, encoding: WireEncoding, publish_timeout: float, headers: dict[str, str] | None = None
    ) -> None:
        """`headers`: what every call carries (the sidecar's API token, when it has one)."""
        self.encoding = encoding
        self.publish_timeout = publish_timeout
        self._base = f"http://127.0.0.1:{http_port}/v1.0"
        self._http = httpx.AsyncClient(base_url=self._base, timeout=30, headers=headers)
        self._ready = asyncio.Event()

    async def ping(self) -> None:
        """Raise unless the sidecar is up and its components are ready (readiness)."""
        (await self._http.get("/healthz/outbound", timeout=2)).raise_for_status()
        if not self._ready.is_set():
            raise RuntimeError("the sidecar is not ready yet")

    async def connect(self) -> None:
        """Wait for the sidecar's outbound health (daprd turns healthy only once the app listens)."""
        while True:
            try:
                if (await self._http.get("/healthz/outbound", timeout=2)).is_success:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        self._ready.set()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, topic: str, payload: Any) -> None:
        """Publish to the cloud broker (QoS 1); returns once the broker acknowledged it."""
        await self._ready.wait()
        try:
            response = await self._http.post(
                f"/publish/{AGENT_BROKER}/{topic}",
                content=encode_payload(payload, self.encoding),
                params={"metadata.rawPayload": "true"},
                headers={"content-type": self.encoding.content_type},
                timeout=self.publish_timeout,
            )
        except httpx.HTTPError as error:
            raise Unreachable(f"publish to {topic} not acknowledged: {error!r}") from error
        if response.status_code != 204:
            raise Unreachable(f"publish to {topic} not acknowledged: {response.status_code} {response.text}")

    async def load(self, key: str) -> Any:
        await self._ready.wait()
        response = await self._http.get(f"/state/{AGENT_STATE}/{key}")
        response.raise_for_status()
        return _stored(fast_loads(response.content)) if response.status_code == 200 and response.content else None

    async def load_many(self, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        await self._ready.wait()
        response = await self._http.post(f"/state/{AGENT_STATE}/bulk", json={"keys": list(keys), "parallelism": 4})
        response.raise_for_status()
        found: dict[str, Any] = {}
        for item in response.json():
            if item.get("error"):
                raise RuntimeError(f"state read of {item['key']} failed: {item['error']}")
            if item.get("data") is not None:
                found[item["key"]] = _stored(item["data"])
        return found

    async def store(self, key: str, value: Any, ttl_seconds: int | None = None) -> None:
        item: dict[str, Any] = {"key": key, "value": _text(value)}
        if ttl_seconds:
            item["metadata"] = {"ttlInSeconds": str(ttl_seconds)}
        await self._post_state("", [item])

    async def transact(self, upserts: dict[str, Any], deletes: Sequence[str] = ()) -> None:
        """Write and delete keys atomically (SQLite transaction)."""
        operations: list[dict[str, Any]] = [
            {"operation": "upsert", "request": {"key": key, "value": _text(value)}} for key, value in upserts.items()
        ]
        operations += [{"operation": "delete", "request": {"key": key}} for key in deletes]
        await self._post_state("/transaction", {"operations": operations})

    async def _post_state(self, path: str, body: Any) -> None:
        await self._ready.wait()
        response = await self._http.post(
            f"/state/{AGENT_STATE}{path}", content=fast_dumps(body), headers={"content-type": "application/json"}
        )
        if response.status_code not in (200, 201, 204):
            raise RuntimeError(f"state write failed: {response.status_code} {response.text}")


def _text(value: Any) -> str:
    """A value as the JSON text it is stored as (see the module's note)."""
    return fast_dumps(value).decode()


def _stored(value: Any) -> Any:
    """A stored value: JSON text, or (stored by an older agent) a JSON value as daprd gave it back."""
    return fast_loads(value) if isinstance(value, str) else value
