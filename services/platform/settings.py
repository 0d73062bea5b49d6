"""One settings loader for every app (environment variables, prefix `TWINFLEET_`)."""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contracts.topics import TopicProfile, profile
from services.domain.twin.limits import Limits

_LIMITS = Limits()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWINFLEET_", extra="ignore")

    topic_profile: str = "default"
    dapr_grpc_port: int = Field(default=50001, validation_alias="DAPR_GRPC_PORT")
    """This app's sidecar ports: the standard Dapr variables, set by the injector on Kubernetes."""
    dapr_http_port: int = Field(default=3500, validation_alias="DAPR_HTTP_PORT")
    # Request limits: defaults are the domain's (`Limits`), overridable per deployment.
    max_state_bytes: int = _LIMITS.max_state_bytes
    max_payload_bytes: int = _LIMITS.max_payload_bytes
    max_depth: int = _LIMITS.max_depth
    max_client_token_bytes: int = _LIMITS.max_client_token_bytes
    max_key_bytes: int = _LIMITS.max_key_bytes
    rate_per_second: float = _LIMITS.rate_per_second
    rate_burst: int = _LIMITS.rate_burst
    batch_max: int = 256
    """Most requests the twin-store applies in one state round trip."""
    batch_wait_ms: float = 2.0
    """How long the twin-store waits to fill a batch once the first request arrived."""
    publish_concurrency: int = 256
    """Most device-broker publishes in flight at once (paces fan-out)."""

    firmware_public_url: str = ""
    """The firmware service's address as devices reach it. Set: every delta carrying a software
    reference gets a freshly minted download URL (late binding). Empty: devices obtain a temporary
    credential instead."""
    download_url_ttl: int = 24 * 3600
    """Seconds a late-bound download URL stays valid after the delta was sent."""

    def limits(self) -> Limits:
        return Limits(**{f.name: getattr(self, f.name) for f in fields(Limits)})

    def topics(self) -> TopicProfile:
        return profile(self.topic_profile)

    def sidecar_args(self) -> tuple[str, int]:
        return f"127.0.0.1:{self.dapr_grpc_port}", self.dapr_http_port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


class AgentSettings(Settings):
    """The device agent's settings (same loader, same prefix; the K3s chart sets them)."""

    device_id: str = ""
    wire_encoding: str = "json"
    """How this device encodes its messages: `json` or `cbor`."""
    agent_data_dir: str = "/var/lib/twinfleet"
    agent_config_file: str = ""
    """Where the configuration handler writes the desired settings (default: in the data dir)."""
    agent_config_key: str = "config"
    """The top-level twin key the configuration handler owns."""
    agent_configmap: str = ""
    """On K3s, the ConfigMap the configuration handler also writes ("" = none)."""
    agent_namespace: str = ""
    agent_outbox_max: int = 10_000
    """Most events kept while offline; when full the oldest is dropped and counted."""
    agent_event_batch: int = 200
    """Most events per published batch."""
    agent_ack_timeout: float = 10.0
    """Seconds to wait for the cloud to acknowledge a batch of events before sending it again."""
    agent_probe_interval: float = 5.0
    """Seconds between connectivity probes while the cloud is unreachable."""
    agent_publish_timeout: float = 3.0
    """Seconds a publish may take before the agent counts the cloud as unreachable."""
    agent_request_timeout: float = 10.0
    """Seconds to wait for the twin-store's answer to a get/update."""
    agent_heartbeat_interval: float = 30.0
    """Seconds between probes while online (notices outages the sidecar reconnects through)."""
    agent_resync_interval: float = 600.0
    """Seconds between full reconciles while online (a safety net; deltas normally suffice)."""
    agent_apply_delay: float = 0.0
    """Seconds an apply takes on purpose (simulates slow actuators in demos and fault tests)."""
    device_password: str = ""
    """The device's own credentials (as for the broker): asks the firmware service for download
    credentials. From a Kubernetes Secret on K3s."""
    software_installer: str = ""
    """How the `software` key is installed: `file` (swap one file), `command` (swupdate, RAUC,
    mender-update, ...), `k3s` (patch a Deployment's image); empty: no software handler."""
    software_firmware_url: str = ""
    """The firmware service's address (metadata, credentials, downloads)."""
    software_trusted_keys: str = ""
    """Comma-separated ed25519 public keys (hex) whose signatures on release metadata are trusted."""
    software_version: str = ""
    """The version installed at the factory (reported until the first update)."""
    software_target: str = ""
    """`file`: the file the release replaces."""
    software_install_command: str = ""
    """`command`: e.g. `rauc install {file}` ({file}: the verified download, {version})."""
    software_commit_command: str = ""
    software_rollback_command: str = ""
    software_health_command: str = ""
    """Exit 0 = healthy after installing (`file`, `command`); empty: healthy once installed."""
    software_deployment: str = ""
    """`k3s`: the Deployment (in `agent_namespace`) whose container image a release sets."""
    software_container: str = ""


@lru_cache(maxsize=1)
def get_agent_settings() -> AgentSettings:
    return AgentSettings()
