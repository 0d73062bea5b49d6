"""Device events over real Mosquitto + daprd + Redis: batches published by a plain MQTT client
(as device firmware would), out of order and repeated, reach the sinks exactly once and in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import redis.asyncio as redis

from services.contracts.device_events import DeviceEvent, EventBatch, EventsAck
from services.contracts.events import DEVICE_EVENTS_TOPIC, DeviceEventRecorded
from services.contracts.topics import DeviceChannels
from services.contracts.wire import WireEncoding, decode_payload, encode_payload
from services.devtools.stack import Stack
from services.platform.cloudevents import event_json
from services.platform.names import EVENTS_APP
from tests.support.devices import new_device_id

STACK_ENV = {"TWINFLEET_EVENTS_GAP_TIMEOUT": "300"}  # out-of-order batches are always waited for here


def batches(count: int, size: int) -> list[EventBatch]:
    events = [DeviceEvent(seq=s, ts=1_700_000_000 + s / 10, type="reading", data={"n": s}) for s in range(1, count + 1)]
    return [EventBatch(events=events[i : i + size]) for i in range(0, count, size)]


def encoded(batch: EventBatch, encoding: WireEncoding = WireEncoding.JSON) -> bytes:
    return encode_payload(batch.model_dump(), encoding)


def shuffled_with_duplicates(items: Sequence[bytes], rng: random.Random, extra: int) -> list[bytes]:
    out = [*items, *rng.choices(items, k=extra)]
    rng.shuffle(out)
    return out


@contextlib.asynccontextmanager
async def device(stack: Stack, device_id: str) -> AsyncIterator[aiomqtt.Client]:
    password = stack.provision_devices([device_id])[device_id]
    async with aiomqtt.Client(
        "127.0.0.1", stack.mqtt_port, username=device_id, password=password, identifier=device_id
    ) as client:
        yield client


class Acknowledgements:
    """How far the cloud acknowledged a device's events (`{id}/events/ack`), as a device sees it."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.next_seq = 1
        self._moved = asyncio.Event()
        self._reader = asyncio.create_task(self._read(client))

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            ack = EventsAck.model_validate(decode_payload(bytes(message.payload))[0])  # type: ignore[arg-type]
            if ack.next_seq > self.next_seq:
                self.next_seq = ack.next_seq
                self._moved.set()

    async def reach(self, next_seq: int, timeout: float) -> bool:
        """Whether the acknowledgements reach `next_seq`, waiting at most `timeout` after the last move."""
        while self.next_seq < next_seq:
            self._moved.clear()
            try:
                await asyncio.wait_for(self._moved.wait(), timeout)
            except TimeoutError:
                return False
        return True

    def stop(self) -> None:
        self._reader.cancel()


async def acknowledgements(client: aiomqtt.Client, device_id: str) -> Acknowledgements:
    await client.subscribe(DeviceChannels(device_id).events_ack, qos=1)
    return Acknowledgements(client)


async def publish(client: aiomqtt.Client, device_id: str, payloads: Sequence[bytes], pause: float = 0.0) -> None:
    for body in payloads:
        await client.publish(DeviceChannels(device_id).events, body, qos=1)
        if pause:
            await asyncio.sleep(pause)


async def cursor(stack: Stack, device_id: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=stack.app_url(EVENTS_APP), headers=stack.headers, timeout=5) as http:
        response = await http.get(f"/v1/devices/{device_id}/events/cursor")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def wait_for_cursor(stack: Stack, device_id: str, next_seq: int, timeout: float = 90) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    last: dict[str, Any] | None = None
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = await cursor(stack, device_id)
        if last is not None and last["nextSeq"] >= next_seq:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{device_id}: cursor never reached {next_seq}; last {last}")


def sink_files(stack: Stack, device_id: str) -> list[Path]:
    folder = stack.run_dir / "events-sink" / device_id
    return sorted(folder.iterdir()) if folder.exists() else []


def sink_seqs(stack: Stack, device_id: str) -> list[int]:
    """Every event in the device's sink files, file by file, line by line."""
    seqs: list[int] = []
    for path in sink_files(stack, device_id):
        records = [DeviceEventRecorded.model_validate_json(line) for line in path.read_text().splitlines()]
        first, last = (int(part) for part in path.stem.split("-"))
        assert [r.seq for r in records] == list(range(first, last + 1)), path.name
        assert all(r.device_id == device_id and r.data == {"n": r.seq} for r in records)
        seqs += [r.seq for r in records]
    return seqs


async def topic_seqs(stack: Stack, device_id: str) -> list[int]:
    """The device's events on the internal topic (read straight from its Redis stream)."""
    client = redis.Redis(port=stack.redis_port)
    try:
        entries = await client.xrange(DEVICE_EVENTS_TOPIC)
    finally:
        await client.aclose()
    records = [DeviceEventRecorded.model_validate(event_json(json.loads(fields[b"data"]))) for _, fields in entries]
    return [r.seq for r in records if r.device_id == device_id]


async def metric(stack: Stack, name: str, labels: str) -> float:
    async with httpx.AsyncClient(headers=stack.headers, timeout=5) as http:
        text = (await http.get(f"{stack.app_url(EVENTS_APP)}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


async def test_out_of_order_and_repeated_batches_reach_the_sinks_exactly_once_in_order(stack: Stack) -> None:
    device_id = new_device_id("ev")
    rng = random.Random(7)
    payloads = [encoded(b) for b in batches(1000, 25)]
    async with device(stack, device_id) as client:
        await publish(client, device_id, shuffled_with_duplicates(payloads, rng, extra=15))
    assert await wait_for_cursor(stack, device_id, 1001) == {"nextSeq": 1001, "lost": 0}
    assert sink_seqs(stack, device_id) == list(range(1, 1001))
    assert len(sink_files(stack, device_id)) == 40
    on_topic = await topic_seqs(stack, device_id)
    assert sorted(on_topic) == list(range(1, 1001))  # each (device, seq) exactly once


async def test_cbor_and_json_batches_carry_the_same_events(stack: Stack) -> None:
    device_id = new_device_id("ev-cbor")
    all_batches = batches(200, 20)
    payloads = [encoded(b, WireEncoding.CBOR if i % 3 else WireEncoding.JSON) for i, b in enumerate(all_batches)]
    assert payloads[1][0] >= 0xA0  # really CBOR on the wire
    async with device(stack, device_id) as client:
        await publish(client, device_id, shuffled_with_duplicates(payloads, random.Random(3), extra=5))
    await wait_for_cursor(stack, device_id, 201)
    assert sink_seqs(stack, device_id) == list(range(1, 201))
    assert sorted(await topic_seqs(stack, device_id)) == list(range(1, 201))


async def test_a_device_outbox_overflow_is_counted_lost(stack: Stack) -> None:
    device_id = new_device_id("ev-skip")
    events = batches(30, 10)
    overflowed = EventBatch(events=events[2].events, skipped_through=20)  # 11..20 were dropped unsent
    async with device(stack, device_id) as client:
        # as an agent does: the next batch only once the cloud acknowledged the one before (sent
        # together, the events app may take them in either order, and 1..10 would count lost too)
        await publish(client, device_id, [encoded(events[0])])
        assert await wait_for_cursor(stack, device_id, 11) == {"nextSeq": 11, "lost": 0}
        await publish(client, device_id, [encoded(overflowed)])
    assert await wait_for_cursor(stack, device_id, 31) == {"nextSeq": 31, "lost": 10}
    assert sink_seqs(stack, device_id) == [*range(1, 11), *range(21, 31)]


async def test_malformed_batches_are_dropped_counted_and_write_nothing(stack: Stack) -> None:
    device_id = new_device_id("ev-bad")
    before = await metric(stack, "events_batches_total", 'outcome="dropped"')
    good = batches(4, 2)
    bad = [
        b"{not json",
        b'{"events": []}',
        json.dumps({"events": [e.model_dump() for e in good[0].events[::-1]]}).encode(),  # not consecutive
        b"\xa1\x63abc",  # truncated CBOR
        json.dumps({"events": [{"seq": 1, "ts": 1, "type": "x", "device": "spoofed"}]}).encode(),
    ]
    async with device(stack, device_id) as client:
        await publish(client, device_id, bad)
    deadline = asyncio.get_running_loop().time() + 30
    while await metric(stack, "events_batches_total", 'outcome="dropped"') < before + len(bad):
        assert asyncio.get_running_loop().time() < deadline, "malformed batches not all dropped"
        await asyncio.sleep(0.2)
    assert await cursor(stack, device_id) is None
    assert sink_files(stack, device_id) == []
    assert await topic_seqs(stack, device_id) == []


async def test_cursor_of_an_unknown_device_is_404_and_a_bad_id_400(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.app_url(EVENTS_APP), headers=stack.headers, timeout=5) as http:
        assert (await http.get("/v1/devices/nobody-here/events/cursor")).status_code == 404
        assert (await http.get("/v1/devices/bad%20id/events/cursor")).status_code == 400


async def test_killing_the_events_app_mid_stream_loses_and_duplicates_nothing(stack: Stack) -> None:
    device_id = new_device_id("ev-kill")
    rng = random.Random(11)
    sent = batches(1000, 20)
    payloads = [encoded(b) for b in sent]
    # Mostly in order (as a device sends), neighbours swapped and a few re-sends (lost PUBACKs).
    order = list(payloads)
    for i in range(0, len(order) - 1, 4):
        order[i], order[i + 1] = order[i + 1], order[i]
    for index in rng.sample(range(len(order)), 8):
        order.insert(index + 1, order[index])
    killed_at: list[int] = []

    async def kill_midway() -> None:
        killed_at.append((await wait_for_cursor(stack, device_id, 200, timeout=60))["nextSeq"])
        stack.procs[EVENTS_APP].kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.restart, EVENTS_APP)

    killer = asyncio.create_task(kill_midway())
    resent = 0
    async with device(stack, device_id) as client:
        acks = await acknowledgements(client, device_id)
        await publish(client, device_id, order, pause=0.04)
        await killer
        # As the device contract says, a device keeps each batch until the cloud acknowledged it
        # and sends it again when no acknowledgement came within its ack timeout: a delivery the
        # sidecar stranded (seen under load after an app restart) is recovered that way.
        while resent < 10 and not await acks.reach(1001, timeout=15):
            resent += 1
            await publish(
                client, device_id, [p for p, b in zip(payloads, sent, strict=True) if b.last >= acks.next_seq]
            )
        acks.stop()
    assert killed_at[0] < 1001, "the events app was not killed mid-stream"
    try:
        final = await wait_for_cursor(stack, device_id, 1001, timeout=120)
    except AssertionError as error:  # say where it stuck: the app's and its sidecar's last words
        logs = "\n".join(
            f"--- {name}\n{stack.procs[name].log_tail(60)}" for name in (EVENTS_APP, f"{EVENTS_APP}-daprd")
        )
        raise AssertionError(f"{error}; killed at next_seq {killed_at[0]}, {resent} resend(s)\n{logs}") from None
    assert final == {"nextSeq": 1001, "lost": 0}
    assert sink_seqs(stack, device_id) == list(range(1, 1001))  # every file once, no overlaps
    on_topic = await topic_seqs(stack, device_id)
    assert set(on_topic) == set(range(1, 1001))
    # Only a batch in flight at the kill may be published twice; consumers de-duplicate by seq.
    assert sum(n - 1 for n in Counter(on_topic).values()) <= 40
