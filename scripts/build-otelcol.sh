#!/usr/bin/env bash
# Build the local tracing backend (tools/otelcol/builder.yaml: an OpenTelemetry Collector with OTLP
# in, a batch processor and the file exporter) with the collector's builder (ocb) at the pinned
# version, into a cache outside the repository keyed by the builder config's hash; reused when there.
set -euo pipefail
version="${OTELCOL_VERSION:?set OTELCOL_VERSION, e.g. 0.165.0}"
cache="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
config="$(cd "$(dirname "$0")/.." && pwd)/tools/otelcol/builder.yaml"
key=$(sha256sum "$config" | cut -c1-12)
out="$cache/bin/otelcol-twinfleet-$version-$key"
if [[ -x "$out" ]] && "$out" --version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/bin" "$cache/build"
work="$cache/build/otelcol-$version-$key"
rm -rf "$work"
mkdir -p "$work"
cp "$config" "$work/builder.yaml"
cd "$work"
echo "building the OpenTelemetry Collector v$version (OTLP, batch, file) — the first build takes a few minutes" >&2
GOBIN="$work/bin" go install "go.opentelemetry.io/collector/cmd/builder@v$version"
# The builder writes the sources; the modules are resolved here with `go mod tidy -e`, since a test
# dependency of the file exporter (an encoding extension) is not served by the module proxy and
# is not needed to build.
"$work/bin/builder" --config builder.yaml --skip-compilation --skip-get-modules >&2
cd build
go mod init otelcol-twinfleet >&2
# shellcheck disable=SC2046 # one `module@version` argument per component of the config
go get $(sed -nE 's/^ *- gomod: ([^ ]+) (v[^ ]+)$/\1@\2/p' ../builder.yaml) >&2
go mod tidy -e >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
mv "$out.tmp" "$out"
rm -rf "$work"
echo "$out"
