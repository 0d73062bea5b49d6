#!/usr/bin/env bash
# Install the system packages the suite runs on (Redis, Mosquitto; gcc for Hydra's cgo build) when
# they are missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
{ command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]; } || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)  # cgo: Hydra's SQLite (the access tests)
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
