"""The raw floor: MQTT in, one Redis round trip, MQTT reply out — no Dapr, no twin logic.

Run as its own process (`python -m bench.floor`) so it pays the same process boundaries as the
real apps; the bench drives it with the same load generator as the suite.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiomqtt
import redis.asyncio as aioredis


async def serve(mqtt_port: int, redis_port: int, user: str, password: str) -> None:
    store = aioredis.Redis(port=redis_port)
    async with aiomqtt.Client(
        "127.0.0.1", mqtt_port, username=user, password=password, identifier="bench-floor", max_inflight_messages=1000
    ) as client:
        await client.subscribe("$share/floor/+/state/update", qos=1)
        print("ready", flush=True)
        pending: set[asyncio.Task[None]] = set()
        async for message in client.messages:
            task = asyncio.create_task(handle(client, store, str(message.topic), bytes(message.payload)))
            pending.add(task)
            task.add_done_callback(pending.discard)


async def handle(client: aiomqtt.Client, store: aioredis.Redis, topic: str, payload: bytes) -> None:
    device_id = topic.split("/", 1)[0]
    body = json.loads(payload)
    async with store.pipeline(transaction=False) as pipe:
        pipe.get(f"floor:{device_id}")
        pipe.set(f"floor:{device_id}", payload)
        await pipe.execute()
    reply = {"clientToken": body.get("clientToken"), "version": 1}
    await client.publish(f"{device_id}/state/update/accepted", json.dumps(reply), qos=1)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
