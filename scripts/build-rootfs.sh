#!/usr/bin/env bash
# The Debian bookworm root filesystem of every image, from the same Debian mirror as this machine
# (mmdebstrap, variant apt, merged /usr, no docs/man/locales), and in the same run the .deb closures
# the derived images install offline, resolved against that root filesystem's exact packages:
#   build-rootfs.sh OUT    ->  OUT/rootfs.tar, OUT/debs/<set>/*.deb
# The tar is byte-for-byte the same for the same mirror state (SOURCE_DATE_EPOCH). Called by
# `make images` (services/devtools/images) only when this script changed or the output is missing.
set -euo pipefail
out="${1:?usage: build-rootfs.sh OUT_DIR}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# <set>=<packages>: what each derived image installs (build: strip(1) for the Python venv stage).
sets=(
  "python=python3-minimal libpython3.11-stdlib python3.11"
  "redis=redis-server"
  "mosquitto=mosquitto mosquitto-clients"
  "build=binutils"
)
if ! command -v mmdebstrap >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null \
    || { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends mmdebstrap; }
fi
work="$out.partial"
rm -rf "$work"
mkdir -p "$work/debs"
hooks=()
for entry in "${sets[@]}"; do
  name=${entry%%=*}
  packages=${entry#*=}
  mkdir -p "$work/debs/$name"
  # Download only, inside the new root: the closure is resolved against its dpkg status.
  hooks+=(--customize-hook="mkdir -p \"\$1/tmp/debs-$name/partial\" && chroot \"\$1\" apt-get -qq -y --no-install-recommends -o Dir::Cache::archives=/tmp/debs-$name/ install --download-only $packages")
  hooks+=(--customize-hook="sync-out /tmp/debs-$name $work/debs/$name")
  hooks+=(--customize-hook="rm -rf \"\$1/tmp/debs-$name\"")
done
# The merged-usr hook instead of the usrmerge package (which would pull in perl, +47 MB); the
# path excludes are kept in the image's dpkg configuration, so derived images skip them too.
mmdebstrap --variant=apt --mode=root --format=tar --skip=output/dev --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/bash-completion/*' \
  --aptopt='APT::Install-Recommends "false"' \
  "${hooks[@]}" \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/etc/machine-id "$1"/var/cache/ldconfig/aux-cache' \
  bookworm "$work/rootfs.tar" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
rm -rf "$work"/debs/*/partial "$work"/debs/*/lock
rm -rf "$out"
mv "$work" "$out"
