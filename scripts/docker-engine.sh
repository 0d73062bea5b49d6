#!/usr/bin/env bash
# A Docker engine for building and running the images, on machines without systemd.
#   docker-engine.sh start    reuse a daemon that answers; else install docker.io when dockerd is
#                             missing, start containerd + dockerd as processes and wait for them
#   docker-engine.sh stop     stop only the daemons this script started (its pid files)
#   docker-engine.sh status
#   docker-engine.sh answers  exit 0 when a daemon answers (any daemon)
# With your own Docker (Docker Desktop, a system service, DOCKER_HOST), `start` finds it answering
# and does nothing else.
set -euo pipefail
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
state="$cache/engine"
run_root=/run/twinfleet-docker
containerd_sock="$run_root/containerd/containerd.sock"
# The daemon's own data stay where Docker keeps them (images survive restarts); containerd gets
# its own root, socket and state, so it never meets another containerd on the machine (for
# example one a Kubernetes node runs).
containerd_root=/var/lib/twinfleet-docker/containerd

client() {
  # Any docker client talks to the daemon; Debian's /usr/bin/docker is preferred (it matches the
  # daemon docker.io installs).
  if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker || true; fi
}
answers() {
  local docker
  docker="$(client)"
  [[ -n "$docker" ]] && timeout 10 "$docker" info >/dev/null 2>&1
}
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_engine() {
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "engine: installing docker.io (dockerd, containerd, runc) from Debian" >&2
  # policy-rc.d is consulted by the package scripts: without systemd they must not try to start it.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends docker.io >/dev/null \
    || { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends docker.io; }
}

start() {
  if answers; then
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || [[ -x /usr/sbin/dockerd ]] || install_engine
  [[ $(id -u) -eq 0 ]] || { echo "engine: starting dockerd needs root (or start your own Docker)" >&2; exit 1; }
  mkdir -p "$state" "$run_root/containerd" "$containerd_root"
  cat >"$state/containerd.toml" <<EOF
# containerd for Twinfleet's dockerd only (written by scripts/docker-engine.sh): no CRI.
version = 2
root = "$containerd_root"
state = "$run_root/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
EOF
  if ! alive "$state/containerd.pid"; then
    setsid containerd --config "$state/containerd.toml" >>"$state/containerd.log" 2>&1 </dev/null &
    echo $! >"$state/containerd.pid"
    for _ in $(seq 100); do [[ -S "$containerd_sock" ]] && break; sleep 0.1; done
    [[ -S "$containerd_sock" ]] || { echo "engine: containerd did not start; see $state/containerd.log" >&2; exit 1; }
  fi
  # The host's firewall and sysctls are left alone (no iptables rules, no ip_forward): containers
  # reach each other on their networks and published ports work (docker-proxy); they get no NAT
  # to the outside, which nothing here needs (images build offline). A private address pool keeps
  # clear of Docker's default 172.17/16 and of Kubernetes' pod networks.
  setsid dockerd \
    --containerd="$containerd_sock" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --bip=10.213.255.1/24 --default-address-pool base=10.213.0.0/17,size=24 \
    >>"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/dockerd.pid"
  for _ in $(seq 150); do
    answers && break
    alive "$state/dockerd.pid" || { echo "engine: dockerd exited; see $state/dockerd.log" >&2; exit 1; }
    sleep 0.2
  done
  answers || { echo "engine: dockerd did not answer in 30 s; see $state/dockerd.log" >&2; exit 1; }
  echo "engine: started dockerd (pid $(cat "$state/dockerd.pid")); \`make engine-stop\` stops it" >&2
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, then KILL after 30 s
  local file=$1 name=$2 pid
  alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill -TERM "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "engine: $name $pid did not stop in 30 s; killing it" >&2
    kill -KILL "$pid"
  fi
  rm -f "$file"
  echo "engine: stopped $name (pid $pid)" >&2
}

stop() {
  stop_pid "$state/dockerd.pid" dockerd
  stop_pid "$state/containerd.pid" containerd
}

status() {
  if answers; then echo "engine: a daemon answers"; else echo "engine: no daemon answers"; fi
  if alive "$state/dockerd.pid"; then echo "engine: dockerd started here, pid $(cat "$state/dockerd.pid")"; fi
  return 0
}

case "${1:-}" in
  start | stop | status | answers) "$1" ;;
  *) echo "usage: $0 start|stop|status|answers" >&2; exit 2 ;;
esac
