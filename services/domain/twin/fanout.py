"""What the delta app sends to devices for a batch of twin events (pure planning).

Bursts are coalesced per twin: one `/documents` message spans the burst (previous of the first
change, current of the last) and at most one `/delta` carries the latest delta. Events whose
version is not newer than what was already sent for that twin are dropped, so a stale or
redelivered event never regresses what a device sees. A change of configuration marks or tags
alone by a batch write (cause `configuration`) is none of the device's business: it sends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.contracts.events import DeltaRequested, TwinChanged
from services.contracts.topics import TwinAddress
from services.domain.json_values import json_equal
from services.domain.twin.delta import delta_message, snapshot_delta


@dataclass(frozen=True, slots=True)
class Outgoing:
    address: TwinAddress
    version: int
    delta: dict[str, Any] | None
    documents: dict[str, Any] | None


def plan_fanout(
    events: Sequence[TwinChanged | DeltaRequested], sent_versions: Mapping[TwinAddress, int]
) -> tuple[list[Outgoing], dict[TwinAddress, int]]:
    """Messages to publish for `events`, in first-seen twin order, and the updated sent versions."""
    groups: dict[TwinAddress, list[TwinChanged | DeltaRequested]] = {}
    for event in events:
        groups.setdefault(TwinAddress(event.device_id, event.shadow), []).append(event)
    versions = dict(sent_versions)
    outgoing: list[Outgoing] = []
    for address, group in groups.items():
        plan = _plan_twin(address, group, versions.get(address, 0))
        if plan is not None:
            outgoing.append(plan)
            versions[address] = max(versions.get(address, 0), plan.version)
    return outgoing, versions


def _plan_twin(address: TwinAddress, group: list[TwinChanged | DeltaRequested], sent: int) -> Outgoing | None:
    changes = [e for e in group if isinstance(e, TwinChanged) and e.version > sent and e.cause != "configuration"]
    requests = [e for e in group if isinstance(e, DeltaRequested) and e.version >= sent]
    documents: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None
    version = sent
    if changes:
        first, last = changes[0], changes[-1]
        version = last.version
        documents = {"previous": first.previous, "current": last.current, "timestamp": last.timestamp}
        if last.client_token is not None:
            documents = {**documents, "clientToken": last.client_token}
        if last.current is not None:
            before, after = snapshot_delta(first.previous), snapshot_delta(last.current)
            if after and not json_equal(before, after):
                delta = delta_message(last.current, last.client_token)
    if requests:
        newest = max(requests, key=lambda e: e.version)
        if newest.version >= version:
            version = newest.version
            delta = delta_message(newest.current, newest.client_token) or delta
    if documents is None and delta is None:
        return None
    return Outgoing(address, version, delta, documents)
