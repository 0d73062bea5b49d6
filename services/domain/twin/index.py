"""The twin listing index, pure: twin keys kept sorted in a fixed number of shard documents, and
paging across them in order with an opaque cursor. What the listing guarantees, and when the
shards are written, is `services.twin_store.listing`'s to say.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Sequence

SHARDS = 64


def shard_of(twin_key: str) -> int:
    return zlib.crc32(twin_key.encode()) % SHARDS


def shard_key(shard: int) -> str:
    return f"twin-index~{shard:02d}"


def with_member(members: Sequence[str], twin_key: str, present: bool) -> list[str]:
    """`members` (sorted) with `twin_key` added or removed."""
    result = list(members)
    index = bisect.bisect_left(result, twin_key)
    found = index < len(result) and result[index] == twin_key
    if present and not found:
        result.insert(index, twin_key)
    elif not present and found:
        result.pop(index)
    return result


def encode_cursor(shard: int, after: str) -> str:
    return f"{shard}:{after}"


def decode_cursor(cursor: str | None) -> tuple[int, str]:
    """(shard, last key returned); raises ValueError for a cursor this module did not make."""
    if not cursor:
        return 0, ""
    shard_text, _, after = cursor.partition(":")
    shard = int(shard_text)
    if not 0 <= shard < SHARDS:
        raise ValueError("cursor out of range")
    return shard, after


def page_from_shard(members: Sequence[str], after: str, limit: int) -> list[str]:
    """Up to `limit` members strictly after `after`."""
    start = bisect.bisect_right(list(members), after) if after else 0
    return list(members[start : start + limit])
