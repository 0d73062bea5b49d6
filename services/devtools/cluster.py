"""The local single-node Kubernetes cluster (`make cluster`, the `cluster` tests) seen from Python.

The cluster itself is `scripts/cluster/` (build scripts, `cluster.sh` up/down/status/import,
`dapr.sh`); this module runs those scripts with the Makefile's pinned versions, and talks to the
cluster with its kubectl and kubeconfig. Its run directory is the repository's `.run/cluster`
(git-ignored), shared with `make cluster`: a cluster that is already up is reused, and left up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "cluster"
RUN_DIR = ROOT / ".run" / "cluster"

# Makefile variable -> the environment variable the scripts take (and the Makefile exports as
# TWINFLEET_<name>, which wins over the Makefile's own line when set).
PINNED = {
    "CLUSTER_KUBERNETES_VERSION": "K8S_VERSION",
    "CRICTL_VERSION": "CRICTL_VERSION",
    "COREDNS_VERSION": "COREDNS_VERSION",
    "DAPR_RUNTIME_VERSION": "DAPR_RUNTIME_VERSION",
    "HELM_VERSION": "HELM_VERSION",
}


def makefile_value(name: str) -> str:
    """A `NAME := value` line of the Makefile: the one place the versions are pinned."""
    match = re.search(rf"^{name} := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    if match is None:
        raise KeyError(f"the Makefile pins no {name}")
    return match.group(1)


def cache_dir() -> Path:
    return Path(os.environ.get("TWINFLEET_CACHE") or Path.home() / ".cache" / "twinfleet")


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    for variable, script_name in PINNED.items():
        env[script_name] = os.environ.get(f"TWINFLEET_{variable}") or makefile_value(variable)
    env["HELM"] = os.environ.get("TWINFLEET_HELM") or str(cache_dir() / "bin" / f"helm-{env['HELM_VERSION']}")
    env.setdefault("TWINFLEET_CACHE", str(cache_dir()))
    env["TWINFLEET_CLUSTER_RUN"] = str(RUN_DIR)
    return env


class Cluster:
    """One run of the local cluster; `start` reuses one that answers (and then `stop` leaves it)."""

    def __init__(self) -> None:
        self.env = script_env()
        self.run_dir = RUN_DIR
        self.kubeconfig = RUN_DIR / "kubeconfig"
        self.ca = RUN_DIR / "pki" / "ca.crt"
        self.started_here = False

    def _script(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(SCRIPTS / args[0]), *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result.stderr

    @property
    def api_url(self) -> str:
        """The API server as the kubeconfig names it (the node's address: nothing binds beyond it)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    def running(self) -> bool:
        return subprocess.run([str(SCRIPTS / "cluster.sh"), "running"], env=self.env, check=False).returncode == 0

    def start(self) -> dict[str, float]:
        """Up with Dapr installed; the seconds each took (empty when an existing cluster is reused)."""
        if self.running():
            return {}
        if os.geteuid() != 0:
            raise PermissionError("the local cluster needs root (network namespaces, cgroups, iptables)")
        self.started_here = True
        began = time.monotonic()
        try:
            self._script("cluster.sh", "up")
            up = time.monotonic()
            self._script("dapr.sh", "install")
        except BaseException:
            self.stop()
            raise
        return {"cluster_up_s": up - began, "dapr_install_s": time.monotonic() - up}

    def stop(self) -> None:
        if self.started_here:
            self._script("cluster.sh", "down", "--purge")
            self.started_here = False

    def import_images(self, *tarballs: Path) -> None:
        self._script("cluster.sh", "import", *map(str, tarballs))

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(RUN_DIR / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        self.kubectl("apply", *(["-n", namespace] if namespace else []), "-f", "-", input=manifest)

    def get(self, kind: str, name: str, namespace: str) -> Mapping[str, Any]:
        value: Mapping[str, Any] = json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json"))
        return value

    def service_account_credentials(self, namespace: str, account: str, directory: Path) -> Path:
        """What a pod of `account` finds mounted: a bound token (TokenRequest, 1 h) and the CA."""
        directory.mkdir(parents=True, exist_ok=True)
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration", "1h").strip()
        (directory / "token").write_text(token)
        (directory / "ca.crt").write_bytes(self.ca.read_bytes())
        return directory

    def status(self) -> str:
        """The components' pids and resident memory, and the pods' cgroup memory."""
        result = subprocess.run(
            [str(SCRIPTS / "cluster.sh"), "status"], env=self.env, capture_output=True, text=True, check=False
        )
        return result.stdout
