#!/usr/bin/env bash
# Make the cluster's PKI with openssl into $1 (idempotent: existing files are kept).
#   pki.sh DIR NODE_NAME NODE_IP SERVICE_IP
set -euo pipefail
dir="$1"; node="$2"; node_ip="$3"; svc_ip="$4"
mkdir -p "$dir"; cd "$dir"
days=3650

[[ -f ca.key ]] || {
  openssl genrsa -out ca.key 2048 2>/dev/null
  openssl req -x509 -new -nodes -key ca.key -sha256 -days $days -subj "/CN=tfk8s-ca" -out ca.crt
}
[[ -f front-proxy-ca.key ]] || {  # for the aggregation layer (requestheader auth)
  openssl genrsa -out front-proxy-ca.key 2048 2>/dev/null
  openssl req -x509 -new -nodes -key front-proxy-ca.key -sha256 -days $days -subj "/CN=tfk8s-front-proxy-ca" -out front-proxy-ca.crt
}
[[ -f sa.key ]] || {
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
}

# cert NAME SUBJECT EXT(serverAuth|clientAuth|both) [SANS]
cert() {
  local name="$1" subj="$2" usage="$3" sans="${4:-}" ca="${5:-ca}"
  [[ -f "$name.crt" ]] && return 0
  openssl genrsa -out "$name.key" 2048 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    case "$usage" in
      server) echo "extendedKeyUsage=serverAuth" ;;
      client) echo "extendedKeyUsage=clientAuth" ;;
      both) echo "extendedKeyUsage=serverAuth,clientAuth" ;;
    esac
    [[ -z "$sans" ]] || echo "subjectAltName=$sans"
  } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days $days -sha256 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

cert apiserver "/CN=kube-apiserver" server \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$node,IP:127.0.0.1,IP:$svc_ip,IP:$node_ip"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
cert admin "/O=system:masters/CN=kubernetes-admin" client
cert controller-manager "/CN=system:kube-controller-manager" client
cert scheduler "/CN=system:kube-scheduler" client
cert kube-proxy "/CN=system:kube-proxy" client
cert kubelet "/O=system:nodes/CN=system:node:$node" both "DNS:$node,DNS:localhost,IP:$node_ip,IP:127.0.0.1"
cert front-proxy-client "/CN=front-proxy-client" client "" front-proxy-ca
chmod 600 ./*.key
