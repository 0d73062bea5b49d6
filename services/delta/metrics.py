"""Prometheus metrics of the delta app."""

from prometheus_client import Counter, Histogram

PUBLISHED = Counter("delta_published_total", "Messages sent to devices", ["kind"])
FANOUT_LAG = Histogram(
    "delta_fanout_lag_seconds",
    "A twin change's timestamp (whole seconds) to its delta published to the device",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300),
)
