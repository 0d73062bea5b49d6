#!/usr/bin/env bash
# The Mosquitto plugin that strips the AWS IoT Device SDK's `?SDK=…&Version=…` username suffix,
# built with gcc against Debian's mosquitto-dev headers into the cache, keyed by its source's hash
# (rebuilt only when the source changes). Prints the plugin's path.
set -euo pipefail
cd "$(dirname "$0")/.."
source_file=services/devtools/mosquitto/strip_sdk_suffix.c
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}/broker"
hash=$(sha256sum "$source_file" | cut -c1-16)
plugin="$cache/strip_sdk_suffix-$hash.so"
if [[ ! -f "$plugin" ]]; then
  mkdir -p "$cache"
  gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$plugin.tmp" "$source_file"
  mv "$plugin.tmp" "$plugin"
fi
echo "$plugin"
