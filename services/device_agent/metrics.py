"""Prometheus metrics of the device agent."""

from prometheus_client import Counter, Gauge

DELTAS = Counter("twinfleet_agent_deltas_total", "Deltas received", ["outcome"])
APPLIES = Counter("twinfleet_agent_applies_total", "Handler applies", ["key", "outcome"])
RECONNECTS = Counter("twinfleet_agent_reconnects_total", "Times the cloud became reachable")
COMMANDS = Counter("twinfleet_agent_commands_total", "Durable commands", ["outcome"])
OUTBOX = Gauge("twinfleet_agent_outbox_events", "Events waiting in the outbox")
DROPPED = Gauge("twinfleet_agent_outbox_dropped", "Events dropped because the outbox was full")
