"""The device agent's Kubernetes writers against a real API server, under the RBAC the device-agent
chart (deploy/k3s/device-agent) grants: the ConfigMap writer (`handlers.ConfigMapWriter`) and the
`k3s` software installer (`software.DeploymentInstaller`), which patches a real Deployment's image,
waits until its rollout completes, and rolls back when it does not.

They run from the host, as the agent would in its pod: with a token of the chart's ServiceAccount
(TokenRequest, as the kubelet mounts it) and the cluster's CA, against the API server's address.
The chart's ServiceAccount, Role, RoleBinding and ConfigMap are rendered with helm and applied; the
agent's own Deployment is not (its image comes with the container images, issue 11).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.device_agent.handlers import ConfigMapWriter, HandlerFailed
from services.device_agent.software import DeploymentInstaller, InstallFailed
from services.devtools.cluster import ROOT, Cluster
from services.domain.software.release import Release
from tests.cluster.conftest import AppImages, deployment

pytestmark = pytest.mark.cluster

NAMESPACE = "device"
RELEASE = "agent"
APP = "workload"
CHART = ROOT / "deploy" / "k3s" / "device-agent"


def chart_access(cluster: Cluster, root: Path) -> str:
    """The chart's ServiceAccount, Role, RoleBinding and ConfigMap, as `helm install` makes them,
    with the `k3s` installer pointed at the workload (`root`: a TUF root file, which the chart
    requires with an installer)."""
    values = [f"device.id={NAMESPACE}-1", "software.installer=k3s", "software.firmwareUrl=http://firmware.invalid"]
    values += [f"software.k3s.deployment={APP}", "software.k3s.container=app"]
    args = [cluster.env["HELM"], "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for template in ("serviceaccount", "rbac", "configmap"):
        args += ["--show-only", f"templates/{template}.yaml"]
    for value in values:
        args += ["--set", value]
    args += ["--set-file", f"software.trustedRoot={root}"]
    rendered = subprocess.run(args, capture_output=True, text=True, check=False)
    assert rendered.returncode == 0, rendered.stderr
    return rendered.stdout


def workload(image: str, name: str = APP) -> str:
    return deployment(name, NAMESPACE, image)


@pytest.fixture(scope="module")
def device(cluster: Cluster, test_images: AppImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The device's namespace with the chart's access objects and a workload; the agent's
    credentials (token + CA) in a directory laid out like a pod's service account mount."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    try:
        root = tmp_path_factory.mktemp("release") / "1.root.json"
        root.write_text('{"signed": {"_type": "root", "version": 1}, "signatures": []}')
        cluster.apply(chart_access(cluster, root))
        cluster.apply(workload(test_images.serve))
        cluster.kubectl("create", "configmap", "not-the-agents", "-n", NAMESPACE)
        cluster.kubectl("rollout", "status", f"deploy/{APP}", "-n", NAMESPACE, "--timeout=120s", timeout=150)
        yield cluster.service_account_credentials(NAMESPACE, RELEASE, tmp_path_factory.mktemp("serviceaccount"))
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", timeout=150)


def release(image: str) -> Release:
    return Release(
        artifact=image, name="workload", version=image.rsplit(":", 1)[1], length=0, sha256="", custom={"image": image}
    )


def image_of(cluster: Cluster) -> str:
    deployment = cluster.get("deployment", APP, NAMESPACE)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_the_configmap_writer_patches_the_agents_configmap(cluster: Cluster, device: Path) -> None:
    writer = ConfigMapWriter(f"{RELEASE}-settings", NAMESPACE, api=cluster.api_url, credentials=device)
    await writer.write({"telemetry": {"interval": 30}, "mode": "eco"})
    written = cluster.get("configmap", f"{RELEASE}-settings", NAMESPACE)
    assert json.loads(written["data"]["settings.json"]) == {"mode": "eco", "telemetry": {"interval": 30}}

    await writer.write({"mode": "full"})  # the whole settings replace the old ones
    written = cluster.get("configmap", f"{RELEASE}-settings", NAMESPACE)
    assert json.loads(written["data"]["settings.json"]) == {"mode": "full"}


async def test_the_configmap_writer_may_not_touch_another_configmap(cluster: Cluster, device: Path) -> None:
    writer = ConfigMapWriter("not-the-agents", NAMESPACE, api=cluster.api_url, credentials=device)
    with pytest.raises(HandlerFailed, match="refused: 403"):
        await writer.write({"mode": "eco"})
    assert cluster.get("configmap", "not-the-agents", NAMESPACE).get("data") is None


async def test_the_k3s_installer_moves_the_deployment_to_the_release_image(
    cluster: Cluster, device: Path, test_images: AppImages, tmp_path: Path
) -> None:
    installer = DeploymentInstaller(NAMESPACE, APP, "app", api=cluster.api_url, timeout=90, credentials=device)
    target = release(test_images.serve_next)
    await installer.install(tmp_path / "unused", target)
    assert installer.previous_image == test_images.serve
    assert await installer.healthy(target)
    await installer.commit()
    assert image_of(cluster) == test_images.serve_next
    deployment = cluster.get("deployment", APP, NAMESPACE)
    assert deployment["status"]["readyReplicas"] == 1
    assert deployment["status"]["updatedReplicas"] == 1


async def test_the_k3s_installer_rolls_back_a_release_that_never_becomes_ready(
    cluster: Cluster, device: Path, test_images: AppImages, tmp_path: Path
) -> None:
    installer = DeploymentInstaller(NAMESPACE, APP, "app", api=cluster.api_url, timeout=20, credentials=device)
    running = image_of(cluster)
    broken = release(test_images.failing)
    await installer.install(tmp_path / "unused", broken)
    assert image_of(cluster) == test_images.failing
    assert not await installer.healthy(broken)  # its pod exits at once: never ready
    await installer.rollback()
    assert image_of(cluster) == running
    cluster.kubectl("rollout", "status", f"deploy/{APP}", "-n", NAMESPACE, "--timeout=90s", timeout=120)
    assert await installer.healthy(release(running))


async def test_the_k3s_installer_may_not_patch_another_deployment(
    cluster: Cluster, device: Path, test_images: AppImages, tmp_path: Path
) -> None:
    cluster.apply(workload(test_images.serve, name="other"))
    installer = DeploymentInstaller(NAMESPACE, "other", "app", api=cluster.api_url, credentials=device)
    with pytest.raises(InstallFailed, match="cannot read the Deployment: 403"):
        await installer.install(tmp_path / "unused", release(test_images.serve_next))
