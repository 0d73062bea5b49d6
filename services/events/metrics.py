"""Prometheus metrics of the events app."""

from prometheus_client import Counter

BATCHES = Counter(
    "events_batches_total", "Device event batches by outcome (accepted, duplicate, waiting, dropped)", ["outcome"]
)
EVENTS_ACCEPTED = Counter("events_accepted_total", "Device events taken (each once) and handed to the sinks")
EVENTS_LOST = Counter(
    "events_lost_total", "Events that will never arrive: dropped by a full device outbox, or given up on", ["reason"]
)
CURSOR_CONFLICTS = Counter("events_cursor_conflicts_total", "Cursor writes that lost an ETag race (batch retried)")

for _outcome in ("accepted", "duplicate", "waiting", "dropped"):
    BATCHES.labels(_outcome)
for _reason in ("device_overflow", "gap_timeout"):
    EVENTS_LOST.labels(_reason)
