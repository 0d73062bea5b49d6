"""The one Dapr client of a process: state with ETags, raw device publishes, bulk event publishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from dapr.aio.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

from services.platform.names import DEVICE_BROKER, INTERNAL_PUBSUB, STATE_STORE

_RAW = {"rawPayload": "true"}


class ETagMismatch(Exception):
    """A conditional write lost a race: re-read and re-apply."""


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


class Sidecar:
    """Thin wrapper over the Dapr SDK's asyncio client, created once per process."""

    def __init__(self, grpc_address: str) -> None:
        self._client = DaprClient(address=grpc_address)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        await self._client.wait(timeout_s)

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]

    async def get_many(self, keys: Sequence[str]) -> dict[str, Stored]:
        if not keys:
            return {}
        response = await self._client.get_bulk_state(STATE_STORE, list(keys), parallelism=8)
        found: dict[str, Stored] = {}
        for item in response.items:
            if item.error:
                raise RuntimeError(f"state read of {item.key} failed: {item.error}")
            value = json.loads(item.data) if item.data else None
            found[item.key] = Stored(item.key, value, item.etag or None)
        return {key: found.get(key, Stored(key, None, None)) for key in keys}

    async def get(self, key: str) -> Stored:
        return (await self.get_many([key]))[key]

    async def write_all(self, writes: Sequence[Write]) -> None:
        """Write every item atomically, each conditional on its ETag; raises ETagMismatch."""
        if not writes:
            return
        operations = [
            TransactionalStateOperation(
                key=w.key,
                data=json.dumps(w.value, separators=(",", ":")),
                etag=w.etag,
                operation_type=TransactionOperationType.upsert,
            )
            for w in writes
        ]
        try:
            await self._client.execute_state_transaction(STATE_STORE, operations)
        except grpc.aio.AioRpcError as error:
            if _is_etag_error(error):
                raise ETagMismatch(str(error.details())) from error
            raise

    async def publish_device(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish a raw JSON payload (no CloudEvent envelope) to a device topic."""
        await self._client.publish_event(
            DEVICE_BROKER,
            topic,
            json.dumps(payload, separators=(",", ":")),
            publish_metadata=_RAW,
            data_content_type="application/json",
        )

    async def publish_events(self, topic: str, events: Sequence[str]) -> None:
        """Bulk-publish JSON events to the internal pub/sub; raises if any entry failed."""
        if not events:
            return
        response = await self._client.publish_events(
            INTERNAL_PUBSUB, topic, list(events), data_content_type="application/json"
        )
        if response.failed_entries:
            raise RuntimeError(f"{len(response.failed_entries)} event(s) to {topic} not published")


def _is_etag_error(error: grpc.aio.AioRpcError) -> bool:
    details = (error.details() or "").lower()
    return error.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION) or (
        "etag" in details
    )


async def gather_bounded(limit: asyncio.Semaphore, coroutines: Sequence[Any]) -> list[Any]:
    """Run coroutines concurrently with at most `limit` in flight; exceptions are returned."""

    async def run(coro: Any) -> Any:
        async with limit:
            return await coro

    return await asyncio.gather(*(run(c) for c in coroutines), return_exceptions=True)
