"""The due shards: when the periodic sweep should next look at each device with pending commands."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.domain.json_values import JsonObject

DUE_SHARDS = 64


def due_shard(device_id: str) -> int:
    """The due shard a device belongs to (stable across processes and restarts)."""
    return zlib.crc32(device_id.encode()) % DUE_SHARDS


@dataclass(frozen=True, slots=True)
class DueEntry:
    at: float
    token: str
    """Changes with every schedule, so a sweep can tell whether someone scheduled meanwhile."""


@dataclass(frozen=True, slots=True)
class DueShard:
    """When the sweep should next look at each device of one shard."""

    devices: Mapping[str, DueEntry] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {"devices": {d: [e.at, e.token] for d, e in self.devices.items()}}

    @staticmethod
    def from_json(value: JsonObject | None) -> DueShard:
        if not value:
            return DueShard()
        return DueShard({d: DueEntry(float(at), str(token)) for d, (at, token) in value.get("devices", {}).items()})

    def scheduled(self, device_id: str, at: float, token: str) -> DueShard:
        """Look at `device_id` by `at` (or earlier, if it already was), under a fresh token."""
        known = self.devices.get(device_id)
        earliest = at if known is None else min(known.at, at)
        return DueShard({**self.devices, device_id: DueEntry(earliest, token)})

    def rescheduled(self, device_id: str, seen_token: str, at: float | None, token: str) -> DueShard:
        """After a sweep looked at a device: its next time (`None`: nothing pending), but only if
        nobody scheduled it since the sweep read `seen_token`; otherwise unchanged."""
        known = self.devices.get(device_id)
        if known is None or known.token != seen_token:
            return self
        devices = dict(self.devices)
        if at is None:
            del devices[device_id]
        else:
            devices[device_id] = DueEntry(at, token)
        return DueShard(devices)

    def due(self, now: float) -> list[tuple[float, str, str]]:
        """`(at, device_id, token)` of the devices due by `now`, earliest first."""
        return sorted((e.at, d, e.token) for d, e in self.devices.items() if e.at <= now)


def due_shard_key(shard: int) -> str:
    return f"commands-due~{shard}"
