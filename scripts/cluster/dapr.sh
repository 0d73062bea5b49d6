#!/usr/bin/env bash
# Install Dapr's own Helm chart (charts/dapr of the github.com/dapr/dapr module at
# DAPR_RUNTIME_VERSION) on the local cluster, its images pointed at the local builds
# (build-dapr-control-plane.sh) imported into the cluster's containerd, mTLS by Sentry on.
#   dapr.sh install     install or upgrade, wait until the control plane is Ready
#   dapr.sh uninstall
# Env: DAPR_RUNTIME_VERSION, HELM (the helm binary), TWINFLEET_CACHE; cluster.sh's variables.
# DAPR_SCHEDULER_REPLICAS=3 keeps the chart's three scheduler members (default: one).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${DAPR_RUNTIME_VERSION:?set DAPR_RUNTIME_VERSION, e.g. 1.18.0}"
helm="${HELM:?set HELM to the helm binary (make tools builds it)}"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
eval "$("$here/cluster.sh" env)"
T0=$SECONDS
log() { echo "[dapr $((SECONDS - T0))s] $*" >&2; }

if [[ "${1:-}" == uninstall ]]; then
  "$helm" uninstall dapr -n dapr-system --wait --timeout 120s 2>/dev/null || true
  exit 0
fi
[[ "${1:-}" == install ]] || { sed -n '2,8p' "$0"; exit 2; }

"$here/cluster.sh" import "$cache"/k8s-images/dapr-{operator,injector,sentry,placement,scheduler,daprd}-"$version".tar

src=$(go mod download -json "github.com/dapr/dapr@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
chart="$cache/build/dapr-chart-$version"
rm -rf "$chart"; cp -r "$src/charts/dapr" "$chart"; chmod -R u+w "$chart"
# The 1.18 chart hard-codes a 3-member embedded-etcd scheduler StatefulSet (dapr_scheduler.replicaCount
# changes nothing). On 2 cores one member is enough: patch replicas and --etcd-initial-cluster.
if [[ "${DAPR_SCHEDULER_REPLICAS:-1}" == 1 ]]; then
  python3 - "$chart/charts/dapr_scheduler/templates/dapr_scheduler_statefulset.yaml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
patched = text.replace("  replicas: 3\n", "  replicas: 1\n", 1)
patched = re.sub(r'(- "dapr-scheduler-server-0=https://[^,"]+:2380),[^"]+"', r'\1"', patched, count=1)
if patched == text:
    sys.exit(f"{path}: the scheduler's replicas/initial cluster were not found (chart changed?)")
open(path, "w").write(patched)
PY
fi

log "helm upgrade --install"
# No StorageClass exists here: scheduler and placement keep their state in memory (emptyDir).
# The injector fails open (failurePolicy Ignore): --wait, so that apps come after it is Ready.
"$helm" upgrade --install dapr "$chart" -n dapr-system --create-namespace --wait --timeout 300s \
  --set global.registry=tfk8s.local/dapr --set global.tag="$version" \
  --set global.imagePullPolicy=IfNotPresent \
  --set global.mtls.enabled=true \
  --set global.ha.enabled=false \
  --set global.prometheus.enabled=false \
  --set dapr_scheduler.cluster.inMemoryStorage=true \
  --set dapr_placement.cluster.forceInMemoryLog=true \
  --set dapr_sidecar_injector.sidecarImagePullPolicy=IfNotPresent >/dev/null
kubectl -n dapr-system rollout status deploy/dapr-sidecar-injector --timeout=120s >/dev/null
log "control plane ready"
