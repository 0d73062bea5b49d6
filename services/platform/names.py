"""Dapr component and app names: one definition for apps, component YAML and tests."""

STATE_STORE = "twin-state"
"""Twin documents (state.redis locally; Redis/PostgreSQL/Cosmos DB in clouds)."""
INTERNAL_PUBSUB = "twin-events"
"""Internal events between cloud apps (pubsub.redis Streams locally)."""
DEVICE_BROKER = "device-broker"
"""The MQTT broker devices connect to (pubsub.mqtt3)."""

TWIN_STORE_APP = "twin-store"
DELTA_APP = "delta"
SHARED_SUBSCRIPTION_GROUP = "twin-store"
