#!/usr/bin/env bash
# Tools to check the device agent's K3s chart offline, built into the cache outside the repository
# (reused when already there):
#   bin/helm-<v>, bin/kubeconform-<v>        built from their Go modules at the pinned versions
#   schemas/kubernetes/v<k8s>-standalone[-strict]/<kind>-<group>-<version>.json
#                                            Kubernetes JSON schemas (kubeconform's default layout)
#   schemas/dapr-<v>/dapr.io/<kind>_<version>.json
#                                            the Dapr CRDs of the pinned runtime, converted with
#                                            kubeconform's own openapi2jsonschema.py
#   schemas/prometheus-operator-<v>/monitoring.coreos.com/servicemonitor_v1.json
#                                            the ServiceMonitor CRD (the cloud chart's optional
#                                            metrics), from the operator's Go module, the same way
# Validate with:
#   kubeconform -strict -kubernetes-version <k8s> \
#     -schema-location "$cache/schemas/kubernetes/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
#     -schema-location "$cache/schemas/dapr-<v>/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
#     -schema-location "$cache/schemas/prometheus-operator-<v>/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
set -euo pipefail
helm_version="${HELM_VERSION:?set HELM_VERSION, e.g. 3.22.0}"
kubeconform_version="${KUBECONFORM_VERSION:?set KUBECONFORM_VERSION, e.g. 0.8.0}"
k8s_version="${KUBERNETES_VERSION:?set KUBERNETES_VERSION, e.g. 1.31.0}"
dapr_version="${DAPR_RUNTIME_VERSION:?set DAPR_RUNTIME_VERSION, e.g. 1.18.0}"
prometheus_version="${PROMETHEUS_OPERATOR_VERSION:?set PROMETHEUS_OPERATOR_VERSION, e.g. 0.85.0}"
python="${PYTHON:-python3}"  # needs pip and PyYAML (the project's virtualenv has both)
if [[ "$python" == */* ]]; then python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"; fi
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
# The Kubernetes schemas come from a PyPI package that ships them for every minor since 1.25 (as
# JSON schemas sharing one definitions file); we make each kind's file standalone.
k8s_schemas_wheel="kubernetes-validate==1.37.0"
k8s_schemas_sha256="85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"

bin="$cache/bin"
helm="$bin/helm-$helm_version"
kubeconform="$bin/kubeconform-$kubeconform_version"
k8s_schemas="$cache/schemas/kubernetes"
dapr_schemas="$cache/schemas/dapr-$dapr_version"
prometheus_schemas="$cache/schemas/prometheus-operator-$prometheus_version"
mkdir -p "$bin" "$cache/build" "$cache/schemas"
export CGO_ENABLED=0

module_dir() { go mod download -json "$1" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

# go install builds module@version outside any module; -s -w (no symbol tables) links faster.
build() {  # name out module-path@version ldflags
  local gobin="$cache/build/gobin-$1"
  rm -rf "$gobin"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w $4" "$3"
  mv "$gobin/$1" "$2"
  rm -rf "$gobin"
}

if ! { [[ -x "$helm" ]] && "$helm" version --short >/dev/null 2>&1; }; then
  echo "building helm v$helm_version (the first build takes about two minutes on 2 cores)" >&2
  # The Kubernetes version helm assumes without a cluster follows its client-go, as in helm's Makefile.
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$(module_dir "helm.sh/helm/v3@v$helm_version")/go.mod")
  minor=$(cut -d. -f2 <<<"$client_go")
  ldflags="-X helm.sh/helm/v3/internal/version.version=v$helm_version"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$minor"
  done
  build helm "$helm" "helm.sh/helm/v3/cmd/helm@v$helm_version" "$ldflags"
fi

if ! { [[ -x "$kubeconform" ]] && "$kubeconform" -v >/dev/null 2>&1; }; then
  echo "building kubeconform v$kubeconform_version" >&2
  build kubeconform "$kubeconform" "github.com/yannh/kubeconform/cmd/kubeconform@v$kubeconform_version" \
    "-X main.version=v$kubeconform_version"
fi

k8s_done="$k8s_schemas/v$k8s_version-standalone-strict/.complete"
if [[ ! -f "$k8s_done" ]]; then
  echo "preparing Kubernetes $k8s_version JSON schemas" >&2
  work="$cache/build/k8s-schemas"
  rm -rf "$work"
  mkdir -p "$work"
  echo "$k8s_schemas_wheel --hash=sha256:$k8s_schemas_sha256" >"$work/requirements.txt"
  "$python" -m pip download -q --no-deps --only-binary=:all: --require-hashes \
    -r "$work/requirements.txt" -d "$work"
  "$python" - "$work"/*.whl "$k8s_version" "$work/out" <<'EOF'
"""Each resource kind's schema of one Kubernetes version as a standalone file: the definitions it
uses (transitively) copied from the shared definitions file into its own `$defs`."""
import json
import re
import sys
import zipfile
from pathlib import Path

wheel, version, out = sys.argv[1:4]
shared = "/api/_definitions.json#/$defs/"  # how kinds refer to definitions; definitions say "#/$defs/"
ref = re.compile(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')
with zipfile.ZipFile(wheel) as archive:
    for variant, layout in (("local", "standalone"), ("local-strict", "standalone-strict")):
        base = f"kubernetes_validate/kubernetes-json-schema/v{version}-{variant}/"
        definitions = json.loads(archive.read(base + "_definitions.json"))["$defs"]
        uses = {name: set(ref.findall(json.dumps(schema))) for name, schema in definitions.items()}
        target = Path(out) / f"v{version}-{layout}"
        target.mkdir(parents=True)
        for member in archive.namelist():
            if not member.startswith(base) or "/" in member[len(base):]:
                continue
            schema = json.loads(archive.read(member))
            if "x-kubernetes-group-version-kind" not in schema:
                continue  # only resource kinds are looked up
            pending, needed = list(ref.findall(json.dumps(schema))), set()
            while pending:
                name = pending.pop()
                if name not in needed:
                    needed.add(name)
                    pending.extend(uses[name])
            schema.pop("$id", None)
            schema["$defs"] = {name: definitions[name] for name in sorted(needed)}
            text = json.dumps(schema, indent=1).replace('"' + shared, '"#/$defs/')
            (target / member[len(base):]).write_text(text + "\n")
        if not any(target.iterdir()):
            sys.exit(f"no schemas for Kubernetes {version} in {wheel}")
EOF
  for layout in standalone standalone-strict; do
    rm -rf "$k8s_schemas/v$k8s_version-$layout"
    mkdir -p "$k8s_schemas"
    mv "$work/out/v$k8s_version-$layout" "$k8s_schemas/"
  done
  touch "$k8s_done"
  rm -rf "$work"
fi

if [[ ! -f "$dapr_schemas/.complete" ]]; then
  echo "converting the Dapr $dapr_version CRDs to JSON schemas" >&2
  crds="$(module_dir "github.com/dapr/dapr@v$dapr_version")/charts/dapr/crds"
  convert="$(module_dir "github.com/yannh/kubeconform@v$kubeconform_version")/scripts/openapi2jsonschema.py"
  work="$cache/build/dapr-schemas"
  rm -rf "$work"
  mkdir -p "$work/dapr.io"
  # The script writes <kind>_<version>.json into the current directory; strict at the root too.
  (cd "$work/dapr.io" && DENY_ROOT_ADDITIONAL_PROPERTIES=1 "$python" "$convert" "$crds"/*.yaml >/dev/null)
  for kind in component configuration resiliency subscription; do
    [[ -f "$work/dapr.io/${kind}_v1alpha1.json" ]] || { echo "no $kind schema from $crds" >&2; exit 1; }
  done
  touch "$work/.complete"
  rm -rf "$dapr_schemas"
  mv "$work" "$dapr_schemas"
fi

if [[ ! -f "$prometheus_schemas/.complete" ]]; then
  echo "converting the Prometheus Operator $prometheus_version ServiceMonitor CRD to a JSON schema" >&2
  crd="$(module_dir "github.com/prometheus-operator/prometheus-operator@v$prometheus_version")/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
  convert="$(module_dir "github.com/yannh/kubeconform@v$kubeconform_version")/scripts/openapi2jsonschema.py"
  work="$cache/build/prometheus-schemas"
  rm -rf "$work"
  mkdir -p "$work/monitoring.coreos.com"
  (cd "$work/monitoring.coreos.com" && DENY_ROOT_ADDITIONAL_PROPERTIES=1 "$python" "$convert" "$crd" >/dev/null)
  [[ -f "$work/monitoring.coreos.com/servicemonitor_v1.json" ]] || { echo "no ServiceMonitor schema from $crd" >&2; exit 1; }
  touch "$work/.complete"
  rm -rf "$prometheus_schemas"
  mv "$work" "$prometheus_schemas"
fi

echo "$helm"
echo "$kubeconform"
echo "$k8s_schemas/v$k8s_version-standalone-strict"
echo "$dapr_schemas"
echo "$prometheus_schemas"
