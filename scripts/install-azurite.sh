#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, from npm) into the cache, outside the repository:
# the local Azure Blob endpoint of `make run` and the tests. 3.35 is the last release for Node 20.
set -euo pipefail
version="${AZURITE_VERSION:?set AZURITE_VERSION, e.g. 3.35.0}"
prefix="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}/azurite-$version"
if [[ ! -x "$prefix/node_modules/.bin/azurite-blob" ]]; then
  echo "installing azurite@$version from npm" >&2
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$version" >/dev/null
fi
