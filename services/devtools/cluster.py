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


# What `cluster.sh up` (and the kubelet, the CNI plugin, kube-proxy) change on the host, and `down`
# must undo: see docs/architecture.md, "The local cluster".
SYSCTLS = (
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
LINKS = ("tfk8s0", "tfcni0")
OWNER = Path("/run/twinfleet-cluster.owner")
CGROUP = "tfk8s"


def sysctls() -> dict[str, str]:
    return {name: Path("/proc/sys", name).read_text().strip() for name in SYSCTLS}


def leftovers(run_dir: Path, before: Mapping[str, str]) -> list[str]:
    """What of the cluster is still on the host: processes, links, veths on its bridge, iptables
    rules and chains, cgroups, mounts, changed sysctls (against `before`)."""
    found: list[str] = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and any(str(run_dir).encode() in arg for arg in argv):
            found.append(f"process {proc.name}: {argv[0].decode(errors='replace')}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"link {name}" for name in LINKS if f": {name}:" in links or f": {name}@" in links]
    found += [
        f"veth on {LINKS[1]}: {line.split(': ')[1]}" for line in links.splitlines() if f"master {LINKS[1]}" in line
    ]
    for tool in ("iptables-save", "ip6tables-save"):
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([tool, "-t", table], capture_output=True, text=True, check=False).stdout
            found += [f"{tool} {table}: {line}" for line in rules.splitlines() if "KUBE-" in line or "tfk8s" in line]
    found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"*/{CGROUP}")]
    found += [f"owner file {OWNER}"] if OWNER.exists() else []
    mounts = Path("/proc/mounts").read_text().splitlines()
    found += [f"mount {line.split()[1]}" for line in mounts if line.split()[1].startswith(f"{run_dir}/")]
    found += [f"sysctl {name} {before[name]} -> {value}" for name, value in sysctls().items() if before[name] != value]
    return found


class Cluster:
    """One run of the local cluster; `start` reuses one that answers (and then `stop` leaves it)."""

    def __init__(self) -> None:
        self.env = script_env()
        self.run_dir = RUN_DIR
        self.kubeconfig = RUN_DIR / "kubeconfig"
        self.ca = RUN_DIR / "pki" / "ca.crt"
        self.started_here = False
        self.host_before: dict[str, str] = {}

    def _run(self, argv: list[str], timeout: float, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, env=self.env, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} {' '.join(argv[1:])} failed ({result.returncode}): {result.stderr[-3000:]}"
            )
        return result

    def _script(self, *args: str, timeout: float = 600) -> str:
        return self._run([str(SCRIPTS / args[0]), *args[1:]], timeout).stderr

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
        self.host_before = sysctls()
        began = time.monotonic()
        try:
            self._script("cluster.sh", "up")
            up = time.monotonic()
            self._script("dapr.sh", "install")
        except BaseException:
            self.stop()
            raise
        return {"cluster_up_s": up - began, "dapr_install_s": time.monotonic() - up}

    def stop(self) -> list[str]:
        """Down, if started here; what it left on the host (nothing, when `down` did its job)."""
        if not self.started_here:
            return []
        self._script("cluster.sh", "down", "--purge")
        self.started_here = False
        return leftovers(self.run_dir, self.host_before)

    def import_images(self, *tarballs: Path) -> None:
        self._script("cluster.sh", "import", *map(str, tarballs))

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        argv = [str(RUN_DIR / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, timeout, input).stdout

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
