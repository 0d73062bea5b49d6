"""The device agent assembled from its settings: the handlers (configuration, software with the
installer the settings name, the agent's own info), the outbox and the sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from services.contracts.topics import DeviceChannels, valid_id
from services.contracts.wire import WireEncoding
from services.device_agent.agent import DeviceAgent
from services.device_agent.handlers import AgentInfoHandler, ConfigMapWriter, ConfigurationHandler, Handler
from services.device_agent.link import AgentSidecar
from services.device_agent.outbox import Outbox
from services.device_agent.settings import AgentSettings

if TYPE_CHECKING:  # loaded by `software_handler`: TUF and its crypto only on a device that updates software
    from services.device_agent.software import SoftwareHandler

AGENT_VERSION = "0.1.0"


def software_handler(settings: AgentSettings, data_dir: Path) -> SoftwareHandler:
    """The software handler with the installer the settings name (`file`, `command`, `k3s`)."""
    if not settings.software_firmware_url or not settings.software_trusted_root:
        raise ValueError("software updates need TWINFLEET_SOFTWARE_FIRMWARE_URL and TWINFLEET_SOFTWARE_TRUSTED_ROOT")
    from services.device_agent.software import (
        CommandHealth,
        CommandInstaller,
        DeploymentInstaller,
        FileSwapInstaller,
        Firmware,
        Installer,
        SoftwareHandler,
    )
    from services.device_agent.trust import TrustedReleases

    health = CommandHealth(settings.software_health_command)
    installer: Installer
    if settings.software_installer == "file":
        installer = FileSwapInstaller(Path(settings.software_target), health)
    elif settings.software_installer == "command":
        installer = CommandInstaller(
            settings.software_install_command,
            settings.software_commit_command,
            settings.software_rollback_command,
            health,
        )
    elif settings.software_installer == "k3s":
        installer = DeploymentInstaller(
            settings.agent_namespace, settings.software_deployment, settings.software_container
        )
    else:
        raise ValueError(f"TWINFLEET_SOFTWARE_INSTALLER {settings.software_installer!r}: file, command or k3s")
    return SoftwareHandler(
        Firmware(settings.software_firmware_url, settings.device_id, settings.device_password),
        TrustedReleases(
            settings.software_metadata_url or f"{settings.software_firmware_url.rstrip('/')}/v1/metadata/",
            Path(settings.software_trusted_root).read_bytes(),
            data_dir / "software" / "tuf",
        ),
        installer,
        data_dir / "software",
        settings.software_version,
        require_consent=settings.software_require_consent,
        auto_consent_seconds=settings.software_auto_consent_seconds,
    )


def build_agent(settings: AgentSettings) -> DeviceAgent:
    if not valid_id(settings.device_id):
        raise ValueError(f"TWINFLEET_DEVICE_ID {settings.device_id!r} is not a valid device id")
    data_dir = Path(settings.agent_data_dir)
    sidecar = AgentSidecar(
        settings.dapr_http_port,
        WireEncoding(settings.wire_encoding),
        settings.agent_publish_timeout,
        settings.sidecar_headers(),
    )
    configmap = (
        ConfigMapWriter(settings.agent_configmap, settings.agent_namespace) if settings.agent_configmap else None
    )
    config_file = Path(settings.agent_config_file) if settings.agent_config_file else data_dir / "config.json"
    handlers: list[Handler] = [
        ConfigurationHandler(settings.agent_config_key, config_file, configmap, settings.agent_apply_delay)
    ]
    software = software_handler(settings, data_dir) if settings.software_installer else None
    if software is not None:
        handlers.append(software)
    info = {"version": AGENT_VERSION, "wire": settings.wire_encoding, "handles": [h.key for h in handlers]}
    handlers.append(AgentInfoHandler("agent", info))
    outbox = Outbox(
        sidecar,
        DeviceChannels(settings.device_id).events,
        settings.agent_outbox_max,
        settings.agent_event_batch,
        settings.agent_ack_timeout,
    )
    agent = DeviceAgent(
        settings.device_id,
        settings.topics(),
        sidecar,
        handlers,
        outbox,
        probe_interval=settings.agent_probe_interval,
        request_timeout=settings.agent_request_timeout,
        resync_interval=settings.agent_resync_interval,
        heartbeat_interval=settings.agent_heartbeat_interval,
    )
    if software is not None:
        software.wake = agent.request_reconcile
    return agent
