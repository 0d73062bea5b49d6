"""Per-twin token bucket (hand-written: ten lines, pure, so the shell keeps the state)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBucket:
    tokens: float
    updated: float


def take_token(bucket: TokenBucket | None, now: float, rate: float, burst: int) -> tuple[bool, TokenBucket]:
    """Refill at `rate`/s up to `burst`, then take one token; returns (allowed, new bucket)."""
    if bucket is None:
        bucket = TokenBucket(float(burst), now)
    tokens = min(float(burst), bucket.tokens + max(0.0, now - bucket.updated) * rate)
    if tokens >= 1.0:
        return True, TokenBucket(tokens - 1.0, now)
    return False, TokenBucket(tokens, now)
