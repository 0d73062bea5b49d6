#!/usr/bin/env bash
# Install the system packages the suite runs on when they are missing: Redis, Mosquitto (and its
# plugin headers, plus gcc, for the broker plugin and Hydra's cgo build), Node.js with npm (Azurite, the local Azure Blob
# endpoint, comes from npm).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
{ command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]; } || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)  # cgo: Hydra's SQLite (the access tests)
[[ -f /usr/include/mosquitto_broker.h ]] || missing+=(mosquitto-dev)
[[ -f /usr/include/mosquitto.h ]] || missing+=(libmosquitto-dev)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the console's browser test (Playwright drives it)
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
