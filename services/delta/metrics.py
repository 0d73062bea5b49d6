"""Prometheus metrics of the delta app."""

from prometheus_client import Counter

PUBLISHED = Counter("delta_published_total", "Messages sent to devices", ["kind"])
