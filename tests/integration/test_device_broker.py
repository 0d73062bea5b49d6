"""The apps' own broker connection (`DeviceBroker`) publishing in batches, against a real
Mosquitto: every message acknowledged, in order, nothing left registered; a broker stopped
mid-batch makes the batch time out cleanly; a broker killed mid-batch gets the whole batch again on
the next connection (at least once), and a subscriber's persistent session receives every one."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from services.contracts.wire import WireEncoding
from services.devtools.processes import ManagedProcess, free_port, wait_for_port
from services.platform.device_broker import DeviceBroker, publish_in_chunks
from tests.support.waiting import eventually

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")


class Broker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        config = directory / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {directory}/",
                    "autosave_interval 1",
                    "max_queued_messages 100000",
                    "set_tcp_nodelay true",
                    "",
                ]
            )
        )
        self.process = ManagedProcess("mosquitto", ["mosquitto", "-c", str(config)], directory / "mosquitto.log")

    def start(self) -> None:
        self.process.start()
        wait_for_port(self.port, 10, self.process.process)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def saved(self) -> tuple[int, int] | None:
        """Which copy of its sessions the broker last wrote to disk (its autosave, every second)."""
        try:
            stat = (self.directory / "mosquitto.db").stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    async def saved_again(self) -> None:
        """Wait until the broker wrote its sessions once more than now."""
        before = self.saved()

        async def newer() -> bool:
            return self.saved() not in (None, before)

        await eventually(newer, 15, "the broker to save its sessions")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    running.start()
    yield running
    running.process.signal(signal.SIGCONT)
    running.process.stop()


@pytest.fixture
async def publisher(broker: Broker) -> AsyncIterator[DeviceBroker]:
    async def url() -> str:
        return broker.url

    connection = DeviceBroker(url, "test-publisher")
    task = asyncio.create_task(connection.run())
    await asyncio.wait_for(connection._connected.wait(), 10)
    yield connection
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def subscriber(broker: Broker) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, identifier="test-subscriber", clean_session=False)


async def receive(client: aiomqtt.Client, count: int, timeout: float = 20) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            got.append((str(message.topic), bytes(message.payload)))
            if len(got) >= count:
                break
    return got


async def test_a_batch_is_acknowledged_in_order(broker: Broker, publisher: DeviceBroker) -> None:
    async with subscriber(broker) as sub:
        await sub.subscribe("devices/#", qos=1)
        messages = [(f"devices/d{i % 7}/update/delta", {"n": i}, WireEncoding.JSON) for i in range(2000)]
        await publish_in_chunks(publisher, messages, 256)
        got = await receive(sub, 2000)
    assert [(t, p) for t, p in got] == [(t, f'{{"n":{p["n"]}}}'.encode()) for t, p, _ in messages]
    client = publisher._client
    assert client is not None and not client._pending_publishes


async def test_a_stopped_broker_times_the_batch_out_and_leaves_nothing_registered(
    broker: Broker, publisher: DeviceBroker
) -> None:
    broker.process.signal(signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            await publisher.publish_many([(f"devices/d{i}/x", b"{}") for i in range(300)], timeout=1.0)
        client = publisher._client
        assert client is not None and not client._pending_publishes
    finally:
        broker.process.signal(signal.SIGCONT)
    await publisher.publish_many([("devices/after/x", b"{}")], timeout=5.0)


@pytest.mark.slow
async def test_a_broker_killed_mid_batch_gets_the_batch_again(broker: Broker, publisher: DeviceBroker) -> None:
    async with subscriber(broker) as sub:
        await sub.subscribe("devices/#", qos=1)  # acknowledged: the broker holds the subscription
        await broker.saved_again()  # and has written it to disk before it dies
    broker.process.signal(signal.SIGSTOP)  # nothing is acknowledged from here on
    messages = [(f"devices/d{i}/update/delta", f'{{"n":{i}}}'.encode()) for i in range(500)]
    batch = asyncio.create_task(publisher.publish_many(messages, timeout=30.0))
    await asyncio.sleep(0.5)
    assert not batch.done()
    broker.process.kill()
    broker.start()  # same port, same persistence: the subscriber's session and its subscription
    await asyncio.wait_for(batch, 30)
    async with subscriber(broker) as sub:
        got = await receive(sub, len(messages))
    assert sorted(got) == sorted(messages)
