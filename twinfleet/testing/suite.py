"""The whole Twinfleet suite in containers (testcontainers), for integration tests of what is built
on it: Redis, Mosquitto and each cloud app with its daprd sidecar container sharing the app's
network namespace, and the ingress (one address for every app's REST API, as in a cluster), on a
private Docker network, from the images `make images` builds.

Wired as the local process stack (`services.devtools.stack`) wires it: each app's own token from
its sidecar and the sidecars' API token, an issuer of the suite's own whose JWKS the apps read and
whose admin token a test sends (`headers`), the release chain's first root published to the
firmware app, the online TUF keys and the device broker's URL in the secret store. Artifact bytes
are chunk objects in the firmware sidecar's volume (the binding store, downloads served by the
firmware app): an object store would be one more image to build from source where no image
registry is reachable, and the object-store paths are covered by the process stack's tests.

Cleanup without Ryuk (its image cannot be pulled where no registry is reachable): every container
and network of a suite carries the suite's id and its owner (host and process id). `stop()` removes
them, and runs on leaving the `with` block whatever happened inside it, on a failed start, and at
interpreter exit for a suite never stopped; a process that died without any of those (SIGKILL)
leaves them behind, and the next suite started on the host removes what dead owners left.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self

import docker
from docker.models.containers import Container
from docker.types import Mount
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.transferable import Transferable

from services.devtools.agent import agent_broker
from services.devtools.broker import SERVICE_USER, acl_text, config_text, new_secret, password_file
from services.devtools.components import fill
from services.devtools.identity import LocalIssuer
from services.devtools.images.tags import APP_IMAGE, DAPRD_IMAGE, DEVICE_DAPRD_IMAGE, MOSQUITTO_IMAGE, REDIS_IMAGE
from services.devtools.processes import free_port
from services.devtools.release_team import ReleaseTeam
from services.devtools.stack import GATEWAY, AppPorts, daprd_flags, publish_first_root
from services.domain.software import repository as tuf_rules
from services.domain.software.grants import device_password
from services.platform.names import (
    COMMANDS_APP,
    DELTA_APP,
    DEVICE_AGENT_APP,
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

if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
    testcontainers_config.ryuk_disabled = True  # the suite removes its own containers (see above)

CLOUD_APPS = (TWIN_STORE_APP, DELTA_APP, EVENTS_APP, COMMANDS_APP, ROLLOUT_APP, FIRMWARE_APP)
IN_POD = AppPorts(app=8000, http=3500, grpc=50001, metrics=9090)
"""The ports inside each app's network namespace (shared by the app and its sidecar)."""
DAPR_DIR = PurePosixPath("/dapr")
"""The sidecar's components, configuration and local files (a volume)."""
APP_VOLUME = PurePosixPath("/var/lib/twinfleet")
"""Each app container's files (a volume): the issuer's JWKS, the agent's data and trusted root."""
AGENT_DATA = APP_VOLUME / "agent"
"""The agent's data directory: in the volume, made the agent's own (a volume's root is root's)."""
JWKS = APP_VOLUME / "identity" / "jwks.json"
TRUSTED_ROOT = APP_VOLUME / "root.json"
"""The release chain's first root, as a device agent is provisioned with it."""
MQTT_PORT = 1883
SUITE_LABEL = "org.twinfleet.suite"
OWNER_LABEL = "org.twinfleet.owner"
KEPT = "kept"
"""The owner of a suite left running on purpose (`make up-containers`): never swept."""
DAPRD_UID, APP_UID, MOSQUITTO_UID = 65532, 10001, 10003


@dataclass(frozen=True)
class Images:
    """The images a suite runs: `make images`'s tags, or what TWINFLEET_{APP,DAPRD,DAPRD_DEVICE,REDIS,
    MOSQUITTO}_IMAGE name (another registry's names, or image IDs). Device agents' sidecars run the
    device build of daprd."""

    app: str = field(default_factory=lambda: os.environ.get("TWINFLEET_APP_IMAGE", APP_IMAGE))
    daprd: str = field(default_factory=lambda: os.environ.get("TWINFLEET_DAPRD_IMAGE", DAPRD_IMAGE))
    device_daprd: str = field(
        default_factory=lambda: os.environ.get("TWINFLEET_DAPRD_DEVICE_IMAGE", DEVICE_DAPRD_IMAGE)
    )
    redis: str = field(default_factory=lambda: os.environ.get("TWINFLEET_REDIS_IMAGE", REDIS_IMAGE))
    mosquitto: str = field(default_factory=lambda: os.environ.get("TWINFLEET_MOSQUITTO_IMAGE", MOSQUITTO_IMAGE))


@dataclass(frozen=True)
class DeviceCredentials:
    """What a device connects to the suite's broker with (its id is its user name)."""

    device_id: str
    password: str
    host: str
    port: int


def tar_archive(files: Mapping[str, bytes | None], uid: int, mode: int = 0o600) -> bytes:
    """A tar of `files` (relative path -> content; None: a directory) owned by `uid`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(content), mode
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def dapr_files(kind: str, params: dict[str, str]) -> dict[str, bytes | None]:
    """The rendered Dapr files this package carries (`kind`: cloud or agent), placeholders filled,
    laid out as daprd reads them (`resources/`, `configuration.yaml`)."""
    files: dict[str, bytes | None] = {"resources": None}
    for entry in (resources.files("twinfleet.testing") / "dapr" / kind).iterdir():
        if entry.name.endswith(".yaml"):
            text = fill(entry.read_text(), params)
            files[entry.name if entry.name == "configuration.yaml" else f"resources/{entry.name}"] = text.encode()
    return files


class _Container(DockerContainer):
    """testcontainers' container, whose files go into a volume before it starts: testcontainers
    unpacks them at `/`, which a read-only root filesystem refuses."""

    def with_archive(self, directory: PurePosixPath, archive: bytes) -> Self:
        return self.with_copy_into_container(archive, str(directory))

    def _transfer_into_container(self, transferable: Transferable, destination_in_container: str, mode: int) -> None:
        assert isinstance(transferable, bytes)
        if not self.get_wrapped_container().put_archive(destination_in_container, transferable):
            raise OSError(f"could not copy files into {destination_in_container}")

    @property
    def docker(self) -> Container:
        return self.get_wrapped_container()


@dataclass
class _Pod:
    """An app container and its sidecar container, which lives in the app's network namespace."""

    name: str
    app: _Container
    sidecar: _Container | None
    sidecar_files: bytes
    sidecar_env: dict[str, str]
    app_port: int
    dapr_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"


class TwinfleetSuite:
    """The suite in containers: `with TwinfleetSuite() as suite:` starts it and waits until every
    app is ready (its `/readyz` and its sidecar's health), and removes it at the end.

    `app_env` sets app settings (`TWINFLEET_*`) for every cloud app; `firmware_public_url` is the
    firmware app's address in the download URLs devices are given (default: as containers on the
    suite's network reach it); `images` which images (default: `Images()`). Ports are published on
    the loopback interface only. A caller of the APIs sends `headers` (the suite's admin token).
    """

    def __init__(
        self,
        *,
        app_env: Mapping[str, str] | None = None,
        topic_profile: str = "default",
        firmware_public_url: str = f"http://{FIRMWARE_APP}:{IN_POD.app}",
        ready_timeout: float = 180.0,
        keep: bool = False,
        images: Images | None = None,
    ) -> None:
        self.suite_id = uuid.uuid4().hex[:12]
        self.images = images or Images()
        self.topic_profile = topic_profile
        self.app_env = dict(app_env or {})
        self.firmware_public_url = firmware_public_url
        self.ready_timeout = ready_timeout
        self.host = "127.0.0.1"
        owner = KEPT if keep else f"{socket.gethostname()}:{os.getpid()}"
        self.labels = {SUITE_LABEL: self.suite_id, OWNER_LABEL: owner}
        self.secrets = {"service": new_secret(), "fleet": new_secret()}
        self.download_key = new_secret()
        self.dapr_token = new_secret()
        """The sidecars' API token (one per suite, as one Kubernetes secret serves a namespace)."""
        self.app_tokens = {app: new_secret() for app in CLOUD_APPS}
        """What each app's sidecar sends it (`APP_API_TOKEN`)."""
        self.online_seeds = {role: os.urandom(32).hex() for role in tuf_rules.ONLINE_ROLES}
        self.directory = Path(tempfile.mkdtemp(prefix=f"twinfleet-{self.suite_id}-"))
        """The suite's key material on this side: the issuer's key, the release team's offline keys."""
        self.identity = LocalIssuer(self.directory / "identity")
        self.admin_token = self.identity.token("suite-admin", ["admin"])
        self.release_team = ReleaseTeam(self.directory / "release")
        """The release chain's offline keys (root, targets): what a release manager signs with."""
        self.mqtt_port = 0
        self.start_seconds = 0.0
        """How long `start` took, until every app was ready."""
        self._passwords: dict[str, str] = {SERVICE_USER: self.secrets["service"]}
        self._network: Network | None = None
        self._redis: _Container | None = None
        self._broker: _Container | None = None
        self._gateway: _Container | None = None
        self._gateway_port = 0
        self._pods: dict[str, _Pod] = {}
        self._client = docker.from_env()

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start everything and wait until it is ready; on any failure remove what started."""
        started = time.monotonic()
        missing = [image for image in astuple(self.images) if not self._has(image)]
        if missing:
            raise RuntimeError(
                f"images not built: {', '.join(missing)} (run `make images` in the twinfleet repository)"
            )
        sweep_abandoned(self._client)
        if self.labels[OWNER_LABEL] != KEPT:
            atexit.register(self.stop)
        try:
            self.release_team.create({r: tuf_rules.seed_signer(s).public_key for r, s in self.online_seeds.items()})
            self._network = Network(docker_network_kw={"labels": self.labels}).create()
            self._start_backing_services()
            for app in CLOUD_APPS:
                self._pods[app] = self._start_pod(app, self._app_env(app), volume=self._identity_files())
            self._start_gateway()
            self._wait_ready(list(self._pods.values()))
            publish_first_root(self.app_url(FIRMWARE_APP), self.headers, self.trusted_root.read_bytes())
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Remove every container and the network of this suite (also those a failed start left),
        and the key material it kept on this side."""
        atexit.unregister(self.stop)
        remove_suite(self.suite_id, self._client)
        self._pods.clear()
        if self.labels[OWNER_LABEL] != KEPT:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _has(self, image: str) -> bool:
        try:
            self._client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    # -- addresses -----------------------------------------------------------------------------
    @property
    def urls(self) -> dict[str, str]:
        """App id -> its REST API's base URL (through its own sidecar), as the test process reaches it."""
        return {name: self.app_url(name) for name in self._pods if name in CLOUD_APPS}

    def app_url(self, app: str) -> str:
        """One app's API through its own sidecar (Dapr service invocation of its own app id); a
        device agent's own port (its API answers its own device)."""
        pod = self._pods[app]
        if app not in CLOUD_APPS:
            return pod.url
        return f"http://{self.host}:{pod.dapr_port}/v1.0/invoke/{app}/method"

    def direct_url(self, app: str) -> str:
        """One app's own port, past its sidecar: only device routes and probes answer there."""
        return self._pods[app].url

    @property
    def api_url(self) -> str:
        """Every app's REST API, through the suite's ingress."""
        return f"http://{self.host}:{self._gateway_port}"

    @property
    def headers(self) -> dict[str, str]:
        """What a caller of the suite's APIs sends: the admin token (and the sidecars' API token,
        for calls straight to a sidecar)."""
        return {"Authorization": f"Bearer {self.admin_token}", "dapr-api-token": self.dapr_token}

    @property
    def mqtt_host(self) -> str:
        return self.host

    @property
    def trusted_root(self) -> Path:
        """The release chain's first root (on this side): what devices are provisioned with."""
        return self.release_team.root_path

    # -- devices -------------------------------------------------------------------------------
    def provision_devices(self, device_ids: Iterable[str]) -> dict[str, str]:
        """Give each device broker credentials (its id and a password derived from the fleet
        secret, as `twin devices create` does); returns id -> password."""
        created = {d: self.device_password(d) for d in device_ids}
        self._passwords.update(created)
        assert self._broker is not None
        self._broker.docker.put_archive(
            "/mosquitto/config",
            tar_archive({"passwd": password_file({}, self._passwords.items()).encode()}, MOSQUITTO_UID),
        )
        self._broker.docker.kill(signal="SIGHUP")  # mosquitto reloads its password file
        return created

    def provision_device(self, device_id: str) -> DeviceCredentials:
        password = self.provision_devices([device_id])[device_id]
        return DeviceCredentials(device_id, password, self.mqtt_host, self.mqtt_port)

    def device_password(self, device_id: str) -> str:
        return device_password(self.secrets["fleet"], device_id)

    # -- operating it --------------------------------------------------------------------------
    def restart(self, app: str, *, kill: bool = False) -> None:
        """Restart an app's container (SIGKILL first when `kill`) with a new sidecar in its new
        network namespace, as a pod whose container died; returns once both are ready again. Its
        address stays the same."""
        pod = self._pods[app]
        if kill:
            pod.app.docker.kill()
        else:
            pod.app.docker.stop(timeout=10)
        if pod.sidecar is not None:
            pod.sidecar.stop()
        pod.app.docker.start()
        pod.sidecar = self._start_sidecar(app if app in CLOUD_APPS else DEVICE_AGENT_APP, pod)
        self._wait_ready([pod])

    def logs(self, name: str) -> str:
        """The app's and its sidecar's output (`redis`, `mosquitto`, `ingress` for those)."""
        if name in ("redis", "mosquitto", INGRESS_APP):
            container = {"redis": self._redis, "mosquitto": self._broker, INGRESS_APP: self._gateway}[name]
            return container.docker.logs().decode(errors="replace") if container else ""
        pod = self._pods[name]
        parts = [pod.app.docker.logs().decode(errors="replace")]
        if pod.sidecar is not None:
            parts.append(pod.sidecar.docker.logs().decode(errors="replace"))
        return "\n".join(parts)

    def start_agent(
        self, device_id: str, env: Mapping[str, str] | None = None, files: Mapping[str, bytes] | None = None
    ) -> DeviceAgentContainer:
        """A device agent in its own containers (the agent and its sidecar) on the suite's network:
        provisioned with its own credentials and the release chain's first root, a SQLite store in
        the sidecar's volume, its data directory `/var/lib/twinfleet/agent` holding `files`
        (relative path -> bytes). Software updates are on (the firmware app's device routes, the
        suite's root) when `env` names an installer."""
        password = self.provision_devices([device_id])[device_id]
        tokens = {"APP_API_TOKEN": new_secret(), "DAPR_API_TOKEN": new_secret()}
        agent_env = {
            **tokens,
            "TWINFLEET_DEVICE_ID": device_id,
            "TWINFLEET_DEVICE_PASSWORD": password,
            "TWINFLEET_AGENT_DATA_DIR": str(AGENT_DATA),
            "TWINFLEET_TOPIC_PROFILE": self.topic_profile,
            "TWINFLEET_SOFTWARE_FIRMWARE_URL": f"http://{FIRMWARE_APP}:{IN_POD.app}",
            "TWINFLEET_SOFTWARE_TRUSTED_ROOT": str(TRUSTED_ROOT),
            **(env or {}),
        }
        params = {
            "device_id": device_id,
            **agent_broker(device_id, password, "mosquitto", MQTT_PORT, None),
            "data_dir": str(DAPR_DIR / "data"),
        }
        data: dict[str, bytes | None] = {AGENT_DATA.name: None, TRUSTED_ROOT.name: self.trusted_root.read_bytes()}
        for path, content in (files or {}).items():
            for parent in reversed(PurePosixPath(path).parents[:-1]):
                data[f"{AGENT_DATA.name}/{parent}"] = None
            data[f"{AGENT_DATA.name}/{path}"] = content
        name = f"agent-{device_id}"
        pod = self._start_pod(
            DEVICE_AGENT_APP,
            agent_env,
            name=name,
            sidecar_files={**dapr_files("agent", params), "data": None},
            sidecar_env=tokens,
            volume=tar_archive(data, APP_UID, 0o755),
        )
        self._pods[name] = pod
        self._wait_ready([pod])
        return DeviceAgentContainer(self, name, device_id)

    # -- parts ---------------------------------------------------------------------------------
    def _container(self, image: str, name: str, **kwargs: Any) -> _Container:
        container = _Container(image).with_name(f"twinfleet-{self.suite_id}-{name}")
        container.with_kwargs(labels=self.labels, read_only=True, **kwargs)
        return container

    def _run(self, container: _Container) -> _Container:
        return container.start()

    def _start_backing_services(self) -> None:
        assert self._network is not None
        redis = self._container(self.images.redis, "redis").with_network(self._network).with_network_aliases("redis")
        self._redis = self._run(redis.with_command(["--appendonly", "yes"]))
        config = config_text(Path("/mosquitto/config"), MQTT_PORT, host="0.0.0.0", run_as_me=False, persistence=False)
        files = {
            "mosquitto.conf": config.encode(),
            "acl": acl_text().encode(),
            "passwd": password_file({}, self._passwords.items()).encode(),
        }
        self.mqtt_port = free_port()
        broker = self._container(
            self.images.mosquitto, "mosquitto", mounts=[Mount("/mosquitto/config", None, type="volume")]
        )
        broker.with_network(self._network).with_network_aliases("mosquitto")
        broker.ports[f"{MQTT_PORT}/tcp"] = (self.host, self.mqtt_port)  # type: ignore[assignment]
        self._broker = self._run(
            broker.with_archive(PurePosixPath("/mosquitto/config"), tar_archive(files, MOSQUITTO_UID))
        )

    def _start_gateway(self) -> None:
        """The ingress: each request to the app that serves its path, through that app's sidecar."""
        assert self._network is not None
        sidecars = {app: f"http://{app}:{IN_POD.http}" for app in CLOUD_APPS}
        gateway = self._container(self.images.app, INGRESS_APP).with_network(self._network)
        gateway.with_kwargs(labels=self.labels, read_only=True, entrypoint=["python3", "-m", "uvicorn"])
        gateway.with_command([GATEWAY, "--host", "0.0.0.0", "--port", str(IN_POD.app), "--no-access-log"])
        gateway.with_envs(TWINFLEET_GATEWAY_APPS=json.dumps(sidecars), DAPR_API_TOKEN=self.dapr_token)
        self._gateway_port = free_port()
        gateway.ports[f"{IN_POD.app}/tcp"] = (self.host, self._gateway_port)  # type: ignore[assignment]
        self._gateway = self._run(gateway.with_tmpfs_mount("/tmp", f"size=16m,uid={APP_UID},gid={APP_UID}"))

    def _identity_files(self) -> bytes:
        """A cloud app's volume: the issuer's JWKS."""
        jwks = self.identity.jwks_file.read_bytes()
        return tar_archive({JWKS.parent.name: None, f"{JWKS.parent.name}/{JWKS.name}": jwks}, APP_UID, 0o644)

    def _sidecar_url(self, app: str) -> str:
        """How one app calls another: through the callee's sidecar, as the process stack does."""
        return f"http://{app}:{IN_POD.http}/v1.0/invoke/{app}/method"

    def _app_env(self, app: str) -> dict[str, str]:
        """Each app's settings: its tokens and identity, where it finds the others (by name on the
        suite's network), its pod name (the twin-store's and delta's own broker session)."""
        env = {
            "TWINFLEET_TOPIC_PROFILE": self.topic_profile,
            "POD_NAME": f"{app}-0",
            "APP_API_TOKEN": self.app_tokens[app],
            "DAPR_API_TOKEN": self.dapr_token,
            **self.identity.app_env(app),
            "TWINFLEET_AUTH_JWKS_URL": f"file://{JWKS}",
        }
        if app in (ROLLOUT_APP, FIRMWARE_APP, COMMANDS_APP, EVENTS_APP):
            env["TWINFLEET_TWIN_STORE_URL"] = self._sidecar_url(TWIN_STORE_APP)
        if app == FIRMWARE_APP:
            env["TWINFLEET_ROLLOUT_URL"] = self._sidecar_url(ROLLOUT_APP)
            env["TWINFLEET_FIRMWARE_PUBLIC_URL"] = self.firmware_public_url
            env["TWINFLEET_FIRMWARE_STORE"] = "binding"
        if app == DELTA_APP:
            env["TWINFLEET_FIRMWARE_URL"] = self._sidecar_url(FIRMWARE_APP)
        return {**env, **self.app_env}

    def _cloud_dapr_files(self) -> dict[str, bytes | None]:
        params = {
            "redis_host": "redis",
            "redis_port": "6379",
            "mqtt_host": "mosquitto",
            "mqtt_port": str(MQTT_PORT),
            "broker_user": SERVICE_USER,
            "broker_password": self.secrets["service"],
            "run_dir": str(DAPR_DIR),
        }
        secrets = {
            TUF_SNAPSHOT_KEY: self.online_seeds["snapshot"],
            TUF_TIMESTAMP_KEY: self.online_seeds["timestamp"],
            DOWNLOAD_URL_KEY: self.download_key,
            FLEET_SECRET: self.secrets["fleet"],
            DEVICE_BROKER_URL_KEY: f"tcp://{SERVICE_USER}:{self.secrets['service']}@mosquitto:{MQTT_PORT}",
        }
        return {
            **dapr_files("cloud", params),
            "dapr-secrets.json": json.dumps(secrets).encode(),
            "events-sink": None,
            "artifacts": None,
        }

    def _start_pod(
        self,
        app: str,
        env: Mapping[str, str],
        *,
        name: str | None = None,
        sidecar_files: Mapping[str, bytes | None] | None = None,
        sidecar_env: Mapping[str, str] | None = None,
        volume: bytes | None = None,
    ) -> _Pod:
        """The app's container (on the suite's network, by its name; `volume`: a tar of its files
        under /var/lib/twinfleet), then its sidecar's."""
        assert self._network is not None
        name = name or app
        mounts = [Mount(str(APP_VOLUME), None, type="volume")] if volume else []
        container = self._container(self.images.app, name, mounts=mounts)
        container.with_network(self._network).with_network_aliases(name).with_command([app, "--port", str(IN_POD.app)])
        container.with_envs(**env).with_tmpfs_mount("/tmp", f"size=64m,uid={APP_UID},gid={APP_UID}")
        app_port, dapr_port = free_port(), free_port()
        container.ports[f"{IN_POD.app}/tcp"] = (self.host, app_port)  # type: ignore[assignment]
        container.ports[f"{IN_POD.http}/tcp"] = (self.host, dapr_port)  # type: ignore[assignment]
        if volume:
            container.with_archive(APP_VOLUME, volume)
        files = tar_archive(sidecar_files if sidecar_files is not None else self._cloud_dapr_files(), DAPRD_UID)
        if sidecar_env is None:
            sidecar_env = {"APP_API_TOKEN": self.app_tokens[app], "DAPR_API_TOKEN": self.dapr_token}
        pod = _Pod(name, self._run(container), None, files, dict(sidecar_env), app_port, dapr_port)
        pod.sidecar = self._start_sidecar(app, pod)
        return pod

    def _start_sidecar(self, app: str, pod: _Pod) -> _Container:
        sidecar = self._container(
            self.images.daprd if app in CLOUD_APPS else self.images.device_daprd,
            f"{pod.name}-daprd",
            network_mode=f"container:{pod.app.docker.id}",
            mounts=[Mount(str(DAPR_DIR), None, type="volume")],
        )
        sidecar.with_command(daprd_flags(app, IN_POD, DAPR_DIR)).with_envs(POD_NAME=f"{pod.name}-0", **pod.sidecar_env)
        return self._run(sidecar.with_archive(DAPR_DIR, pod.sidecar_files))

    def _wait_ready(self, pods: list[_Pod]) -> None:
        """Until each app answers `/readyz` (its sidecar and store) and each sidecar its health."""
        deadline = time.monotonic() + self.ready_timeout
        waiting = {pod.name: pod for pod in pods}
        while waiting:
            for name, pod in list(waiting.items()):
                for container in (pod.app, pod.sidecar):
                    assert container is not None
                    container.docker.reload()
                    if container.docker.status not in ("created", "running"):
                        raise RuntimeError(f"{name} stopped ({container.docker.status}):\n{self._tail(pod)}")
                ready = _answers(f"{pod.url}/readyz") and _answers(f"http://{self.host}:{pod.dapr_port}/v1.0/healthz")
                if ready:
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                details = "\n".join(f"--- {n}\n{self._tail(p)}" for n, p in waiting.items())
                raise TimeoutError(f"not ready within {self.ready_timeout:g}s: {', '.join(waiting)}\n{details}")
            if waiting:
                time.sleep(0.2)

    def _tail(self, pod: _Pod) -> str:
        lines = []
        for container in (pod.app, pod.sidecar):
            if container is not None:
                lines += container.docker.logs(tail=20).decode(errors="replace").splitlines()
        return "\n".join(lines)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


class DeviceAgentContainer:
    """A device agent the suite started (`TwinfleetSuite.start_agent`)."""

    def __init__(self, suite: TwinfleetSuite, name: str, device_id: str) -> None:
        self.suite = suite
        self.name = name
        self.device_id = device_id

    @property
    def url(self) -> str:
        """The agent's own API (`/v1/status`, `/v1/events`)."""
        return self.suite.app_url(self.name)

    def read(self, path: str) -> bytes:
        """A file of the agent's data directory (relative path)."""
        code, output = self.suite._pods[self.name].app.docker.exec_run(["cat", str(AGENT_DATA / path)])
        if code:
            raise FileNotFoundError(f"{path}: {output.decode(errors='replace').strip()}")
        return bytes(output)

    def restart(self, *, kill: bool = False) -> None:
        self.suite.restart(self.name, kill=kill)


def remove_suite(suite_id: str, client: docker.DockerClient | None = None) -> None:
    """Remove every container (with its volumes), then the network, labelled with `suite_id`."""
    client = client or docker.from_env()
    label = f"{SUITE_LABEL}={suite_id}"
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def sweep_abandoned(client: docker.DockerClient) -> int:
    """Remove containers and networks of suites whose owner process on this host is gone;
    returns how many were removed. Suites of live processes and kept suites are left alone."""
    host = socket.gethostname()

    def abandoned(labels: Mapping[str, str]) -> bool:
        owner_host, _, pid = labels.get(OWNER_LABEL, "").rpartition(":")
        if owner_host != host or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    removed = 0
    for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        if abandoned(container.labels):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
                removed += 1
    for network in client.networks.list(filters={"label": OWNER_LABEL}):
        if abandoned(network.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
                removed += 1
    return removed
