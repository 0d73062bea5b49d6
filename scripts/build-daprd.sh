#!/usr/bin/env bash
# Build the Dapr sidecar (daprd) from its Go module at the pinned runtime version, with the stable
# component set, into a cache outside the repository. Reuses the binary when it is already there.
# dapr's go.mod carries replace directives, so `go install module@version` refuses it; we build
# inside a writable copy of the downloaded module instead.
#
# DAPR_KEEP_COMPONENTS (space-separated file stems of cmd/daprd/components, e.g. "pubsub_mqtt3
# state_sqlite") builds a daprd with only those components instead: the device's sidecar, which
# links none of the cloud SDKs and so starts in a fraction of the memory. DAPR_BINARY_NAME names
# the output (default daprd-<version>).
set -euo pipefail
version="${DAPR_RUNTIME_VERSION:?set DAPR_RUNTIME_VERSION, e.g. 1.18.3}"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
out="$cache/bin/${DAPR_BINARY_NAME:-daprd-$version}"
if [[ -x "$out" ]] && "$out" --version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/bin" "$cache/build"
src_dir=$(go mod download -json "github.com/dapr/dapr@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d "$cache/build/dapr-$version.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$src_dir/." "$work"
chmod -R u+w "$work"
cd "$work"
if [[ -n "${DAPR_KEEP_COMPONENTS:-}" ]]; then
  # Every component file but the kept ones (and the build-tag guard) goes.
  for f in cmd/daprd/components/*.go; do
    stem=$(basename "$f" .go)
    [[ "$stem" == zz_notag ]] && continue
    [[ " $DAPR_KEEP_COMPONENTS " == *" $stem "* ]] || rm -f "$f"
  done
  for c in $DAPR_KEEP_COMPONENTS; do
    [[ -f "cmd/daprd/components/$c.go" ]] || { echo "no daprd component $c" >&2; exit 1; }
  done
else
  # Components we never use and whose modules the package proxy does not serve are left out.
  for c in ${DAPR_EXCLUDE_COMPONENTS:-}; do rm -f "cmd/daprd/components/$c.go"; done
fi
echo "building $(basename "$out") (components: ${DAPR_KEEP_COMPONENTS:-stable}) — first build takes a while" >&2
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -tags stablecomponents \
  -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$version" \
  -o "$out.tmp" ./cmd/daprd
mv "$out.tmp" "$out"
echo "$out"
