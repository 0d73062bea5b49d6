"""The `cluster` tests' fixtures: the local single-node Kubernetes with Dapr (`make cluster`), and
the tests' own small image, built here without a daemon and imported into the cluster's containerd.

The cluster is brought up once for this package's tests (cluster.sh up + dapr.sh install) and down
when they are done, so it does not sit beside the rest of the suite; one that `make cluster` already
started is reused and left running.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.devtools.cluster import SCRIPTS, Cluster, cache_dir
from services.devtools.cluster_suite import deployment as deployment_of

TESTAPP = Path(__file__).parent / "testapp"
MKIMAGE = ("python3", str(SCRIPTS / "mkimage.py"))


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    run = Cluster()
    timings = run.start()
    if timings:
        print(f"\ncluster started for the cluster tests: {timings}")
    try:
        yield run
    finally:
        print(f"\nnode after the cluster tests:\n{run.status()}")
        left = run.stop()
    # Down undoes every host change up made: no process, link, rule, cgroup, mount or sysctl left.
    assert not left, "the cluster left on the host:\n" + "\n".join(left)


@dataclass(frozen=True)
class AppImages:
    """Tags of the test app's image, as the kubelet asks for them (imported, never pulled)."""

    serve: str
    """`testapp serve` answers HTTP."""
    serve_next: str
    """The same bytes under another tag: a release a Deployment can be moved to."""
    failing: str
    """Exits at once: a release whose rollout never completes."""


def _mkimage(out: Path, ref: str, binary: Path, entrypoint: str) -> None:
    subprocess.run(
        [*MKIMAGE, str(out), ref, "--file", f"{binary}:/testapp", "--entrypoint", entrypoint, "--user", "65532:65532"],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="package")
def test_images(cluster: Cluster) -> AppImages:
    """Built once per source (keyed by its hash) into the cache, imported into the cluster."""
    digest = hashlib.sha256()
    for path in sorted(TESTAPP.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    key = digest.hexdigest()[:12]
    binary = cache_dir() / "bin" / f"cluster-testapp-{key}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), "."],
            cwd=TESTAPP,
            env={**os.environ, "CGO_ENABLED": "0"},
            check=True,
        )
    images = cache_dir() / "k8s-images"
    images.mkdir(parents=True, exist_ok=True)
    tags = AppImages(
        serve=f"tfk8s.local/testapp:{key}",
        serve_next=f"tfk8s.local/testapp:{key}-next",
        failing=f"tfk8s.local/testapp:{key}-failing",
    )
    tarballs = []
    for ref, entrypoint in (
        (tags.serve, '["/testapp"]'),
        (tags.serve_next, '["/testapp"]'),
        (tags.failing, '["/testapp", "fail"]'),
    ):
        out = images / f"testapp-{ref.rsplit(':', 1)[1]}.tar"
        if not out.exists():
            _mkimage(out, ref, binary, entrypoint)
        tarballs.append(out)
    cluster.import_images(*tarballs)
    return tags


def deployment(name: str, namespace: str, image: str, annotations: dict[str, str] | None = None) -> str:
    """A Deployment of one `testapp serve` replica in container `app`, ready once it answers."""
    container = {
        "name": "app",
        "image": image,
        "args": ["serve", ":8080"],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
    }
    return json.dumps(deployment_of(name, namespace, container, annotations=annotations))
