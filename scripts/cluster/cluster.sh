#!/usr/bin/env bash
# Single-node Kubernetes as local processes (no systemd, cgroup v1, root): one per host.
#
#   cluster.sh up [--fresh]   start etcd, apiserver, controller-manager, scheduler, own containerd,
#                             kubelet, kube-proxy, CoreDNS; wait for the node to be Ready
#   cluster.sh down [--purge] stop everything this script started (pods first), undo host changes;
#                             --purge also deletes the run dir (etcd data, PKI, images store)
#   cluster.sh status         pids, RSS of each component, pod cgroup memory
#   cluster.sh import TAR...  import image tarballs into the cluster's containerd (k8s.io namespace)
#   cluster.sh env            print `export KUBECONFIG=...` and PATH for kubectl/crictl
#   cluster.sh running        exit 0 when this run directory's API server answers
#
# Everything lives under $RUN (default: the repository's .run/cluster). Binaries and images from
# build-kubernetes.sh and build-extras.sh (the Makefile passes the versions).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${TWINFLEET_CLUSTER_RUN:-$here/../../.run/cluster}"
mkdir -p "$RUN"; RUN="$(cd "$RUN" && pwd)"
CACHE="${TWINFLEET_CACHE:-$HOME/.cache/twinfleet}"
BIN="$CACHE/bin"
IMG="$CACHE/k8s-images"
V="${K8S_VERSION:?set K8S_VERSION, e.g. 1.34.3}"
COREDNS_V="${COREDNS_VERSION:?set COREDNS_VERSION, e.g. 1.14.7}"
CRICTL_V="${CRICTL_VERSION:?set CRICTL_VERSION, e.g. 1.34.0}"
PAUSE_V="${PAUSE_VERSION:-3.10.1}"
NODE_NAME="${TWINFLEET_CLUSTER_NODE:-tfk8s}"
NODE_IF="${TWINFLEET_CLUSTER_NODE_IF:-tfk8s0}"        # a bridge device with no ports: holds the node IP
NODE_IP="${TWINFLEET_CLUSTER_NODE_IP:-10.99.0.1}"
CNI_BRIDGE="${TWINFLEET_CLUSTER_CNI_BRIDGE:-tfcni0}"
CLUSTER_CIDR="${TWINFLEET_CLUSTER_CLUSTER_CIDR:-10.244.0.0/16}"
POD_CIDR="${TWINFLEET_CLUSTER_POD_CIDR:-10.244.0.0/24}"
POD_GW="${POD_CIDR%.*}.1"
SVC_CIDR="${TWINFLEET_CLUSTER_SVC_CIDR:-10.96.0.0/16}"
SVC_IP="${TWINFLEET_CLUSTER_SVC_IP:-10.96.0.1}"     # first IP of SVC_CIDR
DNS_IP="${TWINFLEET_CLUSTER_DNS_IP:-10.96.0.10}"
ETCD_PORT="${TWINFLEET_CLUSTER_ETCD_PORT:-12379}"
API_PORT="${TWINFLEET_CLUSTER_API_PORT:-6443}"
CGROOT="${TWINFLEET_CLUSTER_CGROUP_ROOT:-/tfk8s}"
SOCK="$RUN/containerd/containerd.sock"
PKI="$RUN/pki"
KCFG="$RUN/kubeconfig"
LOG="$RUN/logs"
PIDS="$RUN/pids"
export PATH="$RUN/bin:$PATH"

T0=$(($(date +%s%N) / 1000000))
log() { local now=$(($(date +%s%N) / 1000000)); printf '[%5d.%03ds] %s\n' $(((now - T0) / 1000)) $(((now - T0) % 1000)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for DESC TIMEOUT_S CMD...: poll CMD every 0.3 s, bounded.
wait_for() {
  local desc="$1" t="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [[ $SECONDS -lt $end ]] || die "timeout ($t s) waiting for $desc"
    sleep 0.3
  done
  log "$desc ok"
}

alive() { [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# start NAME CMD...: run detached (own session), log to $LOG/NAME.log, pid in $PIDS/NAME.pid
start() {
  local name="$1"; shift
  if alive "$name"; then log "$name already running (pid $(cat "$PIDS/$name.pid"))"; return 0; fi
  setsid "$@" >"$LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!)"
}

stop() {  # stop NAME [timeout]
  local name="$1" t="${2:-15}" pid
  [[ -f "$PIDS/$name.pid" ]] || return 0
  pid=$(cat "$PIDS/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + t))
    while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $end ]]; do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

kc() { kubectl --kubeconfig "$KCFG" "$@"; }

links() {  # the pinned binaries under their plain names, in the run directory
  mkdir -p "$RUN/bin"
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
    [[ -x "$BIN/$b-$V" ]] || die "missing $BIN/$b-$V (make cluster builds it)"
    ln -sf "$BIN/$b-$V" "$RUN/bin/$b"
  done
  [[ -x "$BIN/crictl-$CRICTL_V" ]] || die "missing $BIN/crictl-$CRICTL_V (make cluster builds it)"
  ln -sf "$BIN/crictl-$CRICTL_V" "$RUN/bin/crictl"
}

# put FILE: write stdin to FILE only if the content changed (kube-proxy exits when its config
# file changes, so re-running `up` must not touch unchanged files)
put() {
  local t; t=$(mktemp "$1.XXXX")
  cat >"$t"
  if cmp -s "$t" "$1"; then rm -f "$t"; else mv "$t" "$1"; fi
}

kubeconfig() {  # kubeconfig FILE USERCERT
  put "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tfk8s
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: tfk8s
  context: {cluster: tfk8s, user: $2}
current-context: tfk8s
EOF
}

sysctl_save() {  # remember host values we (or kubelet/CNI) may change, once
  [[ -f "$RUN/sysctl.orig" ]] && return 0
  local s
  for s in net/ipv4/ip_forward vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
           kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/conf/all/route_localnet; do
    echo "$s $(cat /proc/sys/$s)"
  done >"$RUN/sysctl.orig"
}
sysctl_restore() {
  [[ -f "$RUN/sysctl.orig" ]] || return 0
  local s v
  while read -r s v; do echo "$v" >"/proc/sys/$s" 2>/dev/null || true; done <"$RUN/sysctl.orig"
  rm -f "$RUN/sysctl.orig"
  log "host sysctls restored"
}

# Forwarding must be on for pod->Service traffic (the bridge CNI plugin turns it on anyway), but
# nothing from this machine may be forwarded off it, and nothing from outside may reach the node's
# address (API server, kubelet, NodePorts) or the pods: drop by the uplink, both ways.
guard_rule() {  # guard_rule -I|-D CHAIN MATCH...
  local op="$1" chain="$2"; shift 2
  if [[ "$op" == -I ]]; then
    iptables -C "$chain" "$@" -m comment --comment tfk8s-guard -j DROP 2>/dev/null ||
      iptables -I "$chain" 1 "$@" -m comment --comment tfk8s-guard -j DROP
  else
    while iptables -D "$chain" "$@" -m comment --comment tfk8s-guard -j DROP 2>/dev/null; do :; done
  fi
}
guard_rules() {  # guard_rules -I|-D
  local op="$1" dev
  for dev in $(ip -o route show default | awk '{for(i=1;i<NF;i++) if($i=="dev") print $(i+1)}' | sort -u); do
    guard_rule "$op" FORWARD -o "$dev"
    guard_rule "$op" FORWARD -i "$dev" -o "$CNI_BRIDGE"
    guard_rule "$op" INPUT -i "$dev" -d "$NODE_IP"
  done
  guard_rule "$op" FORWARD -s "$CLUSTER_CIDR" ! -o "$CNI_BRIDGE"
}

cgroups_make() {
  local h d
  for h in $(awk -F: '$2!="" {print $2}' /proc/self/cgroup | tr ',' ' '); do
    d=/sys/fs/cgroup/${h#name=}
    [[ -d "$d" ]] || continue
    mkdir -p "$d$CGROOT"
    if [[ "$h" == cpuset ]]; then
      [[ -s "$d$CGROOT/cpuset.cpus" && "$(cat "$d$CGROOT/cpuset.cpus")" != "" ]] || cat "$d/cpuset.cpus" >"$d$CGROOT/cpuset.cpus"
      [[ "$(cat "$d$CGROOT/cpuset.mems")" != "" ]] || cat "$d/cpuset.mems" >"$d$CGROOT/cpuset.mems"
    fi
  done
}
cgroups_remove() {
  local d
  for d in /sys/fs/cgroup/*"$CGROOT"; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$d" ]] && log "WARNING: could not remove cgroup $d (processes left?)"
  done
  return 0
}

write_configs() {
  mkdir -p "$RUN"/{etcd,containerd,cni/net.d,cni/ipam,kubelet,kubelet/pod-logs,manifests} "$LOG" "$PIDS"
  "$here/pki.sh" "$PKI" "$NODE_NAME" "$NODE_IP" "$SVC_IP"
  kubeconfig "$KCFG" admin
  kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager
  kubeconfig "$RUN/scheduler.kubeconfig" scheduler
  kubeconfig "$RUN/kubelet.kubeconfig" kubelet
  kubeconfig "$RUN/kube-proxy.kubeconfig" kube-proxy
  echo "# tfk8s: pods get no upstream resolver (no network off this machine)" | put "$RUN/resolv.conf"

  put "$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:$PAUSE_V"
  # root here lacks CAP_SYS_RESOURCE: without this runc fails "can't get final child's PID from pipe: EOF"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF

  put "$RUN/cni/net.d/10-tfk8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tfk8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  put "$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $RUN/resolv.conf
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: $CGROOT
failSwapOn: false
protectKernelDefaults: false
podLogsDir: $RUN/kubelet/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
podCIDR: $POD_CIDR
# pod sync period; also how soon updated ConfigMaps/Secrets reach mounted volumes (default 1m).
# Dapr's injector/operator wait for Sentry's trust bundle ConfigMap to appear in their volume.
syncFrequency: 10s
EOF

  put "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

net_up() {
  sysctl_save
  ip link show "$NODE_IF" >/dev/null 2>&1 || ip link add "$NODE_IF" type bridge
  ip addr show dev "$NODE_IF" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/32" dev "$NODE_IF"
  ip link set "$NODE_IF" up
  guard_rules -I
}

# kubelet leaves KUBE-FIREWALL / KUBE-KUBELET-CANARY / KUBE-IPTABLES-HINT chains behind
kubelet_chains_remove() {
  local ipt t c
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for c in INPUT OUTPUT; do
      while $ipt -t filter -D $c -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for t in filter nat mangle; do
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        $ipt -t $t -F $c 2>/dev/null && $ipt -t $t -X $c 2>/dev/null || true
      done
    done
  done
}

net_down() {
  guard_rules -D
  kubelet_chains_remove
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  ip link del "$NODE_IF" 2>/dev/null || true
  sysctl_restore
}

api_ready() { curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://$NODE_IP:$API_PORT/readyz" ; }

import_images() {
  local t
  for t in "$@"; do
    ctr -a "$SOCK" -n k8s.io images import --no-unpack=false "$t" >/dev/null 2>&1 ||
      ctr -a "$SOCK" -n k8s.io images import "$t" >/dev/null
    log "imported $(basename "$t")"
  done
}

coredns_deploy() {
  [[ -f "$IMG/coredns-$COREDNS_V.tar" ]] || die "missing $IMG/coredns-$COREDNS_V.tar (make cluster builds it)"
  import_images "$IMG/coredns-$COREDNS_V.tar"
  sed -e "s#@DNS_IP@#$DNS_IP#g" -e "s#@IMAGE@#tfk8s.local/coredns:$COREDNS_V#g" "$here/coredns.yaml" | kc apply -f - >/dev/null
  log "CoreDNS applied"
}

# The node's names, addresses, ports and cgroup are host-wide: one cluster per host. The run
# directory that owns them is written here; another run directory's up refuses while its cluster
# runs, and its down leaves the host's parts alone.
OWNER=/run/twinfleet-cluster.owner
owner_alive() {  # a cluster process of the owning run directory still runs
  local other pid
  other=$(cat "$OWNER" 2>/dev/null) || return 1
  for pid in "$other"/pids/*.pid; do
    [[ -f "$pid" ]] && kill -0 "$(cat "$pid")" 2>/dev/null && return 0
  done
  return 1
}
claim() {
  if [[ -f "$OWNER" && "$(cat "$OWNER")" != "$RUN" ]] && owner_alive; then
    die "a cluster from $(cat "$OWNER") runs on this host: stop it first (make cluster-down there)"
  fi
  echo "$RUN" >"$OWNER"
}
owned() { [[ ! -f "$OWNER" || "$(cat "$OWNER")" == "$RUN" ]]; }

up() {
  [[ "${1:-}" == --fresh ]] && { down --purge; T0=$(($(date +%s%N) / 1000000)); }
  claim
  links
  write_configs
  net_up
  cgroups_make
  log "configs, PKI, network ready"

  start etcd etcd --name "$NODE_NAME" --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$((ETCD_PORT + 1))" --snapshot-count 10000 \
    --quota-backend-bytes $((2 * 1024 * 1024 * 1024))
  # containerd is independent of the control plane: start it early, in parallel
  start containerd containerd --config "$RUN/containerd/config.toml"
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --secure-port="$API_PORT" --advertise-address="$NODE_IP" \
    --service-cluster-ip-range="$SVC_CIDR" --service-node-port-range=30000-32767 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --allow-privileged=true --profiling=false --event-ttl=1h
  wait_for containerd 30 ctr -a "$SOCK" version
  [[ -f "$IMG/pause-$PAUSE_V.tar" ]] || die "missing $IMG/pause-$PAUSE_V.tar (make cluster builds it)"
  import_images "$IMG/pause-$PAUSE_V.tar"
  wait_for kube-apiserver 90 api_ready

  start kube-controller-manager kube-controller-manager \
    --kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SVC_CIDR" --profiling=false
  start kube-scheduler kube-scheduler \
    --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  start kubelet kubelet --config="$RUN/kubelet/config.yaml" --kubeconfig="$RUN/kubelet.kubeconfig" \
    --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --containerd="$SOCK" -v=1
  start kube-proxy kube-proxy --config="$RUN/kube-proxy.yaml" -v=1

  wait_for "node $NODE_NAME Ready" 120 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  coredns_deploy
  log "cluster up: export KUBECONFIG=$KCFG"
}

crictl_() { crictl --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 20s "$@"; }

remove_pods() {
  alive containerd || return 0
  if command -v crictl >/dev/null; then
    local ids; ids=$(crictl_ pods -q 2>/dev/null || true)
    if [[ -n "$ids" ]]; then
      # stopp runs CNI DEL (frees IP, veth) and tears down the netns; rmp removes the sandboxes
      crictl_ stopp $ids >/dev/null 2>&1 || true
      crictl_ rmp -f $ids >/dev/null 2>&1 || true
      log "removed $(echo "$ids" | wc -w) pod sandboxes"
    fi
  fi
  # fallback / leftovers: kill tasks directly
  local t
  for t in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -a "$SOCK" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for t in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -a "$SOCK" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
  done
  for t in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr -a "$SOCK" -n k8s.io containers delete "$t" >/dev/null 2>&1 || true
  done
}

kill_shims() {  # shims of OUR containerd only (matched by our socket path in their cmdline)
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK( |$)" 2>/dev/null || true); do
    kill -KILL "$p" 2>/dev/null || true
  done
}

umount_run() {
  local m
  for m in $(awk -v r="$RUN/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

down() {
  (links) >/dev/null 2>&1 || true  # down works even when a binary went missing
  stop kubelet 20
  remove_pods
  stop kube-proxy
  if owned && command -v kube-proxy >/dev/null; then kube-proxy --cleanup >/dev/null 2>&1 || true; fi
  stop containerd 20
  kill_shims
  stop kube-scheduler & stop kube-controller-manager & stop kube-apiserver 20 & wait
  stop etcd
  umount_run
  # kubelet's /var/log/containers symlinks pointing into our run dir
  local l
  for l in /var/log/containers/*.log; do
    [[ -L "$l" && "$(readlink "$l")" == "$RUN/"* ]] && rm -f "$l"
  done
  if owned; then
    cgroups_remove
    net_down
    rm -f "$OWNER"
  else
    log "the host's cluster belongs to $(cat "$OWNER"): its network and cgroups left alone"
  fi
  if [[ "${1:-}" == --purge ]]; then
    rm -rf "$RUN"
    log "purged $RUN"
  fi
  log "down"
}

status() {
  local n total=0 rss
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if alive "$n"; then
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$PIDS/$n.pid")/status")
      total=$((total + rss))
      printf '%-24s pid %-7s RSS %6d MiB\n' "$n" "$(cat "$PIDS/$n.pid")" $((rss / 1024))
    else
      printf '%-24s not running\n' "$n"
    fi
  done
  local shims=0
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK( |$)" 2>/dev/null || true); do
    shims=$((shims + $(awk '/VmRSS/ {print $2}' /proc/$p/status)))
  done
  printf '%-24s RSS %6d MiB\n' "components total" $((total / 1024))
  printf '%-24s RSS %6d MiB\n' "containerd shims" $((shims / 1024))
  local m=/sys/fs/cgroup/memory$CGROOT/memory.usage_in_bytes
  [[ -f "$m" ]] && printf '%-24s     %6d MiB (memory.usage_in_bytes, incl. page cache)\n' "pods cgroup $CGROOT" $(($(cat "$m") / 1048576))
  local s=/sys/fs/cgroup/memory$CGROOT/memory.stat
  [[ -f "$s" ]] && awk '$1=="total_rss" {printf "%-24s     %6d MiB\n", "pods cgroup total_rss", $2/1048576}' "$s"
  return 0
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status ;;
  import) import_images "$@" ;;
  env) echo "export KUBECONFIG=$KCFG PATH=$RUN/bin:\$PATH" ;;
  running) alive kube-apiserver && api_ready >/dev/null ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
