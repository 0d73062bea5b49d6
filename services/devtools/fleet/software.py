"""A simulated device's software: the same update rules as the agent (`domain.software.twin_key`:
what is done, when to wait for the install trigger, which attempt a report answers), in memory and
with failures on demand — downloads that fail a number of times, installs that always fail, and
versions after which the device is unhealthy (it reports errors and sends `error` events)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from services.domain.software.twin_key import (
    FailureKind,
    Gate,
    UpdateStatus,
    desired_artifact,
    install_gate,
    retry_of,
    satisfied,
)


@dataclass
class SimulatedSoftware:
    version: str = "1.0.0"
    download_seconds: float = 0.0
    failing_downloads: int = 0
    """The next this many attempts fail their download (then they succeed)."""
    failing_installs: bool = False
    """Every install fails (a hardware revision the release does not run on)."""
    unhealthy_versions: frozenset[str] = frozenset()
    """Versions that install fine and then make the device unhealthy."""
    report: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0

    def __post_init__(self) -> None:
        self.report = self.report or {"version": self.version, "status": UpdateStatus.UPDATED.value}

    @property
    def unhealthy(self) -> bool:
        return self.report.get("status") == UpdateStatus.UPDATED and self.version in self.unhealthy_versions

    def satisfied(self, current: Any, desired: Any) -> bool:
        return satisfied(current, desired, False, time.time())

    async def apply(self, desired: Any) -> dict[str, Any]:
        """One attempt at the desired update; returns the report (also kept in `report`)."""
        artifact = desired_artifact(desired)
        assert artifact is not None and isinstance(desired, dict)
        self.attempts += 1
        retry = retry_of(desired)
        attempt: dict[str, Any] = {"version": self.version, "attempt": artifact, **({"retry": retry} if retry else {})}
        if self.download_seconds:
            await asyncio.sleep(self.download_seconds)
        if self.failing_downloads > 0:
            self.failing_downloads -= 1
            return self._keep(attempt, UpdateStatus.FAILED, FailureKind.DOWNLOAD, "link dropped (simulated)")
        gate = install_gate(desired, False, False, None, time.time())
        if gate is Gate.WAIT_FOR_INSTALL:
            return self._keep(attempt, UpdateStatus.WAITING_FOR_INSTALL)
        if self.failing_installs:
            return self._keep(attempt, UpdateStatus.FAILED, FailureKind.INSTALL, "install refused (simulated)")
        self.version = str(desired.get("version", self.version))
        done = {"artifact": artifact, "version": self.version, "status": UpdateStatus.UPDATED.value}
        self.report = done | ({"retry": retry} if retry else {})
        return self.report

    def _keep(
        self, attempt: dict[str, Any], status: UpdateStatus, failure: FailureKind | None = None, reason: str = ""
    ) -> dict[str, Any]:
        self.report = {**attempt, "status": status.value}
        if failure is not None:
            self.report |= {"failure": failure.value, "reason": reason}
        return self.report
