"""The console's Prometheus metrics."""

from prometheus_client import Counter, Gauge

INDEXED = Gauge("console_fleet_twins", "Live twins in the console's fleet index")
CHANGES = Counter("console_twin_changes_total", "twin.changed events taken", ["outcome"])
"""`applied` (newer than the index held), `ignored` (a redelivery or a stale version)."""
LIVE = Gauge("console_live_subscribers", "Browsers following the live stream")
LIVE_DROPPED = Counter("console_live_overflows_total", "Live subscribers that fell behind and were told to reload")
FORWARDED = Counter("console_forwarded_total", "Calls forwarded to an app", ["app", "status"])
REBUILD_SECONDS = Gauge("console_index_rebuild_seconds", "How long the last rebuild of the fleet index took")
DEVICES = Gauge(
    "console_fleet_devices", "Live twins by connection state, wire encoding and software version", ["facet", "value"]
)
"""`facet` is connection (connected/disconnected/unknown: the connected devices), encoding or software."""
