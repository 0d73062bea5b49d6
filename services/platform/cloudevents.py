"""Reading what daprd delivers to an app subscription (single and bulk, raw or CloudEvent)."""

from __future__ import annotations

import base64
import json
from typing import Any


def event_payload(event: dict[str, Any]) -> bytes:
    """The message bytes of a delivered CloudEvent (`data_base64` for raw payloads, else `data`)."""
    if "data_base64" in event:
        return base64.b64decode(event["data_base64"])
    data = event.get("data")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data).encode()


def event_json(event: dict[str, Any]) -> Any:
    """The JSON data of a CloudEvent published by one of our apps."""
    data = event.get("data")
    if isinstance(data, str):
        return json.loads(data)
    if data is None and "data_base64" in event:
        return json.loads(base64.b64decode(event["data_base64"]))
    return data


def shared(group: str, topic_filter: str) -> str:
    """An MQTT shared subscription (replicas of one group split the messages). Filters starting
    with `$` stay plain: Mosquitto 2.0 delivers nothing to a shared subscription on `$`-topics."""
    return topic_filter if topic_filter.startswith("$") else f"$share/{group}/{topic_filter}"


def subscription(
    pubsub: str, topic: str, route: str, *, raw: bool = False, bulk: int = 0, bulk_wait_ms: int = 5
) -> dict[str, Any]:
    """One entry of an app's `/dapr/subscribe` answer."""
    entry: dict[str, Any] = {"pubsubname": pubsub, "topic": topic, "route": route}
    if raw:
        entry["metadata"] = {"rawPayload": "true"}
    if bulk:
        entry["bulkSubscribe"] = {
            "enabled": True,
            "maxMessagesCount": bulk,
            "maxAwaitDurationMs": bulk_wait_ms,
        }
    return entry
