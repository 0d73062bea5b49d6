"""Prometheus metrics of the commands app."""

from prometheus_client import Counter

QUEUED = Counter("commands_queued_total", "Commands queued for a device")
DELIVERED = Counter(
    "commands_delivered_total", "Commands published to a device's topic, by occasion (create, sync, sweep)", ["via"]
)
COMPLETED = Counter("commands_completed_total", "Commands a device answered, by status (SUCCEEDED, FAILED)", ["status"])
EXPIRED = Counter("commands_expired_total", "Commands that expired before the device answered")
CANCELLED = Counter("commands_cancelled_total", "Commands cancelled before the device answered")
RESULTS = Counter(
    "commands_results_total", "Results received, by outcome (taken, ignored, unknown, malformed)", ["outcome"]
)
SYNCS = Counter("commands_syncs_total", "Sync requests from devices (each re-publishes the device's pending commands)")
SWEPT = Counter("commands_swept_devices_total", "Devices the periodic sweep looked at")

for _via in ("create", "sync", "sweep"):
    DELIVERED.labels(_via)
for _status in ("SUCCEEDED", "FAILED"):
    COMPLETED.labels(_status)
for _outcome in ("taken", "ignored", "unknown", "malformed"):
    RESULTS.labels(_outcome)
