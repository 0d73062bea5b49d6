"""The whole suite as local processes: Redis, Mosquitto, and each cloud app with its own daprd.

Used by `make run`/`make up` and by the integration tests (each test module gets its own stack on
free loopback ports in a temporary directory).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

import httpx

from services.devtools import components
from services.devtools.broker import SERVICE_USER, BrokerAccounts, config_text, new_secret, sdk_suffix_plugin
from services.devtools.identity import Identity, LocalIssuer
from services.devtools.pki import LocalCA, TlsIdentity
from services.devtools.processes import ManagedProcess, free_port, wait_for_http, wait_for_port
from services.devtools.release_team import ReleaseTeam
from services.domain.software import repository as tuf_rules
from services.domain.software.grants import device_password
from services.platform.names import (
    ARTIFACT_STORE_KEY,
    COMMANDS_APP,
    DELTA_APP,
    DEVICE_BROKER_URL_KEY,
    DOWNLOAD_URL_KEY,
    EVENTS_APP,
    FIRMWARE_APP,
    FLEET_SECRET,
    INGRESS_APP,
    ROLLOUT_APP,
    TUF_SNAPSHOT_KEY,
    TUF_TIMESTAMP_KEY,
    TWIN_STORE_APP,
)


def daprd_binary() -> str:
    """The daprd built by `make setup` (TWINFLEET_DAPRD, else the newest in the build cache)."""
    explicit = os.environ.get("TWINFLEET_DAPRD")
    if explicit:
        return explicit
    cache = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet")) / "bin"
    found = sorted(cache.glob("daprd-[0-9]*")) if cache.exists() else []
    if not found:
        raise FileNotFoundError("daprd not built yet: run `make setup`")
    return str(found[-1])


GATEWAY = "services.devtools.gateway:app"
MAX_BODY = {FIRMWARE_APP: "2Gi"}
"""Request bodies a sidecar takes beyond daprd's 4 MiB default: artifact uploads stream through
the firmware app's."""
AZURITE_VERSION = "3.35.0"
BLOB_ACCOUNT = "twinfleet"
BLOB_CONTAINER = "artifacts"


def azurite_binary() -> str:
    """Azurite's blob service, installed by `make setup` (TWINFLEET_AZURITE, else the cache)."""
    explicit = os.environ.get("TWINFLEET_AZURITE")
    cache = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet"))
    path = (
        Path(explicit) if explicit else cache / f"azurite-{AZURITE_VERSION}" / "node_modules" / ".bin" / "azurite-blob"
    )
    if not path.exists():
        raise FileNotFoundError(f"Azurite not installed ({path}): run `make setup`")
    return str(path)


def device_daprd_binary() -> str:
    """The device's daprd (only the components the agent uses: `make setup` builds it as
    `daprd-device-*`); TWINFLEET_DEVICE_DAPRD overrides; else the cloud build."""
    explicit = os.environ.get("TWINFLEET_DEVICE_DAPRD")
    if explicit:
        return explicit
    cache = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet")) / "bin"
    found = sorted(cache.glob("daprd-device-*")) if cache.exists() else []
    return str(found[-1]) if found else daprd_binary()


def daprd_flags(app: str, ports: AppPorts, dapr_dir: PurePath) -> list[str]:
    """daprd's flags for one app, wherever it runs (a local process or a container): no
    placement/scheduler, components and configuration from `dapr_dir` (`resources/`,
    `configuration.yaml`)."""
    return [
        "--app-id",
        app,
        "--app-port",
        str(ports.app),
        "--app-protocol",
        "http",
        "--dapr-http-port",
        str(ports.http),
        "--dapr-grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
        "--resources-path",
        str(dapr_dir / "resources"),
        "--config",
        str(dapr_dir / "configuration.yaml"),
        "--placement-host-address",
        "",
        "--scheduler-host-address",
        "",
        "--log-level",
        os.environ.get("TWINFLEET_DAPRD_LOG_LEVEL", "warn"),
        "--dapr-graceful-shutdown-seconds",
        "2",
        "--max-body-size",
        MAX_BODY.get(app, "4Mi"),
    ]


def daprd_args(app: str, ports: AppPorts, dapr_dir: Path, binary: str | None = None) -> list[str]:
    """The daprd command line for one app as a local process: its API and metrics on loopback only
    (the internal gRPC port on every address: service invocation resolves the host's address)."""
    return [
        binary or daprd_binary(),
        *daprd_flags(app, ports, dapr_dir),
        "--metrics-listen-address",
        "127.0.0.1",
        "--dapr-internal-grpc-port",
        str(free_port()),
        "--dapr-listen-addresses",
        "127.0.0.1",
    ]


def gateway_args(port: int) -> list[str]:
    """The command line serving the local ingress (`services.devtools.gateway`) on a loopback port."""
    return [
        sys.executable, "-m", "uvicorn", GATEWAY, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
    ]  # fmt: skip


def serve_args(app: str, port: int) -> list[str]:
    """The command line serving one app (by its app id, as the image does) on a loopback port."""
    return [sys.executable, "-m", "services.platform.serve", app, "--host", "127.0.0.1", "--port", str(port)]


def publish_first_root(firmware_url: str, headers: dict[str, str], root: bytes) -> None:
    """Give the firmware app (its API at `firmware_url`) the release chain's first root, once (it
    is kept in the state store), as a suite's operator (`headers`)."""
    url = f"{firmware_url}/v1/metadata"
    with httpx.Client(timeout=30, headers=headers) as client:
        if client.get(f"{url}/1.root.json").status_code == 200:
            return
        answer = client.post(f"{url}/root", content=root)
    if answer.status_code != 201:
        raise RuntimeError(f"the firmware app refused the first root: {answer.status_code} {answer.text}")


def app_id(instance: str) -> str:
    """The Dapr app id of an instance name (`twin-store`, or `twin-store#1` for a replica)."""
    return instance.split("#")[0]


def instance_slug(instance: str) -> str:
    """An instance name fit for file names (`twin-store#1` -> `twin-store-1`)."""
    return instance.replace("#", "-")


def pod_name(instance: str) -> str:
    """What stands for the pod name of an instance (`twin-store-0`, `twin-store-1`): its daprd's
    consumer id and the client id of the app's own broker session."""
    return instance_slug(instance) if "#" in instance else f"{instance}-0"


def need(program: str) -> str:
    path = shutil.which(program) or (f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None)
    if path is None:
        raise FileNotFoundError(f"{program} not installed: run `make setup`")
    return path


@dataclass
class AppPorts:
    app: int
    http: int
    grpc: int
    metrics: int


class Stack:
    """Start, stop, kill and restart the suite's processes; everything by pid."""

    def __init__(
        self,
        run_dir: Path,
        topic_profile: str = "default",
        apps: Iterable[str] = (TWIN_STORE_APP, DELTA_APP, EVENTS_APP, COMMANDS_APP, ROLLOUT_APP, FIRMWARE_APP),
        app_env: dict[str, str] | None = None,
        redis_fsync: str = "everysec",
        identity: Identity | None = None,
        artifact_store: str = "azure",
        tcp_nodelay: bool = True,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.topic_profile = topic_profile
        self.app_ids = list(apps)
        self.app_env = app_env or {}
        self.redis_fsync = redis_fsync
        """Redis AOF fsync policy: `always` survives a Redis crash without losing acknowledged
        writes; `everysec` (default, faster) may lose the last second."""
        self.artifact_store = artifact_store
        """`azure`: artifacts in Azurite (downloads straight from it); `binding`: chunk objects on
        local disk through the Dapr binding (downloads through the firmware app)."""
        self.tcp_nodelay = tcp_nodelay
        """Mosquitto's `set_tcp_nodelay` (off only to measure what Nagle costs)."""
        self.redis_port = free_port()
        self.mqtt_port = free_port()
        self.mqtts_port = free_port()
        """MQTT over TLS: devices authenticate with a client certificate (CN = device id)."""
        self.blob_port = free_port()
        self.ports = {app: AppPorts(free_port(), free_port(), free_port(), free_port()) for app in self.app_ids}
        self.procs: dict[str, ManagedProcess] = {}
        self.broker_dir = self.run_dir / "mosquitto"
        self.accounts = BrokerAccounts(self.broker_dir)
        self.ca = LocalCA(self.broker_dir / "tls")
        secrets_file = self.run_dir / "secrets.json"
        if secrets_file.exists():
            self.secrets = json.loads(secrets_file.read_text())
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.secrets = {"service": new_secret(), "fleet": new_secret()}
            secrets_file.write_text(json.dumps(self.secrets))
            secrets_file.chmod(0o600)
        self.online_seeds = {
            role: self.secrets.setdefault(f"tuf-{role}", os.urandom(32).hex()) for role in tuf_rules.ONLINE_ROLES
        }
        self.download_key = self.secrets.setdefault("download", new_secret())
        self.dapr_token = self.secrets.setdefault("dapr_api_token", new_secret())
        """The sidecars' API token (one per stack, as one Kubernetes secret serves a namespace)."""
        self.identity: Identity = identity or LocalIssuer(self.run_dir / "identity")
        self.admin_token = self.identity.token("local-admin", ["admin"])
        """A token with the admin role, what `make run` prints and the CLI uses by default."""
        self.gateway_port = free_port()
        self.blob_key = self.secrets.setdefault("blob", base64.b64encode(os.urandom(64)).decode())
        self.release_team = ReleaseTeam(self.run_dir / "release")

    def app_token(self, app: str) -> str:
        """What `app`'s sidecar sends it (`APP_API_TOKEN`): one per app id."""
        token: str = self.secrets.setdefault(f"app_token:{app_id(app)}", new_secret())
        return token

    @property
    def headers(self) -> dict[str, str]:
        """What a caller of the stack's APIs sends: the admin token (and the sidecars' API token,
        for calls straight to a sidecar)."""
        return {"Authorization": f"Bearer {self.admin_token}", "dapr-api-token": self.dapr_token}

    # -- whole stack -------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything; if any part fails, stop what was started and re-raise."""
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise

    @property
    def trusted_root(self) -> Path:
        """The first root of the stack's release chain: what devices are provisioned with."""
        return self.release_team.root_path

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{BLOB_ACCOUNT}"

    def write_dapr_secrets(self) -> None:
        """The local file secret store's content: the key material the firmware and delta apps read."""
        path = self.run_dir / "dapr-secrets.json"
        secrets = {
            TUF_SNAPSHOT_KEY: self.online_seeds["snapshot"],
            TUF_TIMESTAMP_KEY: self.online_seeds["timestamp"],
            ARTIFACT_STORE_KEY: self.blob_key,
            DOWNLOAD_URL_KEY: self.download_key,
            FLEET_SECRET: self.secrets["fleet"],
            DEVICE_BROKER_URL_KEY: f"tcp://{SERVICE_USER}:{self.secrets['service']}@127.0.0.1:{self.mqtt_port}",
        }
        path.write_text(json.dumps(secrets))
        path.chmod(0o600)
        (self.run_dir / "secrets.json").write_text(json.dumps(self.secrets))

    def _start_all(self) -> None:
        self.write_dapr_secrets()
        self.release_team.create({r: tuf_rules.seed_signer(s).public_key for r, s in self.online_seeds.items()})
        self.start_redis()
        self.start_broker()
        if FIRMWARE_APP in self.app_ids and self.artifact_store == "azure":
            self.start_blob_store()
        components.write(
            "local",
            self.run_dir / "dapr",
            {
                "redis_host": "127.0.0.1",
                "redis_port": str(self.redis_port),
                "mqtt_host": "127.0.0.1",
                "mqtt_port": str(self.mqtt_port),
                "broker_user": SERVICE_USER,
                "broker_password": self.secrets["service"],
                "run_dir": str(self.run_dir),
            },
        )
        for app in self.app_ids:
            self.start_app(app)
            self.start_daprd(app)
        for app in self.app_ids:
            self.wait_app(app)
        self.start_gateway()
        if FIRMWARE_APP in self.app_ids:
            self.publish_first_root()
        self.write_state()

    def publish_first_root(self) -> None:
        publish_first_root(self.app_url(FIRMWARE_APP), self.headers, self.trusted_root.read_bytes())

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()

    mqtt_host = "127.0.0.1"
    """Where devices reach the broker (its port is `mqtt_port`)."""

    @property
    def api_url(self) -> str:
        """Every app's REST API, through the stack's ingress (the gateway)."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def write_state(self) -> None:
        token_file = self.run_dir / "token"
        token_file.write_text(self.admin_token + "\n")
        token_file.chmod(0o600)
        state = {
            "api": self.api_url,
            "apps": {name: self.api_url for name in self.ports},
            "sidecars": {name: self.app_url(name) for name in self.ports},
            "token_file": str(token_file),
            "mqtt": {"host": self.mqtt_host, "port": self.mqtt_port, "tls_port": self.mqtts_port},
            "redis_port": self.redis_port,
            "topic_profile": self.topic_profile,
            "pids": {name: proc.pid for name, proc in self.procs.items()},
            "run_dir": str(self.run_dir),
            "release_dir": str(self.release_team.directory),
        }
        (self.run_dir / "stack.json").write_text(json.dumps(state, indent=2))

    # -- Redis -------------------------------------------------------------------------------
    def start_redis(self) -> None:
        data = self.run_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        proc = ManagedProcess(
            "redis",
            [
                need("redis-server"),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.redis_fsync,
                "--protected-mode",
                "yes",
            ],
            self.run_dir / "logs" / "redis.log",
        )
        proc.start()
        wait_for_port(self.redis_port, 20, proc.process)
        self.procs["redis"] = proc

    # -- Azurite (the local Azure Blob endpoint) --------------------------------------------
    def start_blob_store(self) -> None:
        data = self.run_dir / "azurite"
        data.mkdir(parents=True, exist_ok=True)
        proc = ManagedProcess(
            "azurite",
            [
                azurite_binary(),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--location",
                str(data),
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ],
            self.run_dir / "logs" / "azurite.log",
            env={"AZURITE_ACCOUNTS": f"{BLOB_ACCOUNT}:{self.blob_key}"},
        )
        proc.start()
        wait_for_port(self.blob_port, 30, proc.process)
        self.procs["azurite"] = proc

    def _store_env(self, app: str) -> dict[str, str]:
        if app != FIRMWARE_APP or self.artifact_store != "azure":
            return {"TWINFLEET_FIRMWARE_STORE": "binding"} if app == FIRMWARE_APP else {}
        return {
            "TWINFLEET_FIRMWARE_STORE": "azure",
            "TWINFLEET_FIRMWARE_STORE_ENDPOINT": self.blob_endpoint,
            "TWINFLEET_FIRMWARE_STORE_ACCOUNT": BLOB_ACCOUNT,
            "TWINFLEET_FIRMWARE_STORE_CONTAINER": BLOB_CONTAINER,
        }

    # -- Mosquitto ---------------------------------------------------------------------------
    def start_broker(self) -> None:
        if not (self.broker_dir / "passwd").exists():
            self.accounts.initialise(self.secrets["service"])
        self.ca.create()
        config = self.broker_dir / "mosquitto.conf"
        plugin = sdk_suffix_plugin()
        config.write_text(
            config_text(
                self.broker_dir,
                self.mqtt_port,
                tls_port=self.mqtts_port,
                ca=self.ca,
                plugin=plugin,
                tcp_nodelay=self.tcp_nodelay,
            )
        )
        proc = ManagedProcess(
            "mosquitto", [need("mosquitto"), "-c", str(config)], self.run_dir / "logs" / "mosquitto.log"
        )
        proc.start()
        wait_for_port(self.mqtt_port, 20, proc.process)
        wait_for_port(self.mqtts_port, 20, proc.process)
        self.procs["mosquitto"] = proc

    def provision_devices(self, device_ids: Iterable[str]) -> dict[str, str]:
        """Give each device broker credentials (password derived from the fleet secret)."""
        creds = {d: device_password(self.secrets["fleet"], d) for d in device_ids}
        self.accounts.set_many(creds.items())
        self.procs["mosquitto"].signal(signal.SIGHUP)  # reloads password file and ACL
        return creds

    def device_password(self, device_id: str) -> str:
        return device_password(self.secrets["fleet"], device_id)

    def device_certificate(self, device_id: str) -> TlsIdentity:
        """A client certificate for the TLS listener (subject CN = device id), with the CA."""
        return self.ca.device(device_id)

    # -- apps and sidecars -------------------------------------------------------------------
    def add_replica(self, app: str) -> str:
        """Start one more instance of `app` (own ports, own sidecar, same app id); returns its name."""
        index = sum(1 for name in self.ports if app_id(name) == app)
        name = f"{app}#{index}"
        self.ports[name] = AppPorts(free_port(), free_port(), free_port(), free_port())
        self.start_app(name)
        self.start_daprd(name)
        self.wait_app(name)
        self.write_state()
        return name

    def app_url(self, name: str) -> str:
        """One instance's API through its own sidecar (Dapr service invocation of its own app id):
        what the stack's apps call each other by, and how a test reaches one replica."""
        return f"http://127.0.0.1:{self.ports[name].http}/v1.0/invoke/{app_id(name)}/method"

    def direct_url(self, name: str) -> str:
        """One instance's own port, past its sidecar: only device routes and probes answer there."""
        return f"http://127.0.0.1:{self.ports[name].app}"

    def start_gateway(self) -> None:
        sidecars = {app_id(n): f"http://127.0.0.1:{p.http}" for n, p in self.ports.items() if "#" not in n}
        proc = ManagedProcess(
            INGRESS_APP,
            gateway_args(self.gateway_port),
            self.run_dir / "logs" / "gateway.log",
            env={"TWINFLEET_GATEWAY_APPS": json.dumps(sidecars), "DAPR_API_TOKEN": self.dapr_token},
        )
        proc.start()
        wait_for_http(f"{self.api_url}/healthz", 30, proc.process)
        self.procs[INGRESS_APP] = proc

    def start_app(self, app: str) -> None:
        ports = self.ports[app]
        env = {
            "DAPR_GRPC_PORT": str(ports.grpc),
            "DAPR_HTTP_PORT": str(ports.http),
            "TWINFLEET_TOPIC_PROFILE": self.topic_profile,
            "POD_NAME": pod_name(app),
            "APP_API_TOKEN": self.app_token(app),
            "DAPR_API_TOKEN": self.dapr_token,
            **self.identity.app_env(app_id(app)),
            **self._local_addresses(app_id(app)),
            **self._store_env(app_id(app)),
            **self.app_env,
        }
        proc = ManagedProcess(
            app,
            serve_args(app_id(app), ports.app),
            self.run_dir / "logs" / f"{instance_slug(app)}.log",
            env=env,
        )
        proc.start()
        wait_for_http(f"http://127.0.0.1:{ports.app}/healthz", 30, proc.process)
        self.procs[app] = proc

    def _local_addresses(self, app: str) -> dict[str, str]:
        """Where an app finds the others of this stack: through the callee's own sidecar (its app
        id invoked there is served by its own app, past no name resolution), since daprd's mDNS
        resolution spans the machine and would mix up stacks running side by side (tests next to
        `make run`, benches)."""
        found: dict[str, str] = {}
        if app in (ROLLOUT_APP, FIRMWARE_APP, COMMANDS_APP, EVENTS_APP) and TWIN_STORE_APP in self.ports:
            found["TWINFLEET_TWIN_STORE_URL"] = self.app_url(TWIN_STORE_APP)
        if app == FIRMWARE_APP and ROLLOUT_APP in self.ports:
            found["TWINFLEET_ROLLOUT_URL"] = self.app_url(ROLLOUT_APP)
        if app == DELTA_APP and FIRMWARE_APP in self.ports:  # the firmware app mints the delta's URLs
            found["TWINFLEET_FIRMWARE_URL"] = self.app_url(FIRMWARE_APP)
        elif app == DELTA_APP:
            found["TWINFLEET_DOWNLOAD_URLS"] = "false"
        if app == FIRMWARE_APP:  # devices reach downloads directly, past no sidecar
            found["TWINFLEET_FIRMWARE_PUBLIC_URL"] = self.direct_url(FIRMWARE_APP)
        return found

    def start_daprd(self, app: str) -> None:
        ports = self.ports[app]
        proc = ManagedProcess(
            f"{app}-daprd",
            daprd_args(app_id(app), ports, self.run_dir / "dapr"),
            self.run_dir / "logs" / f"{instance_slug(app)}-daprd.log",
            env={
                "POD_NAME": pod_name(app),
                "APP_API_TOKEN": self.app_token(app),
                "DAPR_API_TOKEN": self.dapr_token,
            },
        )
        proc.start()
        self.procs[f"{app}-daprd"] = proc

    def wait_app(self, app: str, timeout: float = 60) -> None:
        proc = self.procs[f"{app}-daprd"]
        try:
            wait_for_http(f"http://127.0.0.1:{self.ports[app].http}/v1.0/healthz", timeout, proc.process)
        except (TimeoutError, RuntimeError) as error:
            raise RuntimeError(f"{app} sidecar not ready: {error}\n{proc.log_tail()}") from error

    def restart(self, name: str) -> None:
        """Start a stopped or killed process again on the same ports (and data)."""
        if name == "redis":
            self.start_redis()
        elif name == "azurite":
            self.start_blob_store()
        elif name == "mosquitto":
            self.start_broker()
        elif name == INGRESS_APP:
            self.start_gateway()
        elif name.endswith("-daprd"):
            app = name.removesuffix("-daprd")
            self.start_daprd(app)
            self.wait_app(app)
        else:
            self.start_app(name)
        self.write_state()
