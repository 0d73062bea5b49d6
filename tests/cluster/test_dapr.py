"""Dapr on the local cluster, installed from its own chart with the locally built images: the
injector adds a sidecar to annotated pods, and one app invokes another through the sidecars,
sidecar to sidecar over mTLS with workload certificates from Sentry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.devtools.cluster import Cluster
from tests.cluster.conftest import AppImages, deployment

pytestmark = pytest.mark.cluster

NAMESPACE = "dapr-check"


def _deployment(app: str, image: str) -> str:
    sidecar = {"dapr.io/enabled": "true", "dapr.io/app-id": app, "dapr.io/app-port": "8080"}
    return deployment(app, NAMESPACE, image, sidecar)


@pytest.fixture(scope="module")
def apps(cluster: Cluster, test_images: AppImages) -> Iterator[Cluster]:
    cluster.kubectl("create", "namespace", NAMESPACE)
    try:
        for app in ("echo", "caller"):
            cluster.apply(_deployment(app, test_images.serve))
        for app in ("echo", "caller"):
            cluster.kubectl("rollout", "status", f"deploy/{app}", "-n", NAMESPACE, "--timeout=180s", timeout=200)
        yield cluster
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", timeout=150)


def test_the_injector_adds_a_sidecar_with_a_sentry_certificate(apps: Cluster) -> None:
    name = apps.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=echo", "-o", "jsonpath={.items[0].metadata.name}")
    pod = apps.get("pod", name, NAMESPACE)
    containers = [c["name"] for c in pod["spec"]["containers"]]
    assert containers == ["app", "daprd"]
    assert all(status["ready"] for status in pod["status"]["containerStatuses"])
    configuration = apps.get("configuration", "daprsystem", "dapr-system")
    assert configuration["spec"]["mtls"]["enabled"] is True
    logs = apps.kubectl("logs", name, "-n", NAMESPACE, "-c", "daprd")
    # The sidecar fetched its workload identity (an X.509 SVID) from Sentry before serving.
    assert "Fetching initial identity" in logs
    assert "Security is initialized successfully" in logs
    assert "Starting workload identity expiry watcher" in logs


def test_one_app_invokes_another_through_the_sidecars(apps: Cluster) -> None:
    # The operator creates the `echo-dapr` Service a few seconds after the Deployment (and DNS may
    # hold the miss for its 5 s TTL): the first calls can fail, a later one must answer.
    url = "http://127.0.0.1:3500/v1.0/invoke/echo/method/hello"
    deadline = time.monotonic() + 60
    answer = ""
    while time.monotonic() < deadline:
        try:
            answer = apps.kubectl("exec", "deploy/caller", "-n", NAMESPACE, "-c", "app", "--", "/testapp", "get", url)
            break
        except RuntimeError as error:
            answer = str(error)
            time.sleep(2)
    assert answer.startswith("200 hello from echo-"), answer
    assert answer.rstrip().endswith("(/hello)")
