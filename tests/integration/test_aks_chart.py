"""The cloud suite's Helm chart (deploy/aks/twinfleet), rendered with the real helm for three value
sets (small: Redis for everything; Azure production; Kafka + PostgreSQL) and checked offline with
kubeconform against the Kubernetes, Dapr and ServiceMonitor schemas; then what schemas cannot say:
the components the values chose, the Dapr annotations, tokens and probes, the rollout app's single
replica, the broker-session apps' stable pod names, least-privilege accounts, the issuer settings,
the artifact store, network policies, and the values schema refusing wrong values."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
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

CHART = ROOT / "deploy" / "aks" / "twinfleet"
RELEASE = "tf"
NAMESPACE = "twinfleet"
APPS = {
    "twinStore": names.TWIN_STORE_APP,
    "delta": names.DELTA_APP,
    "events": names.EVENTS_APP,
    "commands": names.COMMANDS_APP,
    "rollout": names.ROLLOUT_APP,
    "firmware": names.FIRMWARE_APP,
}
VALUE_SETS = {
    "small": ["small"],
    "azure": ["azure"],
    "kafka-postgresql": ["kafka-postgresql"],
    "small-local-images": ["small", "local-images"],
}
COMPONENT_TYPES = {
    "small": {
        names.STATE_STORE: "state.redis",
        names.AUTH_STORE: "state.redis",
        names.INTERNAL_PUBSUB: "pubsub.redis",
        names.EVENTS_SINK: "bindings.localstorage",
        names.ARTIFACT_STORE: "bindings.localstorage",
        names.SECRET_STORE: "secretstores.kubernetes",
    },
    "azure": {
        names.STATE_STORE: "state.azure.cosmosdb",
        names.AUTH_STORE: "state.azure.cosmosdb",
        names.INTERNAL_PUBSUB: "pubsub.azure.servicebus.topics",
        names.EVENTS_SINK: "bindings.azure.blobstorage",
        names.ARTIFACT_STORE: "bindings.azure.blobstorage",
        names.SECRET_STORE: "secretstores.azure.keyvault",
    },
    "kafka-postgresql": {
        names.STATE_STORE: "state.postgresql",
        names.AUTH_STORE: "state.postgresql",
        names.INTERNAL_PUBSUB: "pubsub.kafka",
        names.EVENTS_SINK: "bindings.aws.s3",
        names.ARTIFACT_STORE: "bindings.aws.s3",
        names.SECRET_STORE: "secretstores.kubernetes",
    },
}
NAME_KEYS = {"bindings.localstorage": "fileName", "bindings.azure.blobstorage": "blobName", "bindings.aws.s3": "key"}
"""The binding metadata key that names an object, per binding type (see the apps' settings)."""


@pytest.fixture(scope="module")
def tools() -> Tools:
    return find_tools()


def template(tools: Tools, value_sets: list[str], *sets: str) -> Any:
    args: list[str | Path] = [tools.helm, "template", RELEASE, CHART, "--namespace", NAMESPACE]
    args += ["--kube-version", tools.kubernetes_version]
    for value_set in value_sets:
        args += ["-f", CHART / "ci" / f"{value_set}-values.yaml"]
    for value in sets:
        args += ["--set", value]
    return run(args)


def render(tools: Tools, value_sets: list[str], *sets: str) -> str:
    result = template(tools, value_sets, *sets)
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


@pytest.fixture(scope="module")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    return {name: documents(render(tools, sets)) for name, sets in VALUE_SETS.items()}


SESSION_APPS = (names.TWIN_STORE_APP, names.DELTA_APP)
"""The apps holding their own broker session (keyed by the pod's name): StatefulSets."""


def deployment(docs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    """The app's workload: a StatefulSet for the broker-session apps, else a Deployment."""
    return only(docs, "StatefulSet" if app in SESSION_APPS else "Deployment", f"{RELEASE}-{app}")


def container(docs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    (found,) = deployment(docs, app)["spec"]["template"]["spec"]["containers"]
    return dict(found)


def env(docs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs, app)["env"]}


@pytest.mark.parametrize("value_set", [None, *VALUE_SETS])
def test_the_chart_lints(tools: Tools, value_set: str | None) -> None:
    args: list[str | Path] = [tools.helm, "lint", "--strict", CHART]
    for name in VALUE_SETS.get(value_set or "", []):
        args += ["-f", CHART / "ci" / f"{name}-values.yaml"]
    result = run(args)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_value_set_is_valid_against_kubernetes_dapr_and_servicemonitor_schemas(
    tools: Tools, value_set: str
) -> None:
    manifest = render(tools, VALUE_SETS[value_set])
    code, summary, output = kubeconform(tools, manifest)
    docs = documents(manifest)
    assert code == 0, output
    assert summary == {"valid": len(docs), "invalid": 0, "errors": 0, "skipped": 0}, output
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "NetworkPolicy", "Component", "Configuration"} <= kinds
    assert "Resiliency" in kinds
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, (doc["kind"], doc["metadata"]["name"])


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"].update(serviceAcountName="x")),
        ("HorizontalPodAutoscaler", lambda d: d["spec"].update(minReplicas="two")),
        ("Component", lambda d: d["spec"].update(metdata=[])),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="30s")),
    ],
    ids=["deployment", "hpa", "component", "servicemonitor"],
)
def test_the_same_validation_rejects_a_broken_manifest(
    tools: Tools, rendered: dict[str, list[dict[str, Any]]], kind: str, break_it: Callable[[dict[str, Any]], None]
) -> None:
    broken = json.loads(json.dumps(rendered["azure"]))
    break_it(next(d for d in broken if d["kind"] == kind))
    code, summary, output = kubeconform(tools, yaml.safe_dump_all(broken))
    assert code != 0 and summary["invalid"] == 1 and summary["skipped"] == 0, output


@pytest.mark.parametrize("value_set", list(COMPONENT_TYPES))
def test_the_values_choose_the_backing_services(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    docs = rendered[value_set]
    components = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Component"}
    types = {name: c["spec"]["type"] for name, c in components.items()}
    assert types == {**COMPONENT_TYPES[value_set], names.DEVICE_BROKER: "pubsub.mqtt3"}
    broker = {m["name"]: m for m in components[names.DEVICE_BROKER]["spec"]["metadata"]}
    assert broker["url"]["secretKeyRef"] == {"name": "twinfleet-broker", "key": "url"}
    assert broker["cleanSession"]["value"] == "false" and broker["consumerID"]["value"] == "{podName}"
    resiliency = only(docs, "Resiliency")["spec"]["targets"]["components"]
    assert set(resiliency) == {names.INTERNAL_PUBSUB, names.DEVICE_BROKER}
    for component in components.values():  # credentials never inline
        for item in component["spec"]["metadata"]:
            if item["name"] in ("redisPassword", "saslPassword", "connectionString", "secretKey", "masterKey"):
                assert "secretKeyRef" in item, (component["metadata"]["name"], item["name"])
    sink, artifacts = types[names.EVENTS_SINK], types[names.ARTIFACT_STORE]
    assert env(docs, names.EVENTS_APP)["TWINFLEET_EVENTS_SINK_NAME_KEY"] == NAME_KEYS[sink]
    assert env(docs, names.FIRMWARE_APP)["TWINFLEET_FIRMWARE_NAME_KEY"] == NAME_KEYS[artifacts]


def test_every_app_is_a_dapr_app_with_probes_resources_and_a_locked_down_container(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["kafka-postgresql"]
    configuration = only(docs, "Configuration")["metadata"]["name"]
    for app in APPS.values():
        pod = deployment(docs, app)["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["dapr.io/enabled"] == "true" and annotations["dapr.io/app-id"] == app
        assert annotations["dapr.io/app-port"] == "8000" and annotations["dapr.io/app-protocol"] == "http"
        assert annotations["dapr.io/config"] == configuration
        for key in ("cpu-request", "cpu-limit", "memory-request", "memory-limit"):
            assert annotations[f"dapr.io/sidecar-{key}"], (app, key)
        main = container(docs, app)
        assert main["image"] == "twinfleet/app:0.1.0" and main["args"][0] == app
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        for bound in ("requests", "limits"):
            assert set(main["resources"][bound]) == {"cpu", "memory"}, (app, bound)
        security = main["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        service = only(docs, "Service", f"{RELEASE}-{app}")
        assert {p["name"] for p in service["spec"]["ports"]} == {"http", "dapr-metrics"}


def test_the_rollout_app_runs_exactly_one_replica(tools: Tools, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        rollout = deployment(docs, names.ROLLOUT_APP)
        assert rollout["spec"]["replicas"] == 1 and rollout["spec"]["strategy"] == {"type": "Recreate"}
        scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
        assert f"{RELEASE}-{names.ROLLOUT_APP}" not in scaled
        budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
        assert f"{RELEASE}-{names.ROLLOUT_APP}" not in budgets
    for attempt in ("rollout.replicas=2", "rollout.autoscaling.enabled=true"):
        result = template(tools, ["small"], attempt)
        assert result.returncode != 0 and "rollout" in result.stderr, (attempt, result.stderr)


def test_scaled_out_apps_get_autoscalers_and_disruption_budgets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["azure"]  # the chart's defaults for replicas and autoscaling
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(scaled) == {f"{RELEASE}-{a}" for a in (names.TWIN_STORE_APP, names.DELTA_APP, names.FIRMWARE_APP)}
    for hpa in scaled.values():
        assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert (
            "replicas"
            not in deployment(docs, hpa["spec"]["scaleTargetRef"]["name"].removeprefix(f"{RELEASE}-"))["spec"]
        )
    budgets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {f"{RELEASE}-{a}" for a in APPS.values() if a != names.ROLLOUT_APP}
    for budget in budgets.values():
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    small = rendered["small"]  # one replica each: no budget would let a node drain
    assert not [d for d in small if d["kind"] in ("PodDisruptionBudget", "HorizontalPodAutoscaler")]


def test_each_app_has_its_own_account_and_only_the_key_material_readers_an_api_token(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["small"]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    online_keys = [names.TUF_SNAPSHOT_KEY, names.TUF_TIMESTAMP_KEY, names.ARTIFACT_STORE_KEY]
    expected = {
        names.TWIN_STORE_APP: [names.DEVICE_BROKER_URL_KEY],
        names.DELTA_APP: [names.DEVICE_BROKER_URL_KEY],
        names.FIRMWARE_APP: [*online_keys, names.DOWNLOAD_URL_KEY, names.FLEET_SECRET],
    }
    assert set(roles) == {f"{RELEASE}-{app}-key-material" for app in expected}
    for app in APPS.values():
        account = only(docs, "ServiceAccount", f"{RELEASE}-{app}")
        assert account["automountServiceAccountToken"] is False
        pod = deployment(docs, app)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{RELEASE}-{app}"
        assert pod["automountServiceAccountToken"] is (app in expected)
    for app, secrets in expected.items():
        (rule,) = roles[f"{RELEASE}-{app}-key-material"]["rules"]
        assert rule == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets, "verbs": ["get"]}
        binding = only(docs, "RoleBinding", f"{RELEASE}-{app}-key-material")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-{app}", "namespace": NAMESPACE}]
    azure = rendered["azure"]  # Key Vault through workload identity: no Secrets read, no API token
    assert not [d for d in azure if d["kind"] in ("Role", "RoleBinding")]
    for app in APPS.values():
        account = only(azure, "ServiceAccount", f"{RELEASE}-{app}")
        assert account["metadata"]["annotations"]["azure.workload.identity/client-id"]
        pod = deployment(azure, app)["spec"]["template"]
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert pod["spec"]["automountServiceAccountToken"] is False


def test_network_policies_let_in_only_the_sidecars_the_ingress_and_the_scraper(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["azure"]
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {f"{RELEASE}-{app}" for app in [*APPS.values(), names.INGRESS_APP]}
    exposed = {names.FIRMWARE_APP}  # its device routes; every REST call comes through a sidecar
    for app in APPS.values():
        spec = policies[f"{RELEASE}-{app}"]["spec"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == app
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        ports = [sorted(p["port"] for p in rule["ports"]) for rule in spec["ingress"]]
        assert ports[0] == [50002] and ports[-1] == [8000, 9090]
        assert ([8000] in ports) is (app in exposed), app
        egress = [rule["to"][0] for rule in spec["egress"]]
        assert any("ipBlock" in peer for peer in egress)  # the Azure endpoints and the broker only
    ingress = only(docs, "Ingress")
    hosts = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ingress["spec"]["rules"]}
    assert hosts == {
        "twins.twinfleet.example.com": f"{RELEASE}-{names.INGRESS_APP}",
        "rollouts.twinfleet.example.com": f"{RELEASE}-{names.INGRESS_APP}",
        "commands.twinfleet.example.com": f"{RELEASE}-{names.INGRESS_APP}",
        "firmware.twinfleet.example.com": f"{RELEASE}-{names.FIRMWARE_APP}",
    }
    gateway = policies[f"{RELEASE}-{names.INGRESS_APP}"]["spec"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in gateway["ingress"]] == [[8000], [9090]]
    monitor = only(docs, "ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http", "dapr-metrics"]
    small = rendered["small"]
    assert not [d for d in small if d["kind"] in ("Ingress", "ServiceMonitor")]
    assert all(d["spec"]["policyTypes"] == ["Ingress"] for d in small if d["kind"] == "NetworkPolicy")


def test_local_storage_is_a_volume_in_the_sidecar_and_local_images_are_never_pulled(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["small-local-images"]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {f"{RELEASE}-artifacts", f"{RELEASE}-events"}
    for app, store in ((names.FIRMWARE_APP, "artifacts"), (names.EVENTS_APP, "events")):
        pod = deployment(docs, app)["spec"]["template"]
        assert pod["metadata"]["annotations"]["dapr.io/volume-mounts-rw"] == f"{store}:/var/lib/twinfleet/{store}"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes[store]["persistentVolumeClaim"] == {"claimName": f"{RELEASE}-{store}"}
        assert deployment(docs, app)["spec"]["strategy"] == {"type": "Recreate"}  # one pod holds the volume
    for app in APPS.values():
        pod = deployment(docs, app)["spec"]["template"]
        assert pod["metadata"]["annotations"]["dapr.io/sidecar-image"] == "twinfleet/daprd:1.18.0"
        assert container(docs, app)["imagePullPolicy"] == "Never"


@pytest.mark.parametrize(
    ("value_sets", "sets", "message"),
    [
        (["small"], ("global.backing.state.type=mongodb",), "/global/backing/state/type"),
        (["small"], ("twinStore.replica=3",), "replica"),
        (["small"], ("global.image.pullPolicy=Sometimes",), "pullPolicy"),
        (["small"], ("delta.replicas=two",), "replicas"),
        (["small"], ("global.dapr.tracingSamplingRate=often",), "tracingSamplingRate"),
        (["small"], ("firmware.replicas=2",), "firmware keeps artifacts on a ReadWriteOnce volume"),
        (["small"], ("global.topicProfile=aws", "twinStore.replicas=2"), "aws runs one twin-store replica"),
        (["azure"], ("global.backing.state.cosmosdb.url=",), "global.backing.state.cosmosdb.url is required"),
        (["kafka-postgresql"], ("global.backing.pubsub.kafka.brokers=",), "pubsub.kafka.brokers is required"),
        (["small"], ("global.ingress.enabled=true",), "give at least one app an ingress.host"),
    ],
    ids=[
        "unknown-state-store",
        "misspelled-key",
        "pull-policy",
        "replicas-not-a-number",
        "sampling-rate",
        "local-artifacts-scaled-out",
        "aws-profile-scaled-out",
        "cosmosdb-without-url",
        "kafka-without-brokers",
        "ingress-without-hosts",
    ],
)
def test_a_wrong_value_fails_at_install(
    tools: Tools, value_sets: list[str], sets: tuple[str, ...], message: str
) -> None:
    result = template(tools, value_sets, *sets)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_read_write_many_storage_lets_the_firmware_app_scale_out(tools: Tools) -> None:
    manifest = render(
        tools, ["small"], "firmware.replicas=3", "global.backing.artifacts.local.accessMode=ReadWriteMany"
    )
    assert deployment(documents(manifest), names.FIRMWARE_APP)["spec"]["replicas"] == 3


def test_the_notes_say_which_secrets_to_create(tools: Tools, tmp_path: Path) -> None:
    """NOTES.txt rendered as `helm install` would (`helm template` leaves it out): in a copy of the
    chart where a template prints it."""
    chart = tmp_path / "twinfleet"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "files" / "NOTES.txt")
    (chart / "templates" / "notes.yaml").write_text(
        'kind: Notes\ntext: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}\n'
    )
    args: list[str | Path] = [tools.helm, "template", RELEASE, chart, "-n", NAMESPACE, "-s", "templates/notes.yaml"]
    result = run([*args, "-f", CHART / "ci" / "small-values.yaml"])
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["text"]
    secrets = ("twinfleet-state", "twinfleet-broker", "download-url-key", "fleet-secret", "device-broker-url")
    for secret in (*secrets, names.TUF_SNAPSHOT_KEY, names.TUF_TIMESTAMP_KEY, "/v1/metadata/root"):
        assert secret in notes, notes
    assert f"svc/{RELEASE}-ingress" in notes


def test_each_app_takes_calls_only_from_its_own_sidecar_with_tokens_kept_in_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["small"]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    api_token = f"{RELEASE}-dapr-api-token"
    assert set(secrets) == {api_token, *(f"{RELEASE}-{app}-app-token" for app in APPS.values())}
    for secret in secrets.values():
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert len(secret["data"]["token"]) >= 40
    for app in APPS.values():
        annotations = deployment(docs, app)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/app-token-secret"] == f"{RELEASE}-{app}-app-token"
        assert annotations["dapr.io/api-token-secret"] == api_token
        variables = env(docs, app)
        assert variables["APP_API_TOKEN"] == {"secretKeyRef": {"name": f"{RELEASE}-{app}-app-token", "key": "token"}}
        assert variables["DAPR_API_TOKEN"] == {"secretKeyRef": {"name": api_token, "key": "token"}}
        assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    firmware = deployment(docs, names.FIRMWARE_APP)["spec"]["template"]["metadata"]["annotations"]
    assert firmware["dapr.io/max-body-size"] == "2Gi"  # uploads stream through its sidecar


def test_the_broker_session_apps_are_stateful_sets_named_by_the_pod(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for docs in rendered.values():
        assert {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"} == {
            f"{RELEASE}-{app}" for app in SESSION_APPS
        }
        for app in SESSION_APPS:
            spec = deployment(docs, app)["spec"]
            assert spec["serviceName"] == f"{RELEASE}-{app}" and spec["podManagementPolicy"] == "Parallel"
    azure = rendered["azure"]
    kinds = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["scaleTargetRef"]["kind"]
        for d in azure
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert kinds == {
        f"{RELEASE}-{names.TWIN_STORE_APP}": "StatefulSet",
        f"{RELEASE}-{names.DELTA_APP}": "StatefulSet",
        f"{RELEASE}-{names.FIRMWARE_APP}": "Deployment",
    }


def test_the_apps_trust_the_issuer_the_values_name_and_calling_apps_get_their_own_tokens(tools: Tools) -> None:
    issuer = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0"
    sets = [
        f"global.auth.issuer={issuer}",
        "global.auth.jwksUrl=https://login.microsoftonline.com/t/discovery/v2.0/keys",
        "global.auth.tokenUrl=https://login.microsoftonline.com/t/oauth2/v2.0/token",
        *(
            f"global.auth.clientIds.{app}=client-{app}"
            for app in ("rollout", "delta", "firmware", "commands", "events")
        ),
    ]
    docs = documents(render(tools, ["small"], *sets))
    for app in APPS.values():
        variables = env(docs, app)
        assert variables["TWINFLEET_AUTH_ISSUER"] == issuer
        assert variables["TWINFLEET_AUTH_JWKS_URL"].endswith("/keys")
        assert variables["TWINFLEET_AUTH_AUDIENCE"] == "twinfleet"
        calls_others = app != names.TWIN_STORE_APP
        assert ("TWINFLEET_AUTH_CLIENT_ID" in variables) is calls_others, app
        if calls_others:
            assert variables["TWINFLEET_AUTH_CLIENT_ID"] == f"client-{app}"
            assert variables["TWINFLEET_AUTH_CLIENT_SECRET"] == {
                "secretKeyRef": {"name": "twinfleet-auth-clients", "key": app}
            }
    missing = template(tools, ["small"], *sets[:3])
    assert missing.returncode != 0 and "global.auth.clientIds.commands is required" in missing.stderr


@pytest.mark.parametrize(
    ("value_set", "store"),
    [("small", {"TWINFLEET_FIRMWARE_STORE": "binding"}),
     ("azure", {
         "TWINFLEET_FIRMWARE_STORE": "azure",
         "TWINFLEET_FIRMWARE_STORE_ACCOUNT": "twinfleetartifacts",
         "TWINFLEET_FIRMWARE_STORE_ENDPOINT": "https://twinfleetartifacts.blob.core.windows.net",
         "TWINFLEET_FIRMWARE_STORE_CONTAINER": "artifacts",
     }),
     ("kafka-postgresql", {
         "TWINFLEET_FIRMWARE_STORE": "s3",
         "TWINFLEET_FIRMWARE_STORE_ACCOUNT": {"secretKeyRef": {"name": "twinfleet-s3", "key": "accessKey"}},
         "TWINFLEET_FIRMWARE_STORE_REGION": "eu-central-1",
         "TWINFLEET_FIRMWARE_STORE_ENDPOINT": "",
         "TWINFLEET_FIRMWARE_STORE_CONTAINER": "twinfleet-artifacts",
     })],
)  # fmt: skip
def test_artifacts_go_straight_to_the_object_store_the_values_choose(
    rendered: dict[str, list[dict[str, Any]]], value_set: str, store: dict[str, Any]
) -> None:
    variables = env(rendered[value_set], names.FIRMWARE_APP)
    assert {k: v for k, v in variables.items() if k.startswith("TWINFLEET_FIRMWARE_STORE")} == store


def test_the_ingress_app_sends_every_rest_call_through_its_own_sidecar(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["small-local-images"]
    gateway = only(docs, "Deployment", f"{RELEASE}-{names.INGRESS_APP}")["spec"]["template"]
    annotations = gateway["metadata"]["annotations"]
    assert annotations["dapr.io/app-id"] == names.INGRESS_APP and "dapr.io/app-port" not in annotations
    assert annotations["dapr.io/api-token-secret"] == f"{RELEASE}-dapr-api-token"
    (main,) = gateway["spec"]["containers"]
    assert main["image"] == "twinfleet/app:0.1.0" and main["imagePullPolicy"] == "Never"
    variables = {e["name"]: e.get("value", e.get("valueFrom")) for e in main["env"]}
    assert json.loads(variables["TWINFLEET_GATEWAY_APPS"]) == dict.fromkeys(APPS.values(), "http://127.0.0.1:3500")
    assert variables["DAPR_API_TOKEN"] == {"secretKeyRef": {"name": f"{RELEASE}-dapr-api-token", "key": "token"}}
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    policies = only(docs, "Configuration")["spec"]["accessControl"]["policies"]
    assert {"appId": names.INGRESS_APP, "defaultAction": "allow"}.items() <= policies[0].items()


def test_committed_dapr_files_equal_a_fresh_render(tmp_path: Path) -> None:
    assert_rendered_files_current(CHART, tmp_path)
