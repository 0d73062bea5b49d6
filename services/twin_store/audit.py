"""The audit trail: every app publishes a record of each state-changing call (`audit.recorded`,
`services.contracts.access`); the twin-store keeps them and serves them newest first
(`GET /v1/audit`, admin; `twin audit`).

Records are kept in 10-second buckets listed in one index document. Each delivery's records of a
bucket are written once, as one part document (its key named by the records' ids, so a redelivery
of the same records writes nothing new), and then listed in the bucket's document (ETag retry):
a delivery costs what it carries, not the whole bucket. Reading a bucket merges its parts and keeps
a record delivered twice once. Parts and buckets leave the store `retention` seconds after they
were written."""

from __future__ import annotations

import functools
import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.contracts.access import AuditPage, AuditRecorded, Outcome
from services.domain.errors import bad_request
from services.domain.json_values import JsonObject
from services.platform.cloudevents import handle_bulk
from services.platform.http import provided
from services.platform.state import Put, StateRepository

BUCKET_SECONDS = 10
INDEX_KEY = "audit~buckets"
AUDIT_ROUTE = "/events/audit"
router = APIRouter(prefix="/v1/audit", tags=["access"])
events = APIRouter(include_in_schema=False)


def bucket_id(at: float) -> str:
    return f"{int(at) // BUCKET_SECONDS:012d}"


def bucket_key(bucket: str) -> str:
    return f"audit~{bucket}"


def part_key(bucket: str, part: str) -> str:
    return f"audit~{bucket}~{part}"


def part_id(records: Sequence[AuditRecorded]) -> str:
    """The same records, in any order, make the same part."""
    return hashlib.sha256("\n".join(sorted(r.id for r in records)).encode()).hexdigest()[:24]


def merged(bucket: JsonObject, parts: Sequence[JsonObject | None]) -> list[dict[str, Any]]:
    """A bucket's records, oldest first, each once: its parts' (and the items a bucket written
    whole, before parts, holds)."""
    by_id: dict[str, dict[str, Any]] = {}
    for item in [*bucket.get("items", []), *(i for part in parts for i in (part or {}).get("items", []))]:
        by_id.setdefault(item["id"], item)
    return sorted(by_id.values(), key=lambda item: (item["at"], item["id"]))


def with_part(value: JsonObject | None, part: str, ttl: int) -> tuple[Put | None, None]:
    """A bucket's document listing `part` (nothing to write when it already does)."""
    parts: list[str] = list((value or {}).get("parts", []))
    if part in parts:
        return None, None
    return Put({**(value or {}), "parts": [*parts, part]}, ttl_seconds=ttl), None


class AuditLog:
    def __init__(self, repository: StateRepository, retention_seconds: int) -> None:
        self.repository = repository
        self.retention = retention_seconds

    async def append(self, records: Sequence[AuditRecorded]) -> None:
        by_bucket: defaultdict[str, list[AuditRecorded]] = defaultdict(list)
        for record in records:
            by_bucket[bucket_id(record.at)].append(record)
        for bucket, entries in sorted(by_bucket.items()):
            await self._index(bucket)
            part = part_id(entries)
            items = [e.model_dump(mode="json") for e in entries]  # ordered when read (`merged`)
            await self.repository.create(part_key(bucket, part), {"items": items}, ttl_seconds=self.retention)
            listed = functools.partial(with_part, part=part, ttl=self.retention)
            await self.repository.update(bucket_key(bucket), listed)

    async def _index(self, bucket: str) -> None:
        oldest = bucket_id(time.time() - self.retention)

        def step(value: JsonObject | None) -> tuple[Put | None, None]:
            ids: list[str] = [b for b in (value or {}).get("ids", []) if b >= oldest]
            if bucket in ids and len(ids) == len((value or {}).get("ids", [])):
                return None, None
            return Put({"ids": sorted({*ids, bucket})}), None

        await self.repository.update(INDEX_KEY, step)

    async def page(
        self, limit: int, before: str | None, actor: str | None = None, outcome: Outcome | None = None
    ) -> AuditPage:
        """Newest first; `before` is a `next` this returned (the bucket and how many were seen)."""
        start_bucket, skip = _cursor(before)
        ids = sorted(((await self.repository.get(INDEX_KEY)).value or {}).get("ids", []), reverse=True)
        items: list[AuditRecorded] = []
        for bucket in ids:
            if start_bucket is not None and bucket > start_bucket:
                continue
            entries = list(reversed(await self._records(bucket)))
            offset = skip if bucket == start_bucket else 0
            for position, item in enumerate(entries[offset:], start=offset):
                record = AuditRecorded.model_validate(item)
                if (actor is None or record.actor == actor) and (outcome is None or record.outcome == outcome):
                    items.append(record)
                if len(items) >= limit:
                    more = position + 1 < len(entries) or bucket != ids[-1]
                    return AuditPage(items=items, next=f"{bucket}.{position + 1}" if more else None)
        return AuditPage(items=items)

    async def _records(self, bucket: str) -> list[dict[str, Any]]:
        stored = (await self.repository.get(bucket_key(bucket))).value or {}
        keys = [part_key(bucket, part) for part in stored.get("parts", [])]
        parts = await self.repository.get_many(keys) if keys else {}
        return merged(stored, [parts[key].value if key in parts else None for key in keys])


def _cursor(before: str | None) -> tuple[str | None, int]:
    if before is None:
        return None, 0
    bucket, _, skip = before.partition(".")
    if not bucket.isdigit() or not skip.isdigit():
        raise bad_request("before is not a cursor this API returned")
    return bucket, int(skip)


Audit = Annotated[AuditLog, provided(AuditLog)]


@router.get("", response_model=AuditPage)
async def audit_trail(
    log: Audit,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(max_length=64, description="`next` of the previous page")] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
) -> AuditPage:
    """Every state-changing call of every app, newest first: who, what, when, from where, outcome."""
    return await log.page(limit, before, actor, outcome)


@events.post(AUDIT_ROUTE)
async def audit_recorded(request: Request, log: Audit) -> dict[str, Any]:
    """A bulk delivery of `audit.recorded`."""
    return await handle_bulk(await request.body(), AuditRecorded, log.append)
