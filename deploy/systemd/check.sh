#!/usr/bin/env bash
# `systemd-analyze verify` on the unit, with ExecStart pointing at a built
# binary (verify checks the executable exists). Where systemd-analyze is
# missing the check says so and counts as skipped, not passed.
# Usage: deploy/systemd/check.sh [GATEWAY_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/smh-gateway}")
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd: SKIPPED: systemd-analyze not installed (apt-get install systemd)" >&2
  exit 3
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/smh-gateway#$bin#g" deploy/systemd/smh-gateway.service >"$tmp/smh-gateway.service"
# Warnings about the machine (no running systemd in a container) are not
# the unit's: only lines naming the unit count.
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/smh-gateway.service" 2>&1 || true)
mine=$(printf '%s\n' "$out" | grep "smh-gateway.service" || true)
if [ -n "$mine" ]; then
  printf '%s\n' "$mine" >&2
  echo "systemd: the unit has problems" >&2
  exit 1
fi
# The hardening the issue asks for is present.
for want in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes "CapabilityBoundingSet=" "ExecReload=/bin/kill -HUP"; do
  grep -q "^$want" deploy/systemd/smh-gateway.service || { echo "systemd: missing $want" >&2; exit 1; }
done
# The example configuration loads with the credentials the unit names.
creds=$tmp/credentials
mkdir -p "$creds"
for k in library-secret session-secret admin-token; do echo "check-$k" >"$creds/$k"; done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$creds/tls.key" -out "$creds/tls.crt" >/dev/null 2>&1
for c in $(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' deploy/systemd/smh-gateway.service); do
  [ -f "$creds/$c" ] || { echo "systemd: credential $c has no test file" >&2; exit 1; }
done
CREDENTIALS_DIRECTORY=$creds "$bin" check-config --config deploy/systemd/gateway.toml >"$tmp/summary" ||
  { cat "$tmp/summary" >&2; echo "systemd: deploy/systemd/gateway.toml is refused" >&2; exit 1; }
grep -o 'CREDENTIALS_DIRECTORY}/[a-z.-]*' deploy/systemd/gateway.toml | sed 's#.*/##' | while read -r f; do
  grep -q "^LoadCredential=$f:" deploy/systemd/smh-gateway.service ||
    { echo "systemd: gateway.toml reads credential $f, which the unit does not load" >&2; exit 1; }
done
echo "systemd: unit verified by systemd-analyze; gateway.toml loads with the unit's credentials"
