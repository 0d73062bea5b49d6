"""Both charts installed on the local cluster and the story run through them: the cloud chart in
namespace `twinfleet` (Redis and Mosquitto from our images), the device-agent chart in namespace
`device` (one node plays both sides). Devices outside the cluster reach the broker's NodePort and
the APIs through the ingress app's pods on another NodePort."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.devtools.cluster import Cluster
from services.devtools.cluster_suite import CLOUD, CLOUD_CHART, DEVICE, IMAGES, ClusterSuite, saved_images
from services.devtools.stack import publish_first_root
from tests.cluster.conftest import AppImages, deployment
from tests.support.releases import desire, finished, image, publish, software
from tests.support.streams import check, stream
from tests.support.waiting import eventually

pytestmark = pytest.mark.cluster
AGENT_DEVICE = "agent-k8s-1"
WORKLOAD = "workload"


def not_ready(cluster: Cluster, namespace: str) -> list[str]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
    waiting = []
    for pod in pods:
        statuses = pod["status"].get("containerStatuses", [])
        if not statuses or not all(status["ready"] for status in statuses):
            waiting.append(f"{pod['metadata']['name']} {pod['status'].get('phase')}")
    return waiting if pods else ["no pods"]


def wait_ready(cluster: Cluster, namespace: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while waiting := not_ready(cluster, namespace):
        assert time.monotonic() < deadline, f"not ready in {namespace}: {waiting}"
        time.sleep(2)


@pytest.fixture(scope="module")
def suite(cluster: Cluster, test_images: AppImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSuite]:
    began = time.monotonic()
    cluster.import_images(*saved_images(IMAGES))
    installed = ClusterSuite(cluster, Path(tmp_path_factory.mktemp("cluster-suite")), [AGENT_DEVICE])
    installed.timings["images_import_s"] = round(time.monotonic() - began, 1)
    try:
        installed.install_cloud()
        publish_first_root(installed.api_url, installed.headers, installed.release_team.root_path.read_bytes())
        installed.install_agent(AGENT_DEVICE, WORKLOAD, "app")
        cluster.apply(deployment(WORKLOAD, DEVICE, test_images.serve))
        wait_ready(cluster, DEVICE)
        print(f"\ncharts installed: {installed.timings}\n{cluster.status()}")
        yield installed
    finally:
        for namespace in (DEVICE, CLOUD):
            cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=300)
        cluster.kubectl("delete", "pv", "-l", "twinfleet.dev/volumes")


def test_both_charts_install_with_every_pod_ready_and_its_sidecar_injected(suite: ClusterSuite) -> None:
    cluster = suite.cluster
    for namespace in (CLOUD, DEVICE):
        assert not not_ready(cluster, namespace)
    listed = cluster.kubectl("get", "pods", "-n", CLOUD, "-l", f"app.kubernetes.io/instance={CLOUD}", "-o", "json")
    pods = json.loads(listed)
    apps = {pod["metadata"]["labels"]["app.kubernetes.io/name"]: pod for pod in pods["items"]}
    assert set(apps) == {"twin-store", "delta", "events", "commands", "rollout", "firmware", "console", "ingress"}
    for name, pod in apps.items():
        containers = [c["name"] for c in pod["spec"]["containers"]]
        assert "daprd" in containers, f"{name}: no sidecar injected ({containers})"


async def test_devices_outside_the_cluster_converge_while_a_twin_store_pod_is_deleted(suite: ClusterSuite) -> None:
    """Devices on the broker's NodePort stream reports; 30% in, the twin-store's pod is killed
    (deleted with no grace); the StatefulSet makes it again under the same name (its broker
    session); once its API answers again, every twin holds every device's last report."""
    cluster = suite.cluster
    devices, updates = 10, 10
    progress = [0]

    def replace_twin_store_pod() -> None:
        cluster.kubectl("delete", "pod", f"{CLOUD}-twin-store-0", "-n", CLOUD, "--grace-period=0", "--force")
        wait_ready(cluster, CLOUD)
        # Ready is not yet reachable: the ingress's sidecar finds the new pod by the headless
        # `twin-store-dapr` Service's DNS name, whose miss CoreDNS caches for a few seconds (500
        # ERR_DIRECT_INVOKE meanwhile). Its REST API answering again is where the check starts.
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=suite.api_url, headers=suite.headers, timeout=10) as client:
            while client.get("/v1/twins", params={"limit": 1}).status_code != 200:
                assert time.monotonic() < deadline, "the twin-store's API never answered again"
                time.sleep(1)

    async def midway() -> int:
        while progress[0] < devices * updates * 0.3:  # noqa: ASYNC110 - polls a counter the devices bump
            await asyncio.sleep(0.01)
        at = progress[0]
        await asyncio.to_thread(replace_twin_store_pod)
        return at

    interrupting = asyncio.create_task(midway())
    ids = await asyncio.wait_for(stream(suite, progress, devices, updates), 400)
    interrupted_at = await asyncio.wait_for(interrupting, 120)
    assert interrupted_at < devices * updates, "not interrupted mid-stream"
    await check(suite, ids, updates)


@pytest.fixture
async def api(suite: ClusterSuite) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=suite.api_url, headers=suite.headers, timeout=60) as client:
        yield client


def settings_written(cluster: Cluster) -> Any:
    data = cluster.get("configmap", "agent-settings", DEVICE).get("data") or {}
    return json.loads(data["settings.json"]) if "settings.json" in data else None


async def test_a_staged_configuration_reaches_the_agents_configmap_through_the_api_server(
    suite: ClusterSuite, api: httpx.AsyncClient
) -> None:
    """The agent in its pod (the chart's ServiceAccount token, its Role) writes what a staged
    configuration desires into its ConfigMap, through the real API server."""
    await eventually(lambda: software(api, AGENT_DEVICE), timeout=120, what="the agent's first report")
    tagged = await api.patch(f"/v1/twins/{AGENT_DEVICE}/tags", json={"ring": "k8s"})
    assert tagged.status_code == 200, tagged.text
    spec = {
        "id": "k8s-settings",
        "targetCondition": 'tags.ring == "k8s"',
        "content": {"config": {"telemetry": {"interval": 30}, "mode": "eco"}},
        "rollout": {"stages": [{"percent": 50}, {"percent": 100}]},
    }
    created = await api.post("/v1/configurations", json=spec)
    assert created.status_code == 201, created.text
    assert (await api.post("/v1/configurations/k8s-settings/activate")).status_code == 200

    async def written() -> Any:
        return await asyncio.to_thread(settings_written, suite.cluster)

    settings = await eventually(written, timeout=120, what="the agent's ConfigMap written")
    assert settings == {"telemetry": {"interval": 30}, "mode": "eco"}


async def test_a_release_rolls_the_workload_deployment_and_a_broken_one_is_rolled_back(
    suite: ClusterSuite, api: httpx.AsyncClient, test_images: AppImages
) -> None:
    """A release signed into the suite's TUF chain, uploaded, desired: the agent's `k3s` installer
    patches the workload's image and waits for its rollout; a release whose pod never turns ready
    fails the health check and the previous image is patched back."""
    cluster = suite.cluster

    def image_of() -> str:
        workload = cluster.get("deployment", WORKLOAD, DEVICE)
        return str(workload["spec"]["template"]["spec"]["containers"][0]["image"])

    assert image_of() == test_images.serve
    good = await publish(suite, api, WORKLOAD, "2.0.0", image("2.0.0"), image=test_images.serve_next)
    await desire(api, AGENT_DEVICE, good, "2.0.0")
    outcome = await finished(api, AGENT_DEVICE, good, timeout=240)
    assert outcome["status"] == "UPDATED" and outcome["version"] == "2.0.0", outcome
    assert image_of() == test_images.serve_next

    broken = await publish(suite, api, WORKLOAD, "3.0.0", image("3.0.0"), image=test_images.failing)
    await desire(api, AGENT_DEVICE, broken, "3.0.0")
    outcome = await finished(api, AGENT_DEVICE, broken, timeout=400)
    assert outcome["status"] in ("FAILED", "ROLLED_BACK") and outcome["version"] == "2.0.0", outcome
    assert image_of() == test_images.serve_next
    wait_ready(cluster, DEVICE)


def test_helm_upgrade_with_a_changed_value_then_uninstall_leaves_nothing_behind(suite: ClusterSuite) -> None:
    cluster = suite.cluster
    suite.helm(
        "upgrade", CLOUD, str(CLOUD_CHART), "-n", CLOUD,
        "--reuse-values", "--set", "global.logLevel=info", "--wait", "--timeout", "4m",
    )  # fmt: skip
    rollout = cluster.get("deployment", f"{CLOUD}-rollout", CLOUD)
    env = {e["name"]: e.get("value") for e in rollout["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert env.get("LOG_LEVEL") == "info", env
    wait_ready(cluster, CLOUD)
    suite.helm("uninstall", CLOUD, "-n", CLOUD, "--wait", "--timeout", "3m")
    kinds = (
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,networkpolicies,pdb,hpa,pvc,"
        "components.dapr.io,configurations.dapr.io,resiliencies.dapr.io"
    )
    # Kept on purpose (helm.sh/resource-policy: keep): the app and API tokens, the volumes' claims.
    # The pods go after helm returns (the garbage collector removes them with their ReplicaSets).
    deadline = time.monotonic() + 120
    while True:
        left = cluster.kubectl("get", kinds, "-n", CLOUD, "-l", f"app.kubernetes.io/instance={CLOUD}", "-o", "name")
        kept = [name for name in left.split() if name.startswith(("secret/", "persistentvolumeclaim/"))]
        gone = sorted(set(left.split()) - set(kept)) == []
        if gone or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert sorted(set(left.split()) - set(kept)) == []
    for name in kept:
        annotations = json.loads(cluster.kubectl("get", name, "-n", CLOUD, "-o", "json"))["metadata"]["annotations"]
        assert annotations.get("helm.sh/resource-policy") == "keep", name
