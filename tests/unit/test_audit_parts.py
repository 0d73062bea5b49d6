"""The audit trail's storage (`services.twin_store.audit`): a delivery is written as one part of its
bucket, and a bucket reads as its parts merged, each record once, oldest first."""

from __future__ import annotations

from typing import Any

from services.contracts.access import AuditRecorded
from services.twin_store.audit import merged, part_id, with_part


def record(n: int, at: float) -> AuditRecorded:
    return AuditRecorded(
        id=f"r-{n}", at=at, app="twin-store", actor="a", actor_kind="token", method="PATCH",
        path="/v1/twins/d/desired", route="/v1/twins/{id}/desired", status=200, outcome="allowed",
    )  # fmt: skip


def item(n: int, at: float) -> dict[str, Any]:
    return record(n, at).model_dump(mode="json")


def test_the_same_records_in_any_order_make_the_same_part_and_others_another() -> None:
    one, two, three = record(1, 1.0), record(2, 2.0), record(3, 3.0)
    assert part_id([one, two]) == part_id([two, one])
    assert part_id([one, two]) != part_id([one, two, three])
    assert part_id([one]) != part_id([two])


def test_a_bucket_reads_as_its_parts_merged_each_record_once_oldest_first() -> None:
    parts = [
        {"items": [item(2, 2.0), item(3, 3.0)]},
        {"items": [item(1, 1.0), item(2, 2.0)]},  # r-2 delivered again, with r-1
        None,  # a listed part whose document has expired
    ]
    old = {"items": [item(0, 0.5)]}  # a bucket written whole, before parts
    assert [i["id"] for i in merged({**old, "parts": ["x", "y", "z"]}, parts)] == ["r-0", "r-1", "r-2", "r-3"]
    assert merged({}, []) == []


def test_records_at_the_same_instant_keep_one_order() -> None:
    parts = [{"items": [item(2, 1.0)]}, {"items": [item(1, 1.0)]}]
    assert [i["id"] for i in merged({}, parts)] == ["r-1", "r-2"]
    assert [i["id"] for i in merged({}, list(reversed(parts)))] == ["r-1", "r-2"]


def test_a_part_is_listed_once_and_the_bucket_keeps_what_it_had() -> None:
    put, _ = with_part(None, "p1", 60)
    assert put is not None and put.value == {"parts": ["p1"]} and put.ttl_seconds == 60
    put, _ = with_part({"items": [item(0, 0.5)], "parts": ["p1"]}, "p2", 60)
    assert put is not None and put.value["parts"] == ["p1", "p2"] and len(put.value["items"]) == 1
    assert with_part({"parts": ["p1", "p2"]}, "p2", 60) == (None, None)
