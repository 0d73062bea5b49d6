"""Releases for tests: artifact images (passing or failing the device's health check), published as
a release manager does (signed offline with the suite's targets key, bytes uploaded, targets
metadata published), what a device reports under its twin's `software` key, and a TCP relay that
can cut a download's link part-way. For any running suite: local processes or containers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Targets

from services.devtools.release_team import ReleaseTeam
from services.domain.software import repository as rules
from tests.support.waiting import eventually

HEALTHY = b"HEALTHY"
"""How a release image starts when it passes the health check (`grep -q ^HEALTHY <file>`)."""
CHUNK = 1 << 20


class Releasing(Protocol):
    """A running suite whose release chain a test signs for (its offline keys)."""

    @property
    def release_team(self) -> ReleaseTeam: ...


def image(version: str, size: int = 2 * CHUNK + 12345, healthy: bool = True) -> bytes:
    head = (HEALTHY if healthy else b"BROKEN") + f" image {version}\n".encode()
    return head + os.urandom(size - len(head))


async def upload(firmware: httpx.AsyncClient, name: str, version: str, data: bytes, **params: Any) -> dict[str, Any]:
    """Stream `data` in as an artifact's bytes (as a multi-GB upload would be)."""

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 300_000):
            yield data[start : start + 300_000]

    response = await firmware.post("/v1/artifacts", params={"name": name, "version": version, **params}, content=body())
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def sign_targets(
    stack: Releasing,
    firmware: httpx.AsyncClient,
    artifact: dict[str, Any],
    expires: datetime | None = None,
    signer: CryptoSigner | None = None,
    **custom: Any,
) -> bytes:
    """The next targets metadata listing `artifact` (as stored), signed with `signer` (default:
    the stack's first targets key)."""
    answer = await firmware.get("/v1/metadata/targets.json")
    current: Targets | None = None
    if answer.status_code == 200:
        current = Metadata[Targets].from_bytes(answer.content).signed
    signer = signer or stack.release_team.signer("targets", 1)
    extra = {"name": artifact["name"], "version": artifact["version"], **custom}
    until = expires or datetime.now(UTC) + timedelta(days=30)
    signed = rules.targets_with(current, artifact["id"], artifact["length"], artifact["sha256"], extra, until)
    return rules.signed_by(signed, [signer]).to_bytes()


async def publish(
    stack: Releasing, firmware: httpx.AsyncClient, name: str, version: str, data: bytes, **options: Any
) -> str:
    """Upload and release an artifact; its id."""
    artifact = await upload(firmware, name, version, data)
    targets = await sign_targets(stack, firmware, artifact, **options)
    answer = await firmware.post("/v1/metadata/targets", content=targets)
    assert answer.status_code == 201, answer.text
    return str(artifact["id"])


async def desire(api: httpx.AsyncClient, device_id: str, artifact: str, version: str) -> None:
    body = {"software": {"artifact": artifact, "version": version}}
    assert (await api.patch(f"/v1/twins/{device_id}/desired", json=body)).status_code == 200


async def one_of_two_desires(
    stack: Releasing, api: httpx.AsyncClient, firmware: httpx.AsyncClient, prefix: str
) -> tuple[str, str, bytes, str]:
    """Two new twins, A and B, and a release only A's twin desires: (a, b, its bytes, its id)."""
    a, b = f"{prefix}-a-{os.urandom(5).hex()}", f"{prefix}-b-{os.urandom(5).hex()}"
    data = image("6.0.0")
    artifact = await publish(stack, firmware, "scoped", "6.0.0", data)
    for device_id in (a, b):
        assert (await api.put(f"/v1/twins/{device_id}")).status_code == 201
    await desire(api, a, artifact, "6.0.0")
    return a, b, data, artifact


async def twin(api: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/twins/{device_id}")
    return response.json() if response.status_code == 200 else {}


async def software(api: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    return dict((await twin(api, device_id)).get("state", {}).get("reported", {}).get("software") or {})


async def finished(api: httpx.AsyncClient, device_id: str, artifact: str, timeout: float = 60) -> dict[str, Any]:
    """The device's software report once its attempt at `artifact` ended."""

    async def done() -> dict[str, Any] | None:
        value = await software(api, device_id)
        ended = value.get("status") in ("UPDATED", "FAILED", "ROLLED_BACK")
        return value if ended and artifact in (value.get("artifact"), value.get("attempt")) else None

    result: dict[str, Any] = await eventually(done, timeout=timeout, what=f"{device_id} finishing {artifact}")
    return result


class Relay:
    """A TCP relay in front of a server; `cut_after(n)` drops the next connection that has carried
    n bytes towards the client. `ranges` are the Range headers of the requests it relayed."""

    RANGE = re.compile(rb"^range:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_at: int | None = None
        self.cuts = 0
        self.ranges: list[str] = []

    def cut_after(self, count: int) -> None:
        self.cut_at = count

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
            sent = 0
            try:
                while data := await src.read(65536):
                    if not downstream:
                        self.ranges += [m.decode() for m in self.RANGE.findall(data)]
                    if downstream and self.cut_at is not None and sent + len(data) >= self.cut_at:
                        dst.write(data[: max(self.cut_at - sent, 0)])
                        self.cut_at = None
                        self.cuts += 1
                        raise ConnectionResetError("relay cut the link")
                    dst.write(data)
                    sent += len(data)
                    await dst.drain()
            finally:
                for stream in (dst, writer, up_writer):
                    with contextlib.suppress(Exception):
                        stream.close()

        with contextlib.suppress(asyncio.CancelledError):  # the relay closing with the module
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True), return_exceptions=True)


@contextlib.asynccontextmanager
async def relaying(port: int, target_port: int) -> AsyncIterator[Relay]:
    relay = Relay(target_port)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", port)
    try:
        yield relay
    finally:
        server.close()
