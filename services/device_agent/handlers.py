"""Handlers apply desired values to the device, one per top-level twin key.

A handler reports the value now in effect (`current`) and applies a desired value (`apply`),
returning what is in effect afterwards or raising `HandlerFailed` with a reason the twin shows.
Applying must be idempotent: the agent re-applies after a crash or a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from services.domain.json_values import JsonObject


class HandlerFailed(Exception):
    """The device could not apply a desired value; `reason` is reported under the handler's key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Handler(Protocol):
    key: str

    async def current(self) -> Any: ...

    async def apply(self, desired: Any) -> Any: ...


@runtime_checkable
class ReportsProgress(Protocol):
    """A handler whose apply takes long and reports how far it is (a software update): the agent
    gives it `report`, and it says by `satisfied` when its reported value means nothing is left
    to do (the value it reports is not the desired value itself)."""

    key: str
    report: Callable[[Any], Awaitable[None]] | None

    def satisfied(self, current: Any, desired: Any) -> bool: ...


class ConfigurationHandler:
    """Desired settings (a JSON object) written to a file — atomically, so a crash mid-apply leaves
    the old or the new settings, never half of them — and, on K3s, to a ConfigMap."""

    def __init__(self, key: str, path: Path, configmap: ConfigMapWriter | None = None, delay: float = 0.0) -> None:
        self.key = key
        self.path = path
        self.configmap = configmap
        self.delay = delay

    async def current(self) -> Any:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"status": "FAILED", "reason": f"{self.path.name} is not valid JSON"}

    async def apply(self, desired: Any) -> Any:
        if not isinstance(desired, dict):
            raise HandlerFailed(f"configuration must be an object, got {type(desired).__name__}")
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            await asyncio.to_thread(write_atomically, self.path, json.dumps(desired, indent=2, sort_keys=True))
        except OSError as error:
            raise HandlerFailed(f"cannot write {self.path.name}: {error.strerror}") from None
        if self.configmap is not None:
            await self.configmap.write(desired)
        return desired


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def kubernetes_client(credentials: Path, timeout: float) -> httpx.AsyncClient:
    """A client of the Kubernetes API with a service account's token and the cluster's CA, read
    from `credentials` (a pod's mounted service account: the token is rotated, so read per use)."""
    token = (credentials / "token").read_text().strip()
    return httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=credentials / "ca.crt"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


class ConfigMapWriter:
    """Writes settings into one ConfigMap of the agent's namespace through the Kubernetes API,
    with the pod's service account (RBAC: get/patch on that ConfigMap only)."""

    def __init__(
        self,
        name: str,
        namespace: str,
        api: str = "https://kubernetes.default.svc",
        credentials: Path = SERVICE_ACCOUNT,
    ) -> None:
        self.url = f"{api}/api/v1/namespaces/{namespace}/configmaps/{name}"
        self.credentials = credentials

    async def write(self, settings: JsonObject) -> None:
        body = {"data": {"settings.json": json.dumps(settings, sort_keys=True)}}
        async with kubernetes_client(self.credentials, timeout=10) as client:
            response = await client.patch(self.url, json=body, headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code >= 300:
            raise HandlerFailed(f"ConfigMap update refused: {response.status_code} {response.text[:200]}")


class AgentInfoHandler:
    """Reports what the agent is (version, wire encoding, the keys it handles); read-only, so a
    new device's twin exists from its first boot."""

    def __init__(self, key: str, info: JsonObject) -> None:
        self.key = key
        self.info = info

    async def current(self) -> Any:
        return self.info

    async def apply(self, desired: Any) -> Any:
        raise HandlerFailed(f"{self.key!r} is reported by the agent and cannot be desired")
