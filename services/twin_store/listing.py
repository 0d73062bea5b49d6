"""The twin listing: which twins exist, in key order, page by page — its reads and its writes.

Twin keys are kept sorted in `SHARDS` shard documents (`services.domain.twin.index`), written by
the twin-store's writer around its twin writes: a key is added *before* the write that creates its
twin and removed *after* the write that deletes it. The store has no transaction spanning the two,
so this is what the listing guarantees:

- every live twin is listed (its key was in a shard before its first version was written);
- a listed key may, for a moment or after a crash between the two writes, have no live twin (a
  creation refused or lost, a deletion not yet unlisted): pages skip those, so they never show.

A page therefore holds at most `limit` twins, and fewer only when such keys were skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from services.domain.twin.document import TwinDocument
from services.domain.twin.index import (
    SHARDS,
    decode_cursor,
    encode_cursor,
    page_from_shard,
    shard_key,
    shard_of,
    with_member,
)
from services.platform.sidecar import Stored
from services.platform.state import Put, StateRepository


class TwinListing:
    def __init__(self, repository: StateRepository) -> None:
        self._repository = repository

    async def page(self, cursor: str | None, limit: int) -> tuple[list[TwinDocument], str | None]:
        """Up to `limit` live twins after `cursor` (None: from the start) and the cursor of the
        next page (None on the last). A cursor this module did not make raises ValueError."""
        shard, after = decode_cursor(cursor)
        keys: list[str] = []
        next_cursor = None
        while shard < SHARDS and len(keys) < limit:
            members: list[str] = ((await self._repository.get(shard_key(shard))).value or {}).get("twins", [])
            page = page_from_shard(members, after, limit - len(keys))
            keys += page
            if page and page[-1] != members[-1]:
                next_cursor = encode_cursor(shard, page[-1])
                break
            shard, after = shard + 1, ""
            next_cursor = encode_cursor(shard, "") if shard < SHARDS else None
        docs = await self._repository.get_many(keys)
        found = (TwinDocument.model_validate(value) for key in keys if (value := docs[key].value) is not None)
        return [doc for doc in found if doc.exists], next_cursor

    async def add(self, keys: Collection[str]) -> None:
        """List these twin keys (before the writes that create their twins)."""
        await self._edit(dict.fromkeys(keys, True))

    async def remove(self, keys: Collection[str]) -> None:
        """Unlist these twin keys (after the writes that deleted their twins landed)."""
        await self._edit(dict.fromkeys(keys, False))

    async def _edit(self, flips: Mapping[str, bool]) -> None:
        by_shard: dict[str, dict[str, bool]] = {}
        for key, present in flips.items():
            by_shard.setdefault(shard_key(shard_of(key)), {})[key] = present
        if not by_shard:
            return

        async def edit(stored: Mapping[str, Stored]) -> dict[str, Put]:
            puts = {}
            for skey, current in stored.items():
                members: list[str] = (current.value or {}).get("twins", [])
                updated = members
                for key, present in by_shard[skey].items():
                    updated = with_member(updated, key, present)
                if updated != members:
                    puts[skey] = Put({"twins": updated})
            return puts

        await self._repository.update_many(sorted(by_shard), edit)
