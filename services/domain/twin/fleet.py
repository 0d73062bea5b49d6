"""The fleet at a glance, pure: each twin's facets (connection state, wire encoding, software
version, tags) and counts by each, kept up to date one twin change at a time so that a page view
reads counters instead of scanning the fleet; plus a sorted index for the console's device list
(search by id prefix and tag, sorted by id, version or last change, paged).

Correct across redeliveries and restarts because it is keyed by twin version, which only grows
(across deletes too: a deleted twin is a tombstone with its own version): a change is applied only
when its version is above the one held, so a redelivered or late event, or a scan that read an
older document than an event already brought, changes nothing. After a restart the index is
rebuilt by one scan of the store while events keep arriving; each twin ends at its newest version
whichever came first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sortedcontainers import SortedKeyList, SortedList

from services.domain.access import Scope, in_scope
from services.domain.software.twin_key import SOFTWARE_KEY

NO_SOFTWARE = "none"
CONNECTION_KEY = "connection"
"""A device reports its link as `reported.connection` (`"connected"`/`"disconnected"`, or an
object with a `state`), or `reported.connected` (a boolean); `unknown` otherwise."""
MAX_TAG_VALUE = 64
"""Tag values longer than this are not counted (they are ids, not groups)."""


class Facet(StrEnum):
    CONNECTION = "connection"
    ENCODING = "encoding"
    SOFTWARE = "software"
    TAG = "tag"


class SortKey(StrEnum):
    ID = "id"
    VERSION = "version"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class TwinFacets:
    """What the fleet counts of one live twin."""

    connection: str
    encoding: str
    software: str
    tags: tuple[str, ...]
    """`key=value` of each scalar tag."""

    def values(self) -> Iterator[tuple[Facet, str]]:
        yield Facet.CONNECTION, self.connection
        yield Facet.ENCODING, self.encoding
        yield Facet.SOFTWARE, self.software
        for tag in self.tags:
            yield Facet.TAG, tag


@dataclass(frozen=True, slots=True)
class Entry:
    """The index's view of one twin at `version`; `facets` None: deleted (a tombstone)."""

    device_id: str
    version: int
    timestamp: int
    facets: TwinFacets | None
    tags: Mapping[str, Any]
    software_status: str = ""


def connection_of(reported: Mapping[str, Any]) -> str:
    value = reported.get(CONNECTION_KEY)
    if isinstance(value, Mapping):
        value = value.get("state")
    if isinstance(value, str) and value in ("connected", "disconnected"):
        return value
    flag = reported.get("connected")
    if isinstance(flag, bool):
        return "connected" if flag else "disconnected"
    return "unknown"


def software_of(reported: Mapping[str, Any]) -> tuple[str, str]:
    """(running version, status of the last attempt) from the twin's reported `software` key."""
    value = reported.get(SOFTWARE_KEY)
    if not isinstance(value, Mapping):
        return NO_SOFTWARE, ""
    version = value.get("version")
    status = value.get("status")
    return (str(version) if isinstance(version, str | int) and version != "" else NO_SOFTWARE), (
        str(status) if isinstance(status, str) else ""
    )


def tag_terms(tags: Mapping[str, Any]) -> tuple[str, ...]:
    """`key=value` of each scalar tag (strings, numbers, booleans), sorted."""
    terms = []
    for key, value in tags.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            continue
        if len(text) <= MAX_TAG_VALUE:
            terms.append(f"{key}={text}")
    return tuple(sorted(terms))


def entry_of(
    device_id: str,
    version: int,
    timestamp: int,
    reported: Mapping[str, Any] | None,
    tags: Mapping[str, Any],
    encoding: str,
) -> Entry:
    """The index entry of a twin document (`reported` None: the twin was deleted)."""
    if reported is None:
        return Entry(device_id, version, timestamp, None, {})
    software, status = software_of(reported)
    facets = TwinFacets(connection_of(reported), encoding, software, tag_terms(tags))
    return Entry(device_id, version, timestamp, facets, dict(tags), status)


@dataclass(frozen=True, slots=True)
class FleetQuery:
    prefix: str = ""
    """Device ids starting with this."""
    tag: str = ""
    """`key=value`: only twins with this tag."""
    sort: SortKey = SortKey.ID
    descending: bool = False
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class FleetSlice:
    total: int
    items: list[Entry]


class FleetIndex:
    """Counts by facet and a sorted listing of live twins, from twin changes (see the module)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._counts: dict[Facet, Counter[str]] = {facet: Counter() for facet in Facet}
        self._ids: SortedList = SortedList()
        self._by_version: SortedKeyList = SortedKeyList(key=lambda e: (e.version, e.device_id))
        self._by_changed: SortedKeyList = SortedKeyList(key=lambda e: (e.timestamp, e.device_id))
        self._tagged: dict[str, set[str]] = {}
        self.applied = 0
        self.ignored = 0

    def __len__(self) -> int:
        return len(self._ids)

    def version(self, device_id: str) -> int:
        held = self._entries.get(device_id)
        return held.version if held else 0

    def get(self, device_id: str) -> Entry | None:
        held = self._entries.get(device_id)
        return held if held is not None and held.facets is not None else None

    def apply(self, entry: Entry) -> bool:
        """Take `entry` if it is newer than what is held; False (nothing changes) otherwise."""
        held = self._entries.get(entry.device_id)
        if held is not None and entry.version <= held.version:
            self.ignored += 1
            return False
        if held is not None and held.facets is not None:
            self._unlist(held)
        self._entries[entry.device_id] = entry
        if entry.facets is not None:
            self._list(entry)
        self.applied += 1
        return True

    def apply_all(self, entries: Iterable[Entry]) -> int:
        return sum(1 for entry in entries if self.apply(entry))

    def _list(self, entry: Entry) -> None:
        assert entry.facets is not None
        for facet, value in entry.facets.values():
            self._counts[facet][value] += 1
        for tag in entry.facets.tags:
            self._tagged.setdefault(tag, set()).add(entry.device_id)
        self._ids.add(entry.device_id)
        self._by_version.add(entry)
        self._by_changed.add(entry)

    def _unlist(self, entry: Entry) -> None:
        assert entry.facets is not None
        for facet, value in entry.facets.values():
            counter = self._counts[facet]
            counter[value] -= 1
            if counter[value] <= 0:
                del counter[value]
        for tag in entry.facets.tags:
            members = self._tagged.get(tag)
            if members is not None:
                members.discard(entry.device_id)
                if not members:
                    del self._tagged[tag]
        self._ids.remove(entry.device_id)
        self._by_version.remove(entry)
        self._by_changed.remove(entry)

    def counts(self, scope: Scope | None = None) -> tuple[int, dict[Facet, dict[str, int]]]:
        """(twins, counts by facet) of the live twins within `scope`: the counters themselves when
        unscoped; for a scope, only the twins holding the scope's tags are looked at."""
        if not scope:
            return len(self._ids), {facet: dict(counter) for facet, counter in self._counts.items()}
        counts: dict[Facet, Counter[str]] = {facet: Counter() for facet in Facet}
        members = self._scoped(scope)
        for device_id in members:
            facets = self._entries[device_id].facets
            assert facets is not None
            for facet, value in facets.values():
                counts[facet][value] += 1
        return len(members), {facet: dict(counter) for facet, counter in counts.items()}

    def _scoped(self, scope: Scope) -> list[str]:
        terms = tag_terms(scope)
        smallest = min((self._tagged.get(term, set()) for term in terms), key=len, default=set())
        return [d for d in smallest if in_scope(self._entries[d].tags, scope)]

    def query(self, query: FleetQuery, scope: Scope | None = None) -> FleetSlice:
        """One page of live twins matching `query` within `scope`, sorted as asked."""
        restricted: set[str] | None = None
        if query.tag:
            restricted = set(self._tagged.get(query.tag, set()))
        if scope:
            members = set(self._scoped(scope))
            restricted = members if restricted is None else restricted & members
        if restricted is not None:
            chosen = [self._entries[d] for d in restricted if d.startswith(query.prefix)]
            chosen.sort(key=_sort_key(query.sort), reverse=query.descending)
            return FleetSlice(len(chosen), chosen[query.offset : query.offset + query.limit])
        if query.prefix:
            ids = list(self._ids.irange(query.prefix, query.prefix + "\U0010ffff"))
            chosen = [self._entries[d] for d in ids]
            chosen.sort(key=_sort_key(query.sort), reverse=query.descending)
            return FleetSlice(len(chosen), chosen[query.offset : query.offset + query.limit])
        ordered: Any = {
            SortKey.ID: self._ids,
            SortKey.VERSION: self._by_version,
            SortKey.CHANGED: self._by_changed,
        }[query.sort]
        total = len(ordered)
        if query.descending:
            stop = max(0, total - query.offset)
            window = list(ordered.islice(max(0, stop - query.limit), stop))[::-1]
        else:
            window = list(ordered.islice(query.offset, query.offset + query.limit))
        items = [self._entries[w] if isinstance(w, str) else w for w in window]
        return FleetSlice(total, items)


def _sort_key(sort: SortKey) -> Any:
    if sort is SortKey.VERSION:
        return lambda e: (e.version, e.device_id)
    if sort is SortKey.CHANGED:
        return lambda e: (e.timestamp, e.device_id)
    return lambda e: e.device_id
