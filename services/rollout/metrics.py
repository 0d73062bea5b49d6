"""Prometheus metrics of the rollout app."""

from prometheus_client import Counter

EVALUATIONS = Counter("rollout_evaluations_total", "Configurations evaluated against a twin")
WRITES = Counter("rollout_twin_writes_total", "Twin writes by the twin-store's answer", ["outcome"])
