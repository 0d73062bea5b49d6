"""Helm charts checked offline: the real helm renders them, kubeconform validates the output
strictly against the Kubernetes schemas of one version, the Dapr CRD schemas and the ServiceMonitor
CRD's schema, all prepared by `make tools` (`make test` does)."""

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

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubeconform: Path
    kubernetes_version: str
    kubernetes_schemas: Path
    crd_schemas: tuple[Path, ...]
    """Dapr's, the Prometheus Operator's: `<group>/<kind>_<version>.json` each."""

    def schema_args(self) -> list[str]:
        k8s = (
            "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
        )
        crd = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
        args = ["-kubernetes-version", self.kubernetes_version, "-schema-location", f"{self.kubernetes_schemas}/{k8s}"]
        for schemas in self.crd_schemas:
            args += ["-schema-location", f"{schemas}/{crd}"]
        return args


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


def _prepared(variable: str, cache: Path, pattern: str, what: str) -> Path:
    found = _explicit(variable, what) or _newest(cache / "schemas", pattern, what)
    if not (found / ".complete").exists():
        pytest.fail(f"{what} not prepared in {found}: run `make tools`")
    return found


def find_tools() -> Tools:
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
    dapr = _prepared("TWINFLEET_DAPR_SCHEMAS", cache, "dapr-*", "Dapr CRD schemas")
    prometheus = _prepared("TWINFLEET_PROMETHEUS_SCHEMAS", cache, "prometheus-operator-*", "ServiceMonitor schema")
    return Tools(helm, kubeconform, version, k8s_root, (dapr, prometheus))


def run(args: Sequence[str | Path], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)


def documents(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def kubeconform(tools: Tools, manifest: str) -> tuple[int, dict[str, int], str]:
    """The one validation every chart test uses: strict, every schema set, a JSON report."""
    args: list[str | Path] = [tools.kubeconform, "-strict", "-summary", "-output", "json", *tools.schema_args(), "-"]
    result = run(args, stdin=manifest)
    report = json.loads(result.stdout)
    return result.returncode, report["summary"], result.stdout + result.stderr


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def assert_rendered_files_current(chart: Path, scratch: Path) -> None:
    """The chart's `files/dapr/` is what `make components` renders from components/ now."""
    command: list[str | Path] = [sys.executable, "-m", "services.devtools", "components"]
    result = run([*command, "--out", scratch / "deploy", "--package", scratch / "package"])
    assert result.returncode == 0, result.stderr
    fresh = scratch / "deploy" / chart.relative_to(ROOT / "deploy") / "files" / "dapr"
    committed = chart / "files" / "dapr"
    names = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*.yaml"))
    assert sorted(str(p.relative_to(committed)) for p in committed.rglob("*.yaml")) == names, "run `make components`"
    for name in names:
        assert (committed / name).read_text() == (fresh / name).read_text(), f"{name}: run `make components`"
