"""The device agent's Helm chart (deploy/k3s/device-agent), rendered with the real helm and checked
offline with kubeconform against the Kubernetes and Dapr CRD schemas `make tools` prepares, plus
the invariants schemas cannot express (least RBAC, resources everywhere, the device's session,
the software update's settings)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.platform import names
from tests.support.charts import (
    ROOT,
    Tools,
    assert_rendered_files_current,
    documents,
    find_tools,
    kubeconform,
    only,
    run,
)

CHART = ROOT / "deploy" / "k3s" / "device-agent"
RELEASE = "kitchen"
NAMESPACE = "edge-agents"
DEVICE = "kitchen-sensor"
REQUIRED_MESSAGE = "device.id is required"


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


@pytest.fixture(scope="module")
def tools() -> Tools:
    return find_tools()


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
    """Without the k3s installer: its ConfigMap and nothing else."""
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
    assert agent["image"] == "twinfleet/app:0.1.0" and "command" not in agent  # the image's entrypoint
    assert agent["args"][0] == names.DEVICE_AGENT_APP
    assert agent["args"][agent["args"].index("--host") + 1] == "0.0.0.0"  # kubelet probes
    assert agent["args"][agent["args"].index("--port") + 1] == "8000"
    for probe in ("startupProbe", "livenessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
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
    assert_rendered_files_current(CHART, tmp_path)


K3S_UPDATES = (
    "software.installer=k3s",
    "software.firmwareUrl=https://firmware.example.com",
    "software.trustedRoot=ROOT-METADATA",  # what --set-file software.trustedRoot=1.root.json puts there
    "software.factoryVersion=1.0.0",
    "software.k3s.deployment=gateway",
    "software.k3s.container=app",
)


def test_the_k3s_installer_may_get_patch_and_watch_its_one_deployment(tools: Tools) -> None:
    manifest = render(tools, *K3S_UPDATES)
    code, _, output = kubeconform(tools, manifest)
    assert code == 0, output
    docs = documents(manifest)
    rules = only(docs, "Role")["rules"]
    deployments = [r for r in rules if r["resources"] == ["deployments"]]
    assert deployments == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["gateway"],
            "verbs": ["get", "patch", "watch"],
        }
    ]
    assert all(r["resources"] in (["configmaps"], ["deployments"]) for r in rules)
    (agent,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in agent["env"]}
    assert {k: v for k, v in env.items() if k.startswith("TWINFLEET_SOFTWARE_")} == {
        "TWINFLEET_SOFTWARE_INSTALLER": "k3s",
        "TWINFLEET_SOFTWARE_FIRMWARE_URL": "https://firmware.example.com",
        "TWINFLEET_SOFTWARE_TRUSTED_ROOT": "/etc/twinfleet/trust/root.json",
        "TWINFLEET_SOFTWARE_VERSION": "1.0.0",
        "TWINFLEET_SOFTWARE_DEPLOYMENT": "gateway",
        "TWINFLEET_SOFTWARE_CONTAINER": "app",
    }
    assert env["TWINFLEET_DEVICE_PASSWORD"] == {
        "secretKeyRef": {"name": f"{RELEASE}-broker", "key": "password", "optional": True}
    }
    trust = only(docs, "ConfigMap", f"{RELEASE}-trust")
    assert trust["data"] == {"root.json": "ROOT-METADATA"}
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "trust"]
    assert volume["configMap"]["name"] == f"{RELEASE}-trust"
    assert {"name": "trust", "mountPath": "/etc/twinfleet/trust", "readOnly": True} in agent["volumeMounts"]


def test_the_agents_software_settings_are_the_ones_it_reads(tools: Tools) -> None:
    from services.device_agent.settings import AgentSettings

    manifest = render(
        tools,
        "software.installer=command",
        "software.firmwareUrl=https://firmware.example.com",
        "software.trustedRoot=ROOT-METADATA",
        "software.command.install=rauc install {file}",
        "software.command.commit=rauc status mark-good",
        "software.command.rollback=rauc status mark-bad",
        "software.healthCommand=systemctl is-active gateway",
    )
    (agent,) = only(documents(manifest), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in agent["env"] if "value" in e}
    known = {f"TWINFLEET_{name.upper()}" for name in AgentSettings.model_fields}
    assert set(env) <= known, set(env) - known
    settings = AgentSettings(**{k.removeprefix("TWINFLEET_").lower(): v for k, v in env.items()})
    assert settings.software_install_command == "rauc install {file}"
    assert settings.software_health_command == "systemctl is-active gateway"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("software.installer=swupdate",), "software.installer must be file, command, k3s or empty"),
        (
            ("software.installer=file", "software.file.target=/opt/app"),
            "need software.firmwareUrl and software.trustedRoot",
        ),
        ((*K3S_UPDATES[:3], "software.k3s.deployment=gateway"), "software.installer k3s needs software.k3s.deployment"),
    ],
    ids=["unknown-installer", "no-firmware-url", "k3s-without-container"],
)
def test_incomplete_software_settings_fail_clearly(tools: Tools, sets: tuple[str, ...], message: str) -> None:
    result = helm_template(tools, f"device.id={DEVICE}", *sets)
    assert result.returncode != 0 and message in result.stderr, result.stderr
