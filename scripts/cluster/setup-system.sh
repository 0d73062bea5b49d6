#!/usr/bin/env bash
# Install the Debian packages the local cluster runs on when they are missing: etcd, containerd,
# runc, the CNI plugins (bridge, host-local, portmap), iptables, conntrack; gcc for the pause image.
set -euo pipefail
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || [[ -x /usr/sbin/runc ]] || missing+=(runc)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || [[ -x /usr/sbin/iptables ]] || missing+=(iptables)
command -v conntrack >/dev/null 2>&1 || [[ -x /usr/sbin/conntrack ]] || missing+=(conntrack)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  # The packages' init scripts must not start a system etcd/containerd: a policy-rc.d that says no
  # for the time of the install, when the host has none.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null && $sudo chmod +x $policy
    trap '$sudo rm -f $policy' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
