#!/usr/bin/env bash
# Build the Kubernetes binaries of the local cluster from the k8s.io/kubernetes Go module (its
# whole source is on the Go module proxy) into $CACHE/bin/<name>-<version>, and the pod sandbox
# ("pause") image from the same source into $CACHE/k8s-images/pause-<tag>.tar. Reused when already
# there (the version is the key); only the missing binaries are built, in ONE `go build`
# invocation so that shared packages compile once.
#
#   build-kubernetes.sh                      # apiserver, controller-manager, scheduler, kubelet, kubectl, kube-proxy, pause
#   build-kubernetes.sh kubelet kube-proxy   # just these
#   BUILD_MODE=each build-kubernetes.sh      # one go build per binary (per-binary times)
#
# Env: K8S_VERSION, TWINFLEET_CACHE (~/.cache/twinfleet), K8S_GOCACHE (the cluster builds' own
#      GOCACHE, default $CACHE/build/gocache-k8s), BUILD_P (go build -p, default 2).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${K8S_VERSION:?set K8S_VERSION, e.g. 1.34.3}"
pause_tag="${PAUSE_VERSION:-3.10.1}"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
bin="$cache/bin"
work="$cache/build/kubernetes-$version"
export GOCACHE="${K8S_GOCACHE:-$cache/build/gocache-k8s}"
mode="${BUILD_MODE:-together}"
p="${BUILD_P:-2}"
mkdir -p "$bin" "$cache/build" "$GOCACHE"

all=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy pause)
want=("$@"); [[ ${#want[@]} -gt 0 ]] || want=("${all[@]}")
pause_tar="$cache/k8s-images/pause-$pause_tag.tar"

missing=()
want_pause=0
for b in "${want[@]}"; do
  if [[ "$b" == pause ]]; then
    [[ -f "$pause_tar" ]] || want_pause=1
    continue
  fi
  ask=(--version); [[ "$b" == kubectl ]] && ask=(version --client)
  if [[ -x "$bin/$b-$version" ]] && "$bin/$b-$version" "${ask[@]}" >/dev/null 2>&1; then
    echo "reuse $bin/$b-$version" >&2
  else
    missing+=("$b")
  fi
done
[[ ${#missing[@]} -gt 0 || $want_pause == 1 ]] || exit 0

# Writable source copy, prepared once and kept (also used for build/pause/linux/pause.c).
if [[ ! -f "$work/.prepared" ]]; then
  src=$(go mod download -json "k8s.io/kubernetes@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$work"
  cp -r "$src" "$work"
  chmod -R u+w "$work"
  # The module zip leaves out staging/src/k8s.io/* (nested modules) and vendor/ is empty:
  # point the staging replaces at the published k8s.io/X v0.<minor>.<patch> modules instead.
  stag="0.${version#*.}"
  sed -i -E "s#^(\s*k8s\.io/[a-z0-9-]+) => \./staging/src/(k8s\.io/[a-z0-9-]+)\s*\$#\1 => \2 v$stag#" "$work/go.mod"
  rm -f "$work/go.work" "$work/go.work.sum"
  rm -rf "$work/vendor"
  touch "$work/.prepared"
fi

major="${version%%.*}"; rest="${version#*.}"; minor="${rest%%.*}"
ld="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ld+=" -X $pkg.gitVersion=v$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=module-v$version -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$work"
if [[ $want_pause == 1 ]]; then
  # The sandbox every pod's containers share; its tag is what containerd's sandbox_image names.
  mkdir -p "$cache/k8s-images"
  gcc -Os -Wall -Werror -static -DVERSION="v$pause_tag-module-v$version" -o "$work/pause" build/pause/linux/pause.c
  python3 "$here/mkimage.py" "$pause_tar" "registry.k8s.io/pause:$pause_tag" --file "$work/pause:/pause" \
    --entrypoint '["/pause"]' --user 65535:65535 >&2
  rm -f "$work/pause"
fi
[[ ${#missing[@]} -gt 0 ]] || exit 0
tmp="$work/_out"; rm -rf "$tmp"; mkdir -p "$tmp"
build() {  # build <names...> into $tmp
  local pkgs=(); for b in "$@"; do pkgs+=("./cmd/$b"); done
  local t0=$SECONDS
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -p "$p" -trimpath -ldflags "$ld" -o "$tmp/" "${pkgs[@]}"
  echo "built $* in $((SECONDS - t0))s" | tee -a "$cache/build/k8s-build-times.log" >&2
}
if [[ "$mode" == each ]]; then
  for b in "${missing[@]}"; do build "$b"; done
else
  build "${missing[@]}"
fi
for b in "${missing[@]}"; do mv "$tmp/$b" "$bin/$b-$version"; echo "$bin/$b-$version"; done
