"""The device agent's Helm chart (deploy/k3s/device-agent), rendered with the real helm and checked
offline with kubeconform against the Kubernetes and Dapr CRD schemas `make tools` prepares, plus
the invariants schemas cannot express (least RBAC, resources everywhere, the device's session)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.platform import names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k3s" / "device-agent"
RELEASE = "kitchen"
NAMESPACE = "edge-agents"
DEVICE = "kitchen-sensor"
REQUIRED_MESSAGE = "device.id is required"


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubeconform: Path
    kubernetes_version: str
    kubernetes_schemas: Path
    dapr_schemas: Path

    def schema_args(self) -> list[str]:
        k8s = (
            "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
        )
        dapr = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
        return [
            "-kubernetes-version",
            self.kubernetes_version,
            "-schema-location",
            f"{self.kubernetes_schemas}/{k8s}",
            "-schema-location",
            f"{self.dapr_schemas}/{dapr}",
        ]


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def _newest(directory: Path, pattern: str, what: str) -> Path:
    """Like the daprd lookup: the newest match in the build cache, else a clear failure."""
    found = sorted(directory.glob(pattern), key=_version_key) if directory.exists() else []
    if not found:
        pytest.fail(f"{what} not found in {directory}: run `make tools` (`make test` does)")
    return found[-1]


def _explicit(variable: str, what: str) -> Path | None:
    value = os.environ.get(variable)
    if not value:
        return None
    if not Path(value).exists():
        pytest.fail(f"{what} {value} ({variable}) does not exist: run `make tools`")
    return Path(value)


@pytest.fixture(scope="module")
def tools() -> Tools:
    """helm, kubeconform and the schemas built by `make tools` (TWINFLEET_* from the Makefile, else
    the newest in $TWINFLEET_CACHE)."""
    cache = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet"))
    helm = _explicit("TWINFLEET_HELM", "helm") or _newest(cache / "bin", "helm-*", "helm")
    kubeconform = _explicit("TWINFLEET_KUBECONFORM", "kubeconform") or _newest(
        cache / "bin", "kubeconform-*", "kubeconform"
    )
    k8s_root = cache / "schemas" / "kubernetes"
    version = os.environ.get("TWINFLEET_KUBERNETES_VERSION") or _newest(
        k8s_root, "v*-standalone-strict", "Kubernetes schemas"
    ).name.removeprefix("v").removesuffix("-standalone-strict")
    if not (k8s_root / f"v{version}-standalone-strict" / ".complete").exists():
        pytest.fail(f"Kubernetes {version} schemas not prepared in {k8s_root}: run `make tools`")
    dapr = _explicit("TWINFLEET_DAPR_SCHEMAS", "Dapr schemas") or _newest(cache / "schemas", "dapr-*", "Dapr schemas")
    if not (dapr / ".complete").exists():
        pytest.fail(f"Dapr CRD schemas not prepared in {dapr}: run `make tools`")
    return Tools(helm, kubeconform, version, k8s_root, dapr)


def run(args: Sequence[str | Path], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)


def helm_template(tools: Tools, *sets: str, release: str = RELEASE) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = [tools.helm, "template", release, CHART, "--namespace", NAMESPACE]
    args += ["--kube-version", tools.kubernetes_version]
    for value in sets:
        args += ["--set", value]
    return run(args)


def render(tools: Tools, *sets: str) -> str:
    result = helm_template(tools, f"device.id={DEVICE}", *sets)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def kubeconform(tools: Tools, manifest: str) -> tuple[int, dict[str, int], str]:
    """The one validation every test uses: strict, both schema sets, JSON report with a summary."""
    args: list[str | Path] = [tools.kubeconform, "-strict", "-summary", "-output", "json", *tools.schema_args(), "-"]
    result = run(args, stdin=manifest)
    report = json.loads(result.stdout)
    return result.returncode, report["summary"], result.stdout + result.stderr


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def manifest(tools: Tools) -> str:
    return render(tools)


@pytest.fixture(scope="module")
def docs(manifest: str) -> list[dict[str, Any]]:
    return documents(manifest)


def test_chart_lints(tools: Tools) -> None:
    result = run([tools.helm, "lint", "--strict", CHART, "--set", f"device.id={DEVICE}"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("device.wireEncoding=cbor", "device.credentialsSecret=kitchen-creds", "configMap.name=kitchen-config"),
        ("device.brokerUrl=ssl://kitchen-sensor:secret@broker.example:8883", "persistence.storageClassName=local-path"),
    ],
    ids=["defaults", "custom-names", "lab-secret"],
)
def test_rendered_chart_is_valid_against_kubernetes_and_dapr_schemas(tools: Tools, sets: tuple[str, ...]) -> None:
    manifest = render(tools, *sets)
    code, summary, output = kubeconform(tools, manifest)
    assert code == 0, output
    assert summary == {"valid": len(documents(manifest)), "invalid": 0, "errors": 0, "skipped": 0}, output
    kinds = {d["kind"] for d in documents(manifest)}
    assert {"Deployment", "Component", "Configuration", "Resiliency"} <= kinds


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePulPolicy="Always")),
        ("Deployment", lambda d: d["spec"].update(replicas="one")),
        ("Component", lambda d: d.update(scope=d["scopes"])),
        ("Component", lambda d: d["spec"]["metadata"][0].update(valeu="x")),
    ],
    ids=["deployment-misspelled-field", "deployment-wrong-type", "component-root-field", "component-nested-field"],
)
def test_the_same_validation_rejects_a_broken_manifest(
    tools: Tools, docs: list[dict[str, Any]], kind: str, break_it: Any
) -> None:
    broken = json.loads(json.dumps(docs))
    break_it(next(d for d in broken if d["kind"] == kind))
    code, summary, output = kubeconform(tools, yaml.safe_dump_all(broken))
    assert code != 0
    assert summary["invalid"] == 1 and summary["valid"] == len(docs) - 1 and summary["skipped"] == 0, output


def test_rendering_without_a_device_id_fails_clearly(tools: Tools) -> None:
    result = helm_template(tools)
    assert result.returncode != 0
    assert REQUIRED_MESSAGE in result.stderr


def test_wire_encoding_is_json_or_cbor(tools: Tools) -> None:
    result = helm_template(tools, f"device.id={DEVICE}", "device.wireEncoding=xml")
    assert result.returncode != 0
    assert "device.wireEncoding must be json or cbor" in result.stderr


def test_every_resource_is_in_the_release_namespace(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["kind"]


def test_rbac_is_namespaced_and_limited_to_the_agents_configmap(docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in docs}
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds
    role = only(docs, "Role")
    configmap = only(docs, "ConfigMap")["metadata"]["name"]
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""] and rule["resources"] == ["configmaps"], rule
        if "resourceNames" in rule:
            assert rule["resourceNames"] == [configmap] and set(rule["verbs"]) == {"get", "update", "patch"}
        else:
            assert rule["verbs"] == ["create"], rule  # create cannot be limited by name
    binding = only(docs, "RoleBinding")
    account = only(docs, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account


def test_every_container_and_the_sidecar_have_requests_and_limits(docs: list[dict[str, Any]]) -> None:
    pod = only(docs, "Deployment")["spec"]["template"]
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    for container in containers:
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, (container["name"], bound)
    annotations = pod["metadata"]["annotations"]
    for key in ("cpu-request", "cpu-limit", "memory-request", "memory-limit"):
        assert annotations.get(f"dapr.io/sidecar-{key}"), key


def test_the_deployment_runs_one_locked_down_agent_with_its_sidecar(docs: list[dict[str, Any]]) -> None:
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == names.DEVICE_AGENT_APP
    assert annotations["dapr.io/app-port"] == "8000"
    assert annotations["dapr.io/config"] == only(docs, "Configuration")["metadata"]["name"]
    assert annotations["dapr.io/enable-metrics"] == "true" and annotations["dapr.io/log-level"]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for kind in ("app", "api"):  # the agent and its sidecar take calls only from each other
        name = annotations[f"dapr.io/{kind}-token-secret"]
        assert name in secrets and secrets[name]["data"]["token"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (agent,) = pod["spec"]["containers"]
    assert agent["command"][:4] == ["python", "-m", "uvicorn", "services.device_agent.main:app"]
    assert agent["command"][agent["command"].index("--host") + 1] == "0.0.0.0"  # kubelet probes
    assert agent["command"][agent["command"].index("--port") + 1] == "8000"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in agent["ports"]
    security = agent["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim = only(docs, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[mounts["/var/lib/twinfleet"]]["persistentVolumeClaim"] == {"claimName": claim}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_the_agent_environment(docs: list[dict[str, Any]]) -> None:
    (agent,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in agent["env"]}
    assert env.pop("APP_API_TOKEN") == {"secretKeyRef": {"name": f"{RELEASE}-app-token", "key": "token"}}
    assert env.pop("DAPR_API_TOKEN") == {"secretKeyRef": {"name": f"{RELEASE}-api-token", "key": "token"}}
    assert env == {
        "TWINFLEET_DEVICE_ID": DEVICE,
        "TWINFLEET_WIRE_ENCODING": "json",
        "TWINFLEET_AGENT_DATA_DIR": "/var/lib/twinfleet",
        "TWINFLEET_AGENT_CONFIG_FILE": "/var/lib/twinfleet/config/settings.json",
        "TWINFLEET_AGENT_CONFIGMAP": f"{RELEASE}-settings",
        "TWINFLEET_AGENT_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "TWINFLEET_AGENT_OUTBOX_MAX": "10000",
    }
    assert only(docs, "ConfigMap")["metadata"]["name"] == f"{RELEASE}-settings"


@pytest.mark.parametrize(
    ("sets", "secret"),
    [((), f"{RELEASE}-broker"), (("device.credentialsSecret=kitchen-creds",), "kitchen-creds")],
    ids=["default-secret", "named-secret"],
)
def test_the_cloud_broker_uses_the_devices_secret_client_id_and_persistent_session(
    tools: Tools, sets: tuple[str, ...], secret: str
) -> None:
    docs = documents(render(tools, *sets))
    broker = only(docs, "Component", names.AGENT_BROKER)
    assert broker["spec"]["type"] == "pubsub.mqtt3" and broker["scopes"] == [names.DEVICE_AGENT_APP]
    metadata = {m["name"]: m for m in broker["spec"]["metadata"]}
    assert metadata["url"] == {"name": "url", "secretKeyRef": {"name": secret, "key": "url"}}
    assert metadata["consumerID"]["value"] == DEVICE
    assert metadata["cleanSession"]["value"] == "false"
    assert only(docs, "Component", names.AGENT_STATE)["spec"]["type"] == "state.sqlite"
    tokens = {f"{RELEASE}-app-token", f"{RELEASE}-api-token"}
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] not in tokens]  # made by hand


def test_a_lab_release_can_create_the_broker_secret(tools: Tools) -> None:
    url = "tcp://kitchen-sensor:pw@192.0.2.10:1883"
    docs = documents(render(tools, f"device.brokerUrl={url}"))
    secret = only(docs, "Secret", f"{RELEASE}-broker")
    assert secret["metadata"]["name"] == f"{RELEASE}-broker" and secret["stringData"] == {"url": url}


def test_committed_dapr_files_equal_a_fresh_render(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "services.devtools", "components", "--out", tmp_path])
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "k3s" / "device-agent" / "files" / "dapr"
    committed = CHART / "files" / "dapr"
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in fresh.iterdir())
    for path in fresh.iterdir():
        assert (committed / path.name).read_text() == path.read_text(), f"{path.name}: run `make components`"
