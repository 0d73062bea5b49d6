"""The cloud chart and the device-agent chart installed on the local cluster (the `cluster` tests).

One node plays both sides: namespace `twinfleet` is the cloud (the suite's chart, deploy/aks/twinfleet,
with Redis and Mosquitto from our images, and a small issuer pod serving the JWKS the apps trust),
namespace `device` the device (deploy/k3s/device-agent). Every image comes from `make images`,
saved from the Docker engine and imported into the node's containerd: nothing is pulled.
Volumes are hostPath PersistentVolumes in the cluster's run directory (the node has no provisioner).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.devtools.broker import SERVICE_USER, acl_text, config_text, new_secret, password_file
from services.devtools.cluster import ROOT, Cluster, cache_dir
from services.devtools.identity import APP_ROLES, LocalIssuer
from services.devtools.images.tags import APP_IMAGE, DAPRD_IMAGE, DEVICE_DAPRD_IMAGE, MOSQUITTO_IMAGE, REDIS_IMAGE
from services.devtools.release_team import ReleaseTeam
from services.domain.software import repository as tuf_rules
from services.domain.software.grants import device_password

CLOUD_CHART = ROOT / "deploy" / "aks" / "twinfleet"
AGENT_CHART = ROOT / "deploy" / "k3s" / "device-agent"
CLOUD = "twinfleet"
CLOUD_VALUE_KEYS = ("twinStore", "delta", "events", "commands", "rollout", "firmware", "console", "gateway")
"""The cloud chart's per-app value blocks."""
NODE_CPU_REQUEST = "20m"
"""CPU each app and each sidecar asks for on the one 2-core node."""
DEVICE = "device"
MQTT_PORT = 1883
MQTT_NODE_PORT = 31883
API_NODE_PORT = 30800
IMAGES = (APP_IMAGE, DAPRD_IMAGE, DEVICE_DAPRD_IMAGE, REDIS_IMAGE, MOSQUITTO_IMAGE)


def saved_images(tags: Iterable[str]) -> list[Path]:
    """Each image as the Docker engine has it, saved once per image ID into the cache."""
    directory = cache_dir() / "k8s-images"
    directory.mkdir(parents=True, exist_ok=True)
    tarballs = []
    for tag in tags:
        image_id = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True, check=False
        )
        if image_id.returncode != 0:
            raise RuntimeError(f"image {tag} not built (run `make images`): {image_id.stderr.strip()}")
        name = tag.replace("/", "_").replace(":", "-")
        out = directory / f"{name}-{image_id.stdout.strip().removeprefix('sha256:')[:12]}.tar"
        if not out.exists():
            partial = out.with_suffix(".part")
            subprocess.run(["docker", "save", "-o", str(partial), tag], check=True, capture_output=True)
            partial.rename(out)
        tarballs.append(out)
    return tarballs


def wait_for_port(host: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def manifest(*documents: Mapping[str, Any]) -> str:
    return "\n---\n".join(json.dumps(document) for document in documents)


def _secret(name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": dict(data),
    }


def _service(name: str, namespace: str, port: int, node_port: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"app": name}, "ports": [{"name": "main", "port": port, "targetPort": port}]}
    if node_port is not None:
        spec["type"] = "NodePort"
        spec["ports"][0]["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def deployment(
    name: str,
    namespace: str,
    container: Mapping[str, Any],
    *,
    volumes: list[dict[str, Any]] | None = None,
    user: int | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One replica of one container (named like the Deployment unless `container` names it), its
    image imported (never pulled); `user`: the uid and gid it runs as, and its volumes' group."""
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": name, "imagePullPolicy": "Never", **container}],
        "volumes": volumes or [],
    }
    if user is not None:
        pod["securityContext"] = {"runAsUser": user, "runAsGroup": user, "fsGroup": user, "runAsNonRoot": True}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": dict(annotations or {})}, "spec": pod},
        },
    }


@dataclass
class ClusterSuite:
    """Both charts on the cluster, with the key material this side keeps (issuer, release team)."""

    cluster: Cluster
    work: Path
    devices: list[str]
    """Device ids given broker accounts up front (the broker reads its password file at start)."""
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secrets = {"service": new_secret(), "fleet": new_secret(), "redis": new_secret()}
        self.online_seeds = {role: os.urandom(32).hex() for role in tuf_rules.ONLINE_ROLES}
        self.identity = LocalIssuer(self.work / "identity")
        self.admin_token = self.identity.token("cluster-admin", ["admin"])
        self.release_team = ReleaseTeam(self.work / "release")
        self.release_team.create({r: tuf_rules.seed_signer(s).public_key for r, s in self.online_seeds.items()})

    # -- addresses -------------------------------------------------------------------------------
    @property
    def node_ip(self) -> str:
        return self.cluster.api_url.split("//", 1)[1].rsplit(":", 1)[0]

    @property
    def api_url(self) -> str:
        """Every REST API through the chart's ingress app, on its NodePort."""
        return f"http://{self.node_ip}:{API_NODE_PORT}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    topic_profile = "default"

    @property
    def mqtt_host(self) -> str:
        """Devices outside the cluster reach the broker's Service on its NodePort."""
        return self.node_ip

    @property
    def mqtt_port(self) -> int:
        return MQTT_NODE_PORT

    def app_url(self, name: str) -> str:
        return self.api_url

    def device_password(self, device_id: str) -> str:
        return device_password(self.secrets["fleet"], device_id)

    def provision_devices(self, device_ids: Iterable[str]) -> dict[str, str]:
        """Broker accounts for `device_ids`: the password file in the broker's ConfigMap, reloaded
        (SIGHUP) once the kubelet has put the new file into the pod."""
        created = {device: self.device_password(device) for device in device_ids}
        self.devices += [device for device in created if device not in self.devices]
        files = json.loads(self.backing_services().split("\n---\n", 1)[0])
        self.cluster.apply(manifest(files), CLOUD)
        last = self.devices[-1]
        deadline = time.monotonic() + 120
        while True:
            found = subprocess.run(
                [str(self.cluster.run_dir / "bin" / "kubectl"), "--kubeconfig", str(self.cluster.kubeconfig),
                 "-n", CLOUD, "exec", "deploy/mosquitto", "--", "grep", "-c", f"^{last}:", "/mosquitto/config/passwd"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if found.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker's password file never showed {last}: {found.stderr}")
            time.sleep(1)
        self.cluster.kubectl("-n", CLOUD, "exec", "deploy/mosquitto", "--", "sh", "-c", "kill -HUP 1")
        return created

    # -- installing ------------------------------------------------------------------------------
    def helm(self, *args: str, timeout: float = 600) -> str:
        argv = [self.cluster.env["HELM"], "--kubeconfig", str(self.cluster.kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed: {result.stderr[-3000:]}")
        return result.stdout

    def _timed(self, name: str, began: float) -> None:
        self.timings[name] = round(time.monotonic() - began, 1)

    def volumes(self, namespace: str, count: int, size: str = "20Gi") -> None:
        """hostPath PersistentVolumes of no class in the run directory, open to every uid (a
        hostPath volume ignores fsGroup), claimed by the charts' PVCs of no class."""
        documents = []
        for index in range(count):
            path = self.cluster.run_dir / "volumes" / f"{namespace}-{index}"
            shutil.rmtree(path, ignore_errors=True)  # empty, as a newly provisioned volume
            path.mkdir(parents=True)
            path.chmod(0o1777)
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"tfk8s-{namespace}-{index}", "labels": {"twinfleet.dev/volumes": namespace}},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": str(path), "type": "Directory"},
                    },
                }
            )
        self.cluster.apply(manifest(*documents))

    def backing_services(self) -> str:
        """Redis (password, append-only) and Mosquitto (accounts only: the service and every
        device, the device ACL) from our images; the broker's Service on a NodePort for devices
        outside the cluster; and the issuer's JWKS, served from a ConfigMap by the app image."""
        accounts = [(SERVICE_USER, self.secrets["service"])]
        accounts += [(device, self.device_password(device)) for device in self.devices]
        broker_files = {
            "mosquitto.conf": config_text(
                Path("/mosquitto/config"), MQTT_PORT, host="0.0.0.0", run_as_me=False, persistence=False
            ),
            "acl": acl_text(),
            "passwd": password_file({}, accounts),
        }
        jwks = self.identity.jwks_file.read_text()
        return manifest(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mosquitto"}, "data": broker_files},
            deployment(
                "mosquitto",
                CLOUD,
                {
                    "image": MOSQUITTO_IMAGE,
                    "volumeMounts": [{"name": "config", "mountPath": "/mosquitto/config"}],
                    "readinessProbe": {"tcpSocket": {"port": MQTT_PORT}, "periodSeconds": 1},
                },
                volumes=[{"name": "config", "configMap": {"name": "mosquitto"}}],
                user=10003,
            ),
            _service("mosquitto", CLOUD, MQTT_PORT, MQTT_NODE_PORT),
            deployment(
                "redis",
                CLOUD,
                {
                    "image": REDIS_IMAGE,
                    "args": ["--appendonly", "yes", "--requirepass", self.secrets["redis"]],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                },
                volumes=[{"name": "data", "emptyDir": {}}],
                user=10002,
            ),
            _service("redis", CLOUD, 6379),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "issuer"}, "data": {"jwks.json": jwks}},
            deployment(
                "issuer",
                CLOUD,
                {
                    "image": APP_IMAGE,
                    "command": ["python3", "-m", "http.server", "8080", "--directory", "/jwks"],
                    "volumeMounts": [{"name": "jwks", "mountPath": "/jwks"}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                },
                volumes=[{"name": "jwks", "configMap": {"name": "issuer"}}],
                user=10001,
            ),
            _service("issuer", CLOUD, 8080),
        )

    def cloud_secrets(self) -> str:
        redis = {"host": f"redis.{CLOUD}.svc.cluster.local:6379", "password": self.secrets["redis"]}
        broker = f"tcp://{SERVICE_USER}:{self.secrets['service']}@mosquitto.{CLOUD}.svc.cluster.local:{MQTT_PORT}"
        keys = {
            "tuf-snapshot-key": self.online_seeds["snapshot"],
            "tuf-timestamp-key": self.online_seeds["timestamp"],
            "download-url-key": new_secret(),
            "fleet-secret": self.secrets["fleet"],
            "device-broker-url": broker,
        }
        documents = [_secret("twinfleet-state", CLOUD, redis), _secret("twinfleet-broker", CLOUD, {"url": broker})]
        documents += [_secret(name, CLOUD, {name: value}) for name, value in keys.items()]
        return manifest(*documents)

    def cloud_values(self, extra: Mapping[str, Any] | None = None) -> Path:
        values: dict[str, Any] = {
            "global": {
                "auth": {
                    "issuer": self.identity.issuer,
                    "jwksUrl": f"http://issuer.{CLOUD}.svc.cluster.local:8080/jwks.json",
                },
                "firmwarePublicUrl": f"http://{CLOUD}-firmware.{CLOUD}.svc.cluster.local:8000",
                "networkPolicy": {"enabled": True, "daprNamespace": "dapr-system"},
                "dapr": {"sidecar": {"cpuRequest": NODE_CPU_REQUEST}},
            },
        }
        # The chart's CPU requests are sized for a production node; the suite's nine pods and their
        # sidecars ask for more than this 2-core node has (the scheduler leaves the agent Pending).
        for key in CLOUD_VALUE_KEYS:
            values[key] = {"resources": {"requests": {"cpu": NODE_CPU_REQUEST}}}
        for app, roles in APP_ROLES.items():  # the values key is the app id for these apps
            token = self.identity.token(f"app:{app}", roles, client_id=app)
            values[app] = {**values.get(app, {}), "extraEnv": {"TWINFLEET_SERVICE_TOKEN": token}}
        for key, value in (extra or {}).items():
            values[key] = {**values.get(key, {}), **value}
        path = self.work / "cloud-values.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def install_cloud(self) -> None:
        began = time.monotonic()
        self.cluster.kubectl("create", "namespace", CLOUD)
        self.volumes(CLOUD, 2)
        self.cluster.apply(self.backing_services(), CLOUD)
        self.cluster.apply(self.cloud_secrets(), CLOUD)
        chart = str(CLOUD_CHART)
        self.helm(
            "install", CLOUD, chart, "-n", CLOUD, "--wait", "--timeout", "4m",
            "-f", f"{chart}/ci/small-values.yaml", "-f", f"{chart}/ci/local-images-values.yaml",
            "-f", str(self.cloud_values()),
        )  # fmt: skip
        self._timed("cloud_install_s", began)
        # The ingress app's pods on a NodePort: how the tests (outside the cluster) reach the APIs.
        api = _service("api", CLOUD, 8000, API_NODE_PORT)
        api["spec"]["selector"] = {"app.kubernetes.io/name": "ingress", "app.kubernetes.io/instance": CLOUD}
        self.cluster.apply(manifest(api))
        for port in (API_NODE_PORT, MQTT_NODE_PORT):  # once kube-proxy has written their rules
            wait_for_port(self.node_ip, port)

    def install_agent(self, device_id: str, workload: str, container: str) -> None:
        began = time.monotonic()
        self.cluster.kubectl("create", "namespace", DEVICE)
        self.volumes(DEVICE, 1, "1Gi")
        broker = f"tcp://{device_id}:{self.device_password(device_id)}@mosquitto.{CLOUD}.svc.cluster.local:{MQTT_PORT}"
        credentials = {"url": broker, "password": self.device_password(device_id)}
        self.cluster.apply(manifest(_secret("agent-broker", DEVICE, credentials)))
        self.helm(
            "install", "agent", str(AGENT_CHART), "-n", DEVICE, "--wait", "--timeout", "5m",
            "--set", f"device.id={device_id}", "--set", "device.credentialsSecret=agent-broker",
            "--set", "dapr.sidecarImage=" + DEVICE_DAPRD_IMAGE, "--set", "image.pullPolicy=Never",
            "--set", "software.installer=k3s", "--set", "software.factoryVersion=1.0.0",
            "--set", f"software.firmwareUrl=http://{CLOUD}-firmware.{CLOUD}.svc.cluster.local:8000",
            "--set", f"software.k3s.deployment={workload}", "--set", f"software.k3s.container={container}",
            "--set-file", f"software.trustedRoot={self.release_team.root_path}",
        )  # fmt: skip
        self._timed("agent_install_s", began)
