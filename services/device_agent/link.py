"""The agent's two Dapr components: its MQTT link to the cloud broker (raw payloads, the device's
own credentials) and its local SQLite state store (twin cache, outbox, command results)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import grpc
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

from services.contracts.wire import WireEncoding, encode_payload
from services.platform.names import AGENT_BROKER, AGENT_STATE
from services.platform.sidecar import Sidecar


class Unreachable(Exception):
    """The broker did not acknowledge a publish in time: the cloud counts as unreachable."""


class AgentSidecar(Sidecar):
    """The shared sidecar client, pointed at the agent's components."""

    def __init__(self, grpc_address: str, http_port: int, encoding: WireEncoding, publish_timeout: float) -> None:
        super().__init__(grpc_address, http_port)
        self.encoding = encoding
        self.publish_timeout = publish_timeout

    async def send(self, topic: str, payload: Any) -> None:
        """Publish to the cloud broker (QoS 1); returns once the broker acknowledged it."""
        client = await self._client
        body = encode_payload(payload, self.encoding)
        try:
            await asyncio.wait_for(
                client.publish_event(
                    AGENT_BROKER,
                    topic,
                    body,
                    publish_metadata={"rawPayload": "true"},
                    data_content_type=self.encoding.content_type,
                ),
                self.publish_timeout,
            )
        except (TimeoutError, grpc.aio.AioRpcError, DaprGrpcError) as error:
            raise Unreachable(f"publish to {topic} not acknowledged: {error}") from error

    async def load(self, key: str) -> Any:
        response = await self.call("get_state", AGENT_STATE, key)
        return json.loads(response.data) if response.data else None

    async def load_many(self, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        response = await self.call("get_bulk_state", AGENT_STATE, list(keys), parallelism=4)
        return {item.key: json.loads(item.data) for item in response.items if item.data}

    async def store(self, key: str, value: Any, ttl_seconds: int | None = None) -> None:
        metadata = {"ttlInSeconds": str(ttl_seconds)} if ttl_seconds else {}
        await self.call(
            "save_state", AGENT_STATE, key, json.dumps(value, separators=(",", ":")), state_metadata=metadata
        )

    async def transact(self, upserts: dict[str, Any], deletes: Sequence[str] = ()) -> None:
        """Write and delete keys atomically (SQLite transaction)."""
        operations = [
            TransactionalStateOperation(key, json.dumps(value, separators=(",", ":"))) for key, value in upserts.items()
        ]
        operations += [
            TransactionalStateOperation(key, operation_type=TransactionOperationType.delete) for key in deletes
        ]
        await self.call("execute_state_transaction", AGENT_STATE, operations)
