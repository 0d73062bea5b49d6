"""The fleet index: counts and listings from twin changes, correct under redelivery, reordering and
a rebuild racing the events (property-tested against counting the final documents directly)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.twin.fleet import Entry, Facet, FleetIndex, FleetQuery, SortKey, entry_of


def twin(device_id: str, version: int, *, connected: bool | None = None, sw: str = "", region: str = "eu") -> Entry:
    reported: dict[str, object] = {}
    if connected is not None:
        reported["connected"] = connected
    if sw:
        reported["software"] = {"version": sw, "status": "UPDATED"}
    return entry_of(device_id, version, 1000 + version, reported, {"region": region}, "json")


def test_counts_follow_changes_and_ignore_redeliveries_and_stale_versions() -> None:
    index = FleetIndex()
    assert index.apply(twin("a", 1, connected=True, sw="1.0"))
    assert index.apply(twin("b", 1, connected=False))
    assert index.apply(twin("a", 2, connected=False, sw="2.0"))
    assert not index.apply(twin("a", 2, connected=True, sw="9.9"))  # redelivered
    assert not index.apply(twin("a", 1, connected=True, sw="1.0"))  # late
    total, counts = index.counts()
    assert total == 2
    assert counts[Facet.CONNECTION] == {"disconnected": 2}
    assert counts[Facet.SOFTWARE] == {"2.0": 1, "none": 1}
    assert counts[Facet.TAG] == {"region=eu": 2}
    assert index.apply(entry_of("b", 2, 1002, None, {}, "json"))  # deleted
    assert not index.apply(twin("b", 1))  # a scan that read it before the delete
    assert index.counts()[0] == 1 and index.get("b") is None


def test_queries_sort_page_search_and_scope() -> None:
    index = FleetIndex()
    for i in range(30):
        index.apply(twin(f"dev-{i:02d}", 30 - i, region="eu" if i % 3 else "us"))
    page = index.query(FleetQuery(limit=5))
    assert page.total == 30 and [e.device_id for e in page.items] == [f"dev-{i:02d}" for i in range(5)]
    newest = index.query(FleetQuery(sort=SortKey.VERSION, descending=True, limit=2))
    assert [e.device_id for e in newest.items] == ["dev-00", "dev-01"]
    assert index.query(FleetQuery(prefix="dev-1")).total == 10
    assert index.query(FleetQuery(tag="region=us")).total == 10
    scoped = index.query(FleetQuery(limit=100), {"region": "us"})
    assert scoped.total == 10 and all(e.tags["region"] == "us" for e in scoped.items)
    assert index.counts({"region": "us"})[0] == 10
    assert index.query(FleetQuery(offset=28, limit=5)).items[-1].device_id == "dev-29"


changes = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(1, 8),
        st.booleans(),
        st.sampled_from(["1.0", "2.0", ""]),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(changes, st.randoms())
def test_any_order_and_any_redelivery_ends_at_the_newest_versions(events: list, rnd: object) -> None:
    entries = [
        entry_of(d, v, v, None, {}, "json") if deleted else twin(d, v, connected=c, sw=sw)
        for d, v, c, sw, deleted in events
    ]
    newest: dict[str, Entry] = {}
    for entry in entries:  # the first of equal versions wins in the store (a version is written once)
        if entry.device_id not in newest or entry.version > newest[entry.device_id].version:
            newest[entry.device_id] = entry
    unique = list(newest.values())
    shuffled = unique + entries  # every change delivered, then again in any order (the scan races)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    index = FleetIndex()
    index.apply_all(unique)
    index.apply_all(shuffled)
    live = [e for e in unique if e.facets is not None]
    expected = Counter(e.facets.connection for e in live if e.facets)
    total, counts = index.counts()
    assert total == len(live)
    assert counts[Facet.CONNECTION] == dict(expected)
