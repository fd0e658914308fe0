#!/usr/bin/env bash
# Renders the kustomize base and overlays offline, validates every object
# against the Kubernetes schemas (kubernetes-validate, strict: unknown
# fields are errors; at the oldest version the manifests need, 1.30, for
# the native preStop sleep, and at the package's newest), cross-checks
# the manifests against the code and the example config
# (check_manifests.py), and loads the ConfigMap's gateway.toml with
# `smh-gateway check-config`, its paths moved under a temporary root.
# Usage: deploy/k8s/check.sh [GATEWAY_BINARY]   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/smh-gateway}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for o in base overlays/dev overlays/prod; do
  out="$tmp/$(basename "$o").yaml"
  kubectl kustomize "deploy/k8s/$o" >"$out"
  for v in 1.30.0 1.37.0; do
    # Custom resources (cert-manager, Prometheus Operator) have no schema
    # here: check_manifests.py checks what they must hold.
    kubernetes-validate --strict --quiet -k "$v" "$out" 2>&1 |
      grep -v "Couldn't find schema for kind \(Certificate\|Issuer\|ServiceMonitor\) " || true
    kubernetes-validate --strict --quiet -k "$v" "$out" >/dev/null 2>&1 ||
      { echo "deploy/k8s: $o does not validate against Kubernetes $v" >&2; exit 1; }
  done
done
python3 deploy/k8s/check_manifests.py . "$tmp/dev.yaml" "$tmp/prod.yaml"

# The ConfigMap's file, as the gateway loads it.
root=$tmp/root
mkdir -p "$root/run/secrets/smh-gateway/app" "$root/run/secrets/smh-gateway/tls" "$root/run/secrets/smh-gateway/redis"
echo "redis://127.0.0.1:6379/0" >"$root/run/secrets/smh-gateway/redis/url"
for k in library-secret session-secret admin-token; do
  echo "check-$k-value" >"$root/run/secrets/smh-gateway/app/$k"
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=smh-gateway.example.com -keyout "$root/run/secrets/smh-gateway/tls/tls.key" \
  -out "$root/run/secrets/smh-gateway/tls/tls.crt" >/dev/null 2>&1
sed "s#\"/run/secrets/#\"$root/run/secrets/#" deploy/k8s/base/gateway.toml >"$tmp/gateway.toml"
POD_NAME=smh-gateway-check \
  "$bin" check-config --config "$tmp/gateway.toml" >"$tmp/summary.txt" ||
  { cat "$tmp/summary.txt" >&2; echo "deploy/k8s: base/gateway.toml is refused by check-config" >&2; exit 1; }
echo "k8s: base, dev and prod render and validate (Kubernetes 1.30 and 1.37); gateway.toml loads"
