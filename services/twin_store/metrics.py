"""Prometheus metrics of the twin-store."""

from prometheus_client import Counter, Histogram

COMMANDS = Counter("twinstore_commands_total", "Commands applied", ["command", "result"])
BATCH_SIZE = Histogram("twinstore_batch_size", "Commands per write batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
CONFLICT_RETRIES = Counter("twinstore_conflict_retries_total", "Batches re-applied after an ETag race")
ACCEPT_SECONDS = Histogram(
    "twinstore_accept_seconds",
    "A request from entering the writer to its reply published (the accept latency)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REJECTS = Counter("twinstore_rejects_total", "Requests refused, by code (400, 404, 409, 413, 429)", ["code"])
