#!/usr/bin/env bash
# Build ORY Hydra (the OIDC provider the access tests run against) from its Go module, with SQLite
# so `DSN=memory` works, into a cache outside the repository; reuses the binary when it is there.
# Hydra's go.mod carries replace directives (`go install module@version` refuses it) and one points
# at ./internal/httpclient, a nested module missing from the module zip: we build in a writable
# copy with that replace dropped, using the published hydra-client-go/v2 its go.mod requires.
# Cold: about 3.5 min on 2 cores (CGO, sqlite tags); ~500 MB of Go build cache.
set -euo pipefail
version="${HYDRA_VERSION:?set HYDRA_VERSION, e.g. 2.3.0}"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
out="$cache/bin/hydra-$version"
if [[ -x "$out" ]] && "$out" version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/bin" "$cache/build"
src_dir=$(go mod download -json "github.com/ory/hydra/v2@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
work="$cache/build/hydra-$version"
rm -rf "$work"
cp -r "$src_dir" "$work"
chmod -R u+w "$work"
cd "$work"
go mod edit -dropreplace github.com/ory/hydra-client-go/v2
go mod download github.com/ory/hydra-client-go/v2
echo "building hydra v$version (sqlite) — first build takes a few minutes" >&2
CGO_ENABLED=1 go build -trimpath -tags sqlite,sqlite_omit_load_extension \
  -ldflags "-s -w -X github.com/ory/hydra/v2/driver/config.Version=v$version" \
  -o "$out.tmp" .
mv "$out.tmp" "$out"
rm -rf "$work"
echo "$out"
