#!/usr/bin/env bash
# Build crictl and a trimmed CoreDNS (only the plugins a small cluster needs) from their Go
# modules into $CACHE/bin/<name>-<version>, and CoreDNS's FROM-scratch image into
# $CACHE/k8s-images/coredns-<version>.tar. Reuses binaries that answer --version/-version.
#   build-extras.sh [crictl] [coredns]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
bin="$cache/bin"; img="$cache/k8s-images"; mkdir -p "$bin" "$img" "$cache/build"
export GOCACHE="${K8S_GOCACHE:-$cache/build/gocache-k8s}"
crictl_v="${CRICTL_VERSION:?set CRICTL_VERSION, e.g. 1.34.0}"
coredns_v="${COREDNS_VERSION:?set COREDNS_VERSION, e.g. 1.14.7}"
want=("$@"); [[ ${#want[@]} -gt 0 ]] || want=(crictl coredns)
times="$cache/build/k8s-build-times.log"

for w in "${want[@]}"; do
  case "$w" in
  crictl)
    out="$bin/crictl-$crictl_v"
    if [[ -x "$out" ]] && "$out" --version >/dev/null 2>&1; then echo "reuse $out" >&2; continue; fi
    t0=$SECONDS
    tmp=$(mktemp -d)
    (cd "$tmp" && GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v$crictl_v" \
      "sigs.k8s.io/cri-tools/cmd/crictl@v$crictl_v")
    mv "$tmp/crictl" "$out"; rm -rf "$tmp"
    echo "built crictl in $((SECONDS - t0))s" | tee -a "$times" >&2
    echo "$out" ;;
  coredns)
    out="$bin/coredns-$coredns_v"
    image="$img/coredns-$coredns_v.tar"
    if [[ -x "$out" ]] && "$out" -version >/dev/null 2>&1; then
      echo "reuse $out" >&2
      [[ -f "$image" && "$image" -nt "$out" ]] || python3 "$here/mkimage.py" "$image" "tfk8s.local/coredns:$coredns_v" \
        --file "$out:/coredns" --entrypoint '["/coredns"]' >&2
      continue
    fi
    t0=$SECONDS
    src=$(go mod download -json "github.com/coredns/coredns@v$coredns_v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    work="$cache/build/coredns-$coredns_v"
    rm -rf "$work"; cp -r "$src" "$work"; chmod -R u+w "$work"
    # Only these plugins are compiled in (the full set drags in AWS/Azure/GCP SDKs).
    {
      echo "// trimmed by build-extras.sh"
      echo "package plugin"
      echo "import ("
      for p in errors log health ready kubernetes cache loop reload loadbalance metrics hosts forward whoami rewrite template; do
        echo "	_ \"github.com/coredns/coredns/plugin/$p\""
      done
      echo ")"
    } >"$work/core/plugin/zplugin.go"
    (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
    mv "$out.tmp" "$out"; rm -rf "$work"
    echo "built coredns (trimmed) in $((SECONDS - t0))s" | tee -a "$times" >&2
    python3 "$here/mkimage.py" "$image" "tfk8s.local/coredns:$coredns_v" --file "$out:/coredns" \
      --entrypoint '["/coredns"]' >&2
    echo "$out" ;;
  esac
done
