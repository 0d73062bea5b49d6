"""Prometheus metrics of the twin-store."""

from prometheus_client import Counter, Histogram

COMMANDS = Counter("twinstore_commands_total", "Commands applied", ["command", "result"])
BATCH_SIZE = Histogram("twinstore_batch_size", "Commands per write batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
CONFLICT_RETRIES = Counter("twinstore_conflict_retries_total", "Batches re-applied after an ETag race")
