"""Retrying failed twins: which failures may be retried, when the next attempt is due, and whether
an operator's request covers a twin.

A twin's attempts are on its mark (`attempt`, 1 for the first; `retryAt` once a retry is scheduled),
so a restart neither forgets a scheduled retry nor makes one twice. A retry is two writes: the mark
records when it is due (the failure is seen), then, once due, the next attempt is written — a new
`retry` in the desired software reference, which makes the device try again.
"""

from __future__ import annotations

from services.contracts.rollout import RetryPolicy, RetryRequest
from services.domain.errors import bad_request
from services.domain.software.twin_key import FailureKind

TIMEOUT = "timeout"
"""No success within the per-device timeout."""
REFUSED = "refused"
"""The twin-store refused the write (e.g. too large): the same write would be refused again."""
FAILED = "failed"
"""A non-software key reported FAILED or UNSUPPORTED: there is no way to ask the device again
(it re-applies at its next reconcile)."""
CONDITION = "condition"
"""The configuration's failure condition holds."""

RETRIABLE = frozenset(
    {
        FailureKind.DOWNLOAD.value,
        FailureKind.METADATA.value,
        FailureKind.EXPIRED.value,
        FailureKind.INTEGRITY.value,
        FailureKind.INSTALL.value,
        FailureKind.HEALTH.value,
        FailureKind.CONSENT.value,
        TIMEOUT,
    }
)
NEVER = {
    FailureKind.SIGNATURE.value: "a refused signature is never retried: sign the release with a trusted key",
    FailureKind.VERSION.value: "a device refuses an older version every time",
    REFUSED: "the twin-store would refuse the same write again",
    FAILED: "a non-software key has no way to ask the device again (it re-applies at its reconcile)",
    CONDITION: "the failure condition would hold again",
}


def check_retry_policy(policy: RetryPolicy) -> None:
    """Raises a 400 for failure kinds that are never retried or do not exist."""
    for kind in policy.on:
        if kind in NEVER:
            raise bad_request(f"rollout.retry.on: {kind!r} cannot be retried: {NEVER[kind]}")
        if kind not in RETRIABLE:
            raise bad_request(f"rollout.retry.on: {kind!r} is not a failure kind; use {', '.join(sorted(RETRIABLE))}")


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait before attempt `attempt + 1` after attempt `attempt` failed."""
    return float(min(policy.max_backoff_seconds, policy.backoff_seconds * policy.factor ** (attempt - 1)))


def retries_left(policy: RetryPolicy | None, failure: str, attempt: int) -> bool:
    """Whether the policy retries a twin whose attempt `attempt` failed with `failure`."""
    return policy is not None and failure in policy.on and attempt <= policy.attempts


def requested(request: RetryRequest | None, served: int, attempt_started: int) -> bool:
    """Whether an operator's `request` asks to retry a failed twin: it has not served it yet, and
    the twin's failed attempt had started when it was made."""
    return request is not None and served < request.serial and attempt_started <= request.at
