"""The device agent's settings (the shared loader and prefix `TWINFLEET_`; the K3s chart sets them)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import Settings


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
    software_trusted_root: str = ""
    """The TUF root metadata file this device was provisioned with: its trust anchor (rotations
    are followed from it; the roots it has verified since are kept in the data directory)."""
    software_metadata_url: str = ""
    """Where TUF metadata is fetched (default: `{software_firmware_url}/v1/metadata/`)."""
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
    software_require_consent: bool = False
    """The install of a downloaded update waits for `POST /v1/software/consent` on the device."""
    software_auto_consent_seconds: float = 0.0
    """Consent is assumed this long after an update began waiting for it (0: never; a rollout's
    `autoConsentAt` deadline applies as well, the earlier wins)."""
    software_deployment: str = ""
    """`k3s`: the Deployment (in `agent_namespace`) whose container image a release sets."""
    software_container: str = ""


@lru_cache(maxsize=1)
def get_agent_settings() -> AgentSettings:
    return AgentSettings()
