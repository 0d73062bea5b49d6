"""The Dapr component YAML is written once and renders for every target."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.devtools import components
from services.platform import names

LOCAL_HOSTS = {"redis_host": "127.0.0.1", "mqtt_host": "127.0.0.1"}


@pytest.mark.parametrize("target", ["local", "k3s"])
def test_every_target_renders_the_same_components(target: str) -> None:
    files = components.render(
        target, {**LOCAL_HOSTS, "redis_port": "6379", "mqtt_port": "1883", "broker_user": "u", "broker_password": "p"}
    )
    docs: dict[str, Any] = {name: yaml.safe_load(text) for name, text in files.items()}
    rendered = {d["metadata"]["name"]: d for d in docs.values() if d["kind"] == "Component"}
    assert set(rendered) == {
        names.STATE_STORE,
        names.AUTH_STORE,
        names.INTERNAL_PUBSUB,
        names.DEVICE_BROKER,
        names.EVENTS_SINK,
        names.ARTIFACT_STORE,
        names.SECRET_STORE,
    }
    artifacts, secrets = rendered[names.ARTIFACT_STORE], rendered[names.SECRET_STORE]
    assert artifacts["spec"]["type"].startswith("bindings.") and artifacts["scopes"] == [names.FIRMWARE_APP]
    assert secrets["spec"]["type"].startswith("secretstores.")
    # Key material for these only (the twin-store and delta apps read the device broker's URL).
    assert set(secrets["scopes"]) == {names.FIRMWARE_APP, names.DELTA_APP, names.TWIN_STORE_APP}
    # The twin-store and delta apps hold their own broker connection: no sidecar client may take
    # their client ids (their pod names) or their shared subscriptions.
    assert set(rendered[names.DEVICE_BROKER]["scopes"]) == {names.EVENTS_APP, names.COMMANDS_APP}
    assert names.FIRMWARE_APP in rendered[names.STATE_STORE]["scopes"]
    assert rendered[names.DEVICE_BROKER]["spec"]["type"] == "pubsub.mqtt3"
    assert rendered[names.STATE_STORE]["scopes"][0] == names.TWIN_STORE_APP
    for component in (names.STATE_STORE, names.INTERNAL_PUBSUB, names.DEVICE_BROKER):
        assert names.EVENTS_APP in rendered[component]["scopes"], component
    sink = rendered[names.EVENTS_SINK]
    assert sink["spec"]["type"].startswith("bindings.") and sink["scopes"] == [names.EVENTS_APP]
    sink_meta = {m["name"]: m for m in sink["spec"]["metadata"]}
    assert sink_meta["direction"]["value"] == "output"
    for file_name, doc in docs.items():
        assert doc["apiVersion"] == "dapr.io/v1alpha1"
        if target != "local" and file_name != "daprsystem.yaml":
            assert doc["metadata"]["namespace"] == "twinfleet"
    resiliency = docs["resiliency.yaml"]["spec"]["targets"]["components"]
    assert set(resiliency) <= set(rendered)
    broker = {m["name"]: m for m in rendered[names.DEVICE_BROKER]["spec"]["metadata"]}
    assert broker["qos"]["value"] == "1" and broker["cleanSession"]["value"] == "false"
    if target == "local":
        assert broker["url"]["value"] == "tcp://u:p@127.0.0.1:1883"
    else:  # credentials never inline outside local runs
        assert "secretKeyRef" in broker["url"]


@pytest.mark.parametrize("target", ["k3s", "aks"])
def test_clusters_limit_who_may_invoke_what_over_mtls(target: str) -> None:
    files = components.render(target, {})
    control = yaml.safe_load(files["configuration.yaml"])["spec"]["accessControl"]
    assert control["defaultAction"] == "deny"
    policies = {p["appId"]: p for p in control["policies"]}
    assert policies[names.INGRESS_APP]["defaultAction"] == "allow"
    rollout = policies[names.ROLLOUT_APP]
    assert rollout["defaultAction"] == "deny"
    assert {"name": "/v1/twins/batch", "httpVerb": ["POST"], "action": "allow"} in rollout["operations"]
    assert names.TWIN_STORE_APP not in policies  # it invokes nobody
    assert policies[names.DELTA_APP]["operations"] == [
        {"name": "/v1/artifacts/**", "httpVerb": ["POST"], "action": "allow"}  # a device's download URLs
    ]
    assert all(op["httpVerb"] == ["GET"] for op in policies[names.FIRMWARE_APP]["operations"])
    mtls = yaml.safe_load(files["daprsystem.yaml"])["spec"]["mtls"]
    assert mtls["enabled"] is True and mtls["workloadCertTTL"] == "24h"


@pytest.mark.parametrize("target", ["local", "k3s", "aks"])
def test_every_app_that_checks_api_keys_reads_one_store(target: str) -> None:
    files = components.render(target, {"redis_port": "1", "mqtt_port": "2", "broker_user": "u", "broker_password": "p"})
    found = [yaml.safe_load(text) for path, text in files.items() if path.startswith("auth/")]  # the chart's variants
    for auth in found or [yaml.safe_load(files[f"{names.AUTH_STORE}.yaml"])]:
        assert auth["metadata"]["name"] == names.AUTH_STORE
        meta = {m["name"]: m.get("value") for m in auth["spec"]["metadata"]}
        assert meta["keyPrefix"] == "name"  # not prefixed by app id: every app reads the same key records
        assert names.DELTA_APP not in auth["scopes"]
    assert (target == "aks") is bool(found)
    if target == "local":  # loopback only, no Sentry: no mTLS, so no access control either
        assert "daprsystem.yaml" not in files
        assert "accessControl" not in yaml.safe_load(files["configuration.yaml"])["spec"]


def test_local_placeholders_must_be_filled() -> None:
    text = components.render(
        "local", {**LOCAL_HOSTS, "redis_port": "1", "mqtt_port": "2", "broker_user": "u", "broker_password": "p"}
    )
    assert "{redis_port}" not in "".join(text.values())
    assert "{appID}" in text[f"{names.INTERNAL_PUBSUB}.yaml"]  # Dapr's own placeholder stays


@pytest.mark.parametrize("target", ["agent-local", "agent-k3s"])
def test_agent_targets_render_its_broker_link_and_local_store(target: str) -> None:
    params = {
        "device_id": "dev-1",
        "broker_url": "tcp://dev-1:pw@127.0.0.1:1883",
        "ca_cert": "",
        "client_cert": "",
        "client_key": "",
        "data_dir": "/data",
        "namespace": "edge",
        "credentials_secret": "dev-1-broker",
    }
    docs = [yaml.safe_load(text) for text in components.render(target, params).values()]
    rendered = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Component"}
    assert set(rendered) == {names.AGENT_BROKER, names.AGENT_STATE}
    assert rendered[names.AGENT_STATE]["spec"]["type"] == "state.sqlite"
    broker = {m["name"]: m for m in rendered[names.AGENT_BROKER]["spec"]["metadata"]}
    assert broker["consumerID"]["value"] == "dev-1" and broker["cleanSession"]["value"] == "false"
    assert all(d["scopes"] == [names.DEVICE_AGENT_APP] for d in rendered.values())
    resiliency = next(d for d in docs if d["kind"] == "Resiliency")
    assert set(resiliency["spec"]["targets"]["components"]) == {names.AGENT_BROKER}
    if target == "agent-k3s":
        assert broker["url"]["secretKeyRef"] == {"name": "dev-1-broker", "key": "url"}
        assert all(d["metadata"]["namespace"] == "edge" for d in docs)
    else:
        assert broker["url"]["value"] == "tcp://dev-1:pw@127.0.0.1:1883"


def test_the_chart_target_renders_every_backing_service_of_each_component() -> None:
    files = components.render("aks")
    docs = {path: yaml.safe_load(text) for path, text in files.items()}
    variants: dict[str, dict[str, Any]] = {}
    for path, doc in docs.items():
        if doc["kind"] == "Component":
            choice, variant = path.removesuffix(".yaml").split("/")
            variants.setdefault(choice, {})[variant] = doc
    assert {c: set(v) for c, v in variants.items()} == {
        "state": {"redis", "postgresql", "cosmosdb"},
        "auth": {"redis", "postgresql", "cosmosdb"},  # in the state store's service (the chart picks by its type)
        "pubsub": {"redis", "kafka", "servicebus"},
        "broker": {"mqtt"},
        "artifacts": {"blob", "s3", "local"},
        "events": {"blob", "s3", "local"},
        "secrets": {"kubernetes", "keyvault"},
    }
    for choice, found in variants.items():  # whichever is chosen: the same name and scopes
        assert len({d["metadata"]["name"] for d in found.values()}) == 1, choice
        assert len({tuple(d["scopes"]) for d in found.values()}) == 1, choice
    assert {d["metadata"]["name"] for d in variants["secrets"].values()} == {names.SECRET_STORE}
    resiliency = docs["resiliency.yaml"]["spec"]["targets"]["components"]
    assert set(resiliency) == {names.INTERNAL_PUBSUB, names.DEVICE_BROKER}
    for found in variants.values():  # credentials only from Secrets (or workload identity)
        for doc in found.values():
            for item in doc["spec"]["metadata"]:
                secretish = ("password", "key", "connectionstring")
                if item["name"] != "keyPrefix" and any(word in item["name"].lower() for word in secretish):
                    assert "secretKeyRef" in item, (doc["spec"]["type"], item["name"])


def test_variants_of_one_component_must_be_of_one_kind(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "templates").symlink_to(components.ROOT / "templates")
    mixed = {"type": "pubsub.redis", "metadata": {}}
    target = {
        "components": {
            "STATE_STORE": {
                "choice": "state",
                "scopes": [],
                "variants": {"a": mixed, "b": {**mixed, "type": "state.redis"}},
            }
        }
    }
    (tmp_path / "targets" / "mixed.yaml").write_text(yaml.safe_dump(target))
    monkeypatch.setattr(components, "ROOT", tmp_path)
    with pytest.raises(ValueError, match="not all of one kind"):
        components.render("mixed")
