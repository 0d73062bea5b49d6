"""A device agent as local processes (the agent app and its own daprd), as it runs on a K3s node:
its own broker credentials and client id, its own SQLite store, its own data directory."""

from __future__ import annotations

import secrets
from pathlib import Path

from services.devtools import components
from services.devtools.pki import TlsIdentity
from services.devtools.processes import ManagedProcess, free_port, wait_for_http
from services.devtools.stack import AppPorts, daprd_args, device_daprd_binary, serve_args
from services.platform.names import DEVICE_AGENT_APP


def agent_broker(device_id: str, password: str, host: str, port: int, tls: TlsIdentity | None) -> dict[str, str]:
    """The agent target's broker parameters: the device's own credentials on `host:port`, or its
    client certificate on the TLS listener there."""
    if tls is None:
        return {
            "broker_url": f"tcp://{device_id}:{password}@{host}:{port}",
            "ca_cert": "",
            "client_cert": "",
            "client_key": "",
        }
    return {
        "broker_url": f"ssl://{host}:{port}",
        "ca_cert": tls.ca.read_text(),
        "client_cert": tls.cert.read_text(),
        "client_key": tls.key.read_text(),
    }


class LocalAgent:
    """Start, kill and restart one device's agent; its files live under `root` across restarts.
    Its sidecar reaches the broker with the device's password, or with `tls` its client
    certificate (then `mqtt_port` is the broker's TLS listener)."""

    def __init__(
        self,
        root: Path,
        device_id: str,
        password: str,
        mqtt_port: int,
        env: dict[str, str],
        tls: TlsIdentity | None = None,
    ) -> None:
        self.root = root
        self.device_id = device_id
        self.ports = AppPorts(free_port(), free_port(), free_port(), free_port())
        self.data_dir = root / "data"
        tokens = {"APP_API_TOKEN": secrets.token_urlsafe(24), "DAPR_API_TOKEN": secrets.token_urlsafe(24)}
        """The device's own sidecar tokens: its app takes cloud messages only from that sidecar."""
        self.env = {
            **tokens,
            "TWINFLEET_DEVICE_ID": device_id,
            "TWINFLEET_AGENT_DATA_DIR": str(self.data_dir),
            "DAPR_GRPC_PORT": str(self.ports.grpc),
            "DAPR_HTTP_PORT": str(self.ports.http),
            **env,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        components.write(
            "agent-local",
            root / "dapr",
            {
                "device_id": device_id,
                **agent_broker(device_id, password, "127.0.0.1", mqtt_port, tls),
                "data_dir": str(self.data_dir),
            },
        )
        self.app = ManagedProcess(
            f"agent-{device_id}", serve_args(DEVICE_AGENT_APP, self.ports.app), root / "agent.log", env=self.env
        )
        self.daprd = ManagedProcess(
            f"agent-{device_id}-daprd",
            daprd_args(DEVICE_AGENT_APP, self.ports, root / "dapr", device_daprd_binary()),
            root / "daprd.log",
            env=tokens,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.app}"

    @property
    def config_file(self) -> Path:
        return Path(self.env.get("TWINFLEET_AGENT_CONFIG_FILE") or self.data_dir / "config.json")

    def start(self, timeout: float = 60) -> None:
        self.app.start()
        wait_for_http(f"{self.url}/healthz", timeout, self.app.process)
        self.daprd.start()
        try:
            wait_for_http(f"http://127.0.0.1:{self.ports.http}/v1.0/healthz", timeout, self.daprd.process)
        except (TimeoutError, RuntimeError) as error:
            raise RuntimeError(f"agent sidecar not ready: {error}\n{self.daprd.log_tail()}") from error

    def stop(self) -> None:
        self.daprd.stop()
        self.app.stop()

    def kill(self) -> None:
        """SIGKILL both processes (a power cut, as far as the agent is concerned)."""
        self.app.kill()
        self.daprd.kill()
