#!/usr/bin/env bash
# Build Dapr's control plane (operator, injector, sentry, placement, scheduler) from the
# github.com/dapr/dapr module at DAPR_RUNTIME_VERSION into $CACHE/bin/dapr-<name>-<version>, in one
# go build invocation (shared packages compile once), then one FROM-scratch image tarball per binary
# and one of the sidecar (daprd from scripts/build-daprd.sh, built first if missing) in
# $CACHE/k8s-images/dapr-<name>-<version>.tar, tagged tfk8s.local/dapr/<name>:<version> (the chart's
# {registry}/{name}:{tag} layout). Reused when already there (the version is the key).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${DAPR_RUNTIME_VERSION:?set DAPR_RUNTIME_VERSION, e.g. 1.18.0}"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
bin="$cache/bin"; img="$cache/k8s-images"; mkdir -p "$bin" "$img" "$cache/build"
# The Go build cache scripts/build-daprd.sh filled (the control plane shares most of daprd's
# packages), unless DAPR_GOCACHE names another.
[[ -z "${DAPR_GOCACHE:-}" ]] || export GOCACHE="$DAPR_GOCACHE"
times="$cache/build/k8s-build-times.log"
cp_names=(operator injector sentry placement scheduler)
ld="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$version -X github.com/dapr/dapr/pkg/buildinfo.gitversion=v$version -X github.com/dapr/dapr/pkg/buildinfo.gitcommit=module-v$version -X github.com/dapr/kit/logger.DaprVersion=$version"

missing=()
for n in "${cp_names[@]}"; do
  [[ -x "$bin/dapr-$n-$version" ]] || missing+=("$n")
done
"$here/../build-daprd.sh" >/dev/null  # the sidecar the injector injects (DAPR_EXCLUDE_COMPONENTS)

if [[ ${#missing[@]} -gt 0 ]]; then
  src=$(go mod download -json "github.com/dapr/dapr@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  work="$cache/build/dapr-cp-$version"
  rm -rf "$work"; cp -r "$src" "$work"; chmod -R u+w "$work"
  cd "$work"
  # Some pinned module versions are refused by the module proxy here (403 "not available"):
  # replace them by the nearest version it serves. go-etcd-cron v0.12.5 -> v0.12.6 (scheduler only).
  for r in ${DAPR_MOD_REPLACE:-github.com/diagridio/go-etcd-cron=github.com/diagridio/go-etcd-cron@v0.12.6}; do
    go mod edit -replace="$r"
  done
  pkgs=(); for n in "${missing[@]}"; do pkgs+=("./cmd/$n"); done
  mkdir -p _out; t0=$SECONDS
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -p 2 -trimpath -ldflags "$ld" -o _out/ "${pkgs[@]}"
  echo "built dapr ${missing[*]} in $((SECONDS - t0))s" | tee -a "$times" >&2
  for n in "${missing[@]}"; do mv "_out/$n" "$bin/dapr-$n-$version"; done
  cd /; rm -rf "$work"
fi

for n in "${cp_names[@]}" daprd; do
  f="$bin/dapr-$n-$version"; [[ $n == daprd ]] && f="$bin/daprd-$version"
  out="$img/dapr-$n-$version.tar"
  [[ -f "$out" && "$out" -nt "$f" ]] && continue
  python3 "$here/mkimage.py" "$out" "tfk8s.local/dapr/$n:$version" --file "$f:/$n" \
    --entrypoint "[\"/$n\"]" --user 65532:65532 >&2
done
ls "$img"/dapr-*-"$version".tar
