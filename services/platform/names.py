"""Dapr component and app names: one definition for apps, component YAML and tests."""

STATE_STORE = "twin-state"
"""Twin documents (state.redis locally; Redis/PostgreSQL/Cosmos DB in clouds)."""
AUTH_STORE = "twin-auth"
"""What every cloud app reads alike (API key records): one state component whose keys are not
prefixed by app id (`keyPrefix: name`); only the twin-store writes it."""
INTERNAL_PUBSUB = "twin-events"
"""Internal events between cloud apps (pubsub.redis Streams locally)."""
DEVICE_BROKER = "device-broker"
"""The MQTT broker devices connect to (pubsub.mqtt3), for the events and commands apps; the
twin-store and the delta app hold their own connection (`platform/device_broker.py`)."""

TWIN_STORE_APP = "twin-store"
"""Also owns API keys (`/v1/api-keys`) and keeps the audit trail (`/v1/audit`)."""
INGRESS_APP = "ingress"
"""The Dapr-enabled ingress operators reach the APIs through (the local stack's gateway)."""
DELTA_APP = "delta"
SHARED_SUBSCRIPTION_GROUP = "twin-store"
COMMANDS_APP = "commands"
"""Durable commands for devices (queue with TTL, deliver when online, keep the result)."""
EVENTS_APP = "events"
"""Device events ingest: de-duplicates and orders each device's events, feeds the sinks."""
EVENTS_SINK = "events-sink"
"""Example downstream sink of device events (a Dapr output binding; local files here)."""

DEVICE_AGENT_APP = "device-agent"
AGENT_BROKER = "cloud-broker"
"""The device agent's pubsub.mqtt3 to the cloud broker (the device's own credentials and client id)."""
AGENT_STATE = "agent-state"
"""The device agent's local state store (state.sqlite): cached twin and events outbox."""

ROLLOUT_APP = "rollout"
"""Configuration rollouts: target conditions, priorities, staged rollouts with automatic halt."""

FIRMWARE_APP = "firmware"
"""Artifact broker: streamed uploads, signed release metadata, device-bound downloads."""
ARTIFACT_STORE = "artifact-store"
"""Artifact bytes as chunk objects, for stores that cannot pre-sign (bindings.localstorage); with an
object store (Azure Blob, S3) the firmware app uses the store's SDK instead (see `firmware/stores.py`)."""
SECRET_STORE = "twin-secrets"
"""Key material: the online TUF keys, the object store's key, the download URL key, the fleet secret."""
TUF_SNAPSHOT_KEY = "tuf-snapshot-key"
"""Secret: the ed25519 seed (hex) of the online snapshot role."""
TUF_TIMESTAMP_KEY = "tuf-timestamp-key"
"""Secret: the ed25519 seed (hex) of the online timestamp role."""
ARTIFACT_STORE_KEY = "artifact-store-key"
"""Secret: the object store's key (Azure Blob account key; S3 secret access key)."""
DOWNLOAD_URL_KEY = "download-url-key"
"""Secret: the HMAC key of pre-signed download URLs and temporary download credentials."""
FLEET_SECRET = "fleet-secret"
"""Secret: what device credentials are derived from (and checked against)."""
DEVICE_BROKER_URL_KEY = "device-broker-url"
"""Secret: the device broker as the twin-store and the delta app reach it with their own MQTT
connection (`tcp://user:password@host:port`; `ssl://` or `mqtts://` for TLS)."""

CONSOLE_APP = "console"
"""The operator console: a web dashboard (static bundle) and its backend (sign-in, fleet index,
live updates from `twin.changed`), every call forwarded with the operator's own credential."""
