"""HTTP byte ranges of an artifact (RFC 9110, a single range) and the chunk slices that serve one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.domain.errors import range_not_satisfiable


# -- byte ranges -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Inclusive, as in `Content-Range`."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """The single byte range a `Range` header asks for (None: the whole artifact). Several
    ranges or a range past the end are 416; an unparsable header is ignored, as RFC 9110 says."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        if header.strip().startswith("bytes=") and "," in header:
            raise range_not_satisfiable("only a single byte range is served")
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise range_not_satisfiable(f"empty suffix range; the artifact has {total} bytes")
        return ByteRange(max(0, total - suffix), total - 1)
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if start >= total or (last and int(last) < start):
        raise range_not_satisfiable(f"range {header} is outside the artifact's {total} bytes")
    return ByteRange(start, end)


def chunk_spans(byte_range: ByteRange, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk index, start, stop) slices of the stored chunks that make up `byte_range`."""
    spans: list[tuple[int, int, int]] = []
    position = byte_range.start
    while position <= byte_range.end:
        index = position // chunk_size
        start = position - index * chunk_size
        stop = min(chunk_size, byte_range.end + 1 - index * chunk_size)
        spans.append((index, start, stop))
        position = index * chunk_size + stop
    return spans
