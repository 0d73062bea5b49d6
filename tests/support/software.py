"""Software releases for tests: images that pass or fail the device's health check, streamed
uploads to the firmware app, and what a device reports under its twin's `software` key."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.support.waiting import eventually

HEALTHY = b"HEALTHY"
"""How a release image starts when it passes the health check (`grep -q ^HEALTHY <file>`)."""
CHUNK = 1 << 20


def image(version: str, size: int = 2 * CHUNK + 12345, healthy: bool = True) -> bytes:
    head = (HEALTHY if healthy else b"BROKEN") + f" image {version}\n".encode()
    return head + os.urandom(size - len(head))


async def upload(firmware: httpx.AsyncClient, name: str, version: str, data: bytes, **params: Any) -> dict[str, Any]:
    async def body() -> AsyncIterator[bytes]:  # streamed, as a multi-GB upload would be
        for start in range(0, len(data), 300_000):
            yield data[start : start + 300_000]

    response = await firmware.post("/v1/artifacts", params={"name": name, "version": version, **params}, content=body())
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


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
