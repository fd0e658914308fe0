#!/usr/bin/env bash
# Starts a replica set on this machine, all on loopback:
#   one `smh-gateway emulator` (SMH + COS), one redis-server (no persistence),
#   N `smh-gateway run` replicas sharing revocations through that Redis,
#   and HAProxy in front (TCP mode: TLS passes through to the gateways),
#   health-checking each replica's /readyz on its admin port.
#
# Usage: deploy/local/up.sh [N]          (N replicas, default 3)
#   STATE_DIR=DIR   where configs, secrets, logs and pid files go
#                   (default: a new temp dir, removed by down.sh)
#   SMH_GATEWAY_BIN the gateway binary (default: the newer of
#                   target/release/smh-gateway and target/debug/smh-gateway)
#   LAME_DUCK_SECS / DRAIN_TIMEOUT_SECS   the replicas' [limits] (2 / 10)
#
# Writes $STATE_DIR/env (source it) and prints how to use the set.
# deploy/local/down.sh stops everything.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

N="${1:-3}"
case "$N" in '' | *[!0-9]*) die "N must be a number, not '$N'" ;; esac
[ "$N" -ge 1 ] || die "N must be at least 1"
LAME_DUCK_SECS="${LAME_DUCK_SECS:-2}"
DRAIN_TIMEOUT_SECS="${DRAIN_TIMEOUT_SECS:-10}"

for tool in haproxy redis-server openssl python3 curl setsid; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is missing (Debian: apt-get install -y haproxy redis-server openssl python3 curl)"
done
BIN="$(find_gateway_bin)"
PY="$LOCAL_DIR/replicaset.py"

umask 077
if [ -n "${STATE_DIR:-}" ]; then
  mkdir -p "$STATE_DIR"
  STATE="$(cd "$STATE_DIR" && pwd)"
  [ ! -f "$STATE/env" ] || die "$STATE already holds a set (deploy/local/down.sh $STATE first)"
else
  STATE="$(mktemp -d "${TMPDIR:-/tmp}/smh-gateway-local.XXXXXX")"
  touch "$STATE/.temporary"
  # down.sh and ctl.sh find this set without being told.
  echo "$STATE" >"$LAST_POINTER"
fi
# A first env file, so that down.sh can stop a half-started set.
echo "SMH_LOCAL_STATE_DIR=$STATE" >"$STATE/env"

# Anything that fails from here on stops what was started.
started_ok=0
cleanup_on_failure() {
  if [ "$started_ok" != 1 ]; then
    echo "deploy/local/up.sh: start-up failed; logs under $STATE:" >&2
    for f in "$STATE"/*/log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 20 "$f" >&2
    done
    KEEP_STATE=1 "$LOCAL_DIR/down.sh" "$STATE" >&2 || true
  fi
}
trap cleanup_on_failure EXIT

# Ports: 2 per replica, Redis, HAProxy's front and stats page. Below the
# ephemeral range, so no outgoing connection holds a replica's port while
# it restarts.
read -r -a PORTS <<<"$("$PY" free-ports $((2 * N + 3)))"
REDIS_PORT="${PORTS[0]}"
FRONT_PORT="${PORTS[1]}"
STATS_PORT="${PORTS[2]}"

mkdir -p "$STATE/secrets" "$STATE/tls"

# --- TLS for the gateways (HAProxy passes TLS through: clients see this) ----
(
  cd "$STATE/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days 30 -subj "/CN=smh-gateway local CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" \
    -days 30 -extfile leaf.ext -out cert.pem 2>/dev/null
  rm -f leaf.csr leaf.ext
)

# --- secrets shared by every replica ---------------------------------------
openssl rand -hex 24 | tr -d '\n' >"$STATE/secrets/session-secret"
openssl rand -hex 24 | tr -d '\n' >"$STATE/secrets/admin-token"

# --- the SMH emulator --------------------------------------------------------
spawn "$STATE/emulator" "$BIN" emulator --listen 127.0.0.1:0 --state-dir "$STATE/emulator"
end=$((SECONDS + 30))
until grep -q '^  LibrarySecret:' "$STATE/emulator/log" 2>/dev/null; do
  alive "$STATE/emulator" smh-gateway || die "the emulator exited: $(tail -n 5 "$STATE/emulator/log")"
  [ "$SECONDS" -lt "$end" ] || die "the emulator did not start within 30 s"
  sleep 0.05
done
EMULATOR_URL="$(sed -n 's/^SMH emulator listening on //p' "$STATE/emulator/log" | head -n 1)"
LIB="$(sed -n 's/^  LibraryId: *//p' "$STATE/emulator/log" | head -n 1)"
sed -n 's/^  LibrarySecret: *//p' "$STATE/emulator/log" | head -n 1 | tr -d '\n' >"$STATE/secrets/library-secret"
[ -s "$STATE/secrets/library-secret" ] && [ -n "$EMULATOR_URL" ] && [ -n "$LIB" ] ||
  die "could not read the emulator's URL, LibraryId and LibrarySecret from $STATE/emulator/log"
# One bundle for clients: the gateways' CA and the emulator's (the 302s and
# upload targets point at the emulator's COS surface).
cat "$STATE/tls/ca.pem" "$STATE/emulator/ca.pem" >"$STATE/ca-bundle.pem"

# --- Redis, no persistence ----------------------------------------------------
spawn "$STATE/redis" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
  --appendonly no --dir "$STATE/redis" --protected-mode yes
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
end=$((SECONDS + 15))
until "$PY" redis-ping 127.0.0.1 "$REDIS_PORT" 2>/dev/null; do
  alive "$STATE/redis" redis-server || die "redis-server exited: $(tail -n 5 "$STATE/redis/log")"
  [ "$SECONDS" -lt "$end" ] || die "redis-server did not answer within 15 s"
  sleep 0.05
done

# --- the replicas ---------------------------------------------------------------
for k in $(seq 1 "$N"); do
  port="${PORTS[$((1 + 2 * k))]}"
  admin="${PORTS[$((2 + 2 * k))]}"
  d="$STATE/replica-$k"
  mkdir -p "$d"
  echo "$port" >"$d/port"
  echo "$admin" >"$d/admin-port"
  cat >"$d/gateway.toml" <<EOF
# Replica $k of the local set (deploy/local/up.sh). Every replica shares the
# library secret, session secret, admin token and Redis; each has its own ports,
# replica_id, caches and audit file.
[listener]
address = "127.0.0.1:$port"
cert_file = "$STATE/tls/cert.pem"
key_file = "$STATE/tls/key.pem"

[admin]
address = "127.0.0.1:$admin"
token_file = "$STATE/secrets/admin-token"
# A replica (re)started while Redis is unreachable stays out of the load
# balancer until it has the revocation list, rather than serve revoked sessions.
check_revocations = true

[[library]]
id = "$LIB"
upstream = "$EMULATOR_URL"
ca_file = "$STATE/emulator/ca.pem"
secret_file = "$STATE/secrets/library-secret"

[session]
default_roles = ["viewer"]

[session.jwt]
algorithms = ["HS256"]
hmac_secret_file = "$STATE/secrets/session-secret"

[[role]]
name = "viewer"
grant = []
spaces = ["-"]

[[role]]
name = "editor"
grant = ["create_directory", "upload_file", "delete_file", "delete_directory", "move_file", "move_directory"]
spaces = ["-"]

[audit]
sink = "file"
file = "$d/audit.jsonl"

[limits]
# SIGTERM: /readyz 503 at once, the listener accepts for this long (HAProxy
# needs fall x inter = 2 x 500 ms to mark the replica down), then in-flight
# requests get drain_timeout_secs.
lame_duck_secs = $LAME_DUCK_SECS
drain_timeout_secs = $DRAIN_TIMEOUT_SECS

[revocation]
redis_url = "$REDIS_URL"
replica_id = "local-$k"
EOF
  out="$("$BIN" check-config "$d/gateway.toml" 2>&1)" || die "replica $k: config refused:
$out"
done
for k in $(seq 1 "$N"); do
  spawn "$STATE/replica-$k" "$BIN" run --config "$STATE/replica-$k/gateway.toml"
done

# --- HAProxy ---------------------------------------------------------------------
mkdir -p "$STATE/haproxy"
{
  cat <<EOF
# deploy/local/up.sh: TCP load balancer in front of $N smh-gateway replicas.
global
    log stdout format raw local0 info
    stats socket $STATE/haproxy/admin.sock mode 600 level admin
    maxconn 4096

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    # A connection refused (a replica between exit and HAProxy marking it
    # down, or killed) is tried again on another replica, not failed.
    retries 3
    option redispatch 1

frontend gateway
    bind 127.0.0.1:$FRONT_PORT
    default_backend gateways

backend gateways
    balance roundrobin
    # The replica leaves on its own /readyz, on the admin port (plain HTTP),
    # while client TLS passes through to the client port.
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    # No "on-marked-down shutdown-sessions": a replica marked down because it
    # is draining still answers every request on its connections, and closes
    # them itself (Connection: close); cutting them would fail those requests.
    # A dead replica's connections are gone anyway.
    default-server inter 500ms fall 2 rise 2
EOF
  for k in $(seq 1 "$N"); do
    echo "    server r$k 127.0.0.1:$(cat "$STATE/replica-$k/port") check port $(cat "$STATE/replica-$k/admin-port")"
  done
  cat <<EOF

listen stats
    mode http
    bind 127.0.0.1:$STATS_PORT
    timeout client 10s
    timeout server 10s
    stats enable
    stats uri /
    stats refresh 2s
EOF
} >"$STATE/haproxy/haproxy.cfg"
haproxy -c -q -f "$STATE/haproxy/haproxy.cfg" || die "haproxy refused $STATE/haproxy/haproxy.cfg"
spawn "$STATE/haproxy" haproxy -db -f "$STATE/haproxy/haproxy.cfg"

# --- the env file ------------------------------------------------------------------
{
  echo "# Source me: . $STATE/env"
  echo "SMH_LOCAL_STATE_DIR=$STATE"
  echo "SMH_LOCAL_N=$N"
  echo "SMH_GATEWAY_BIN=$BIN"
  echo "SMH_LOCAL_URL=https://127.0.0.1:$FRONT_PORT"
  echo "SMH_LOCAL_LIB=$LIB"
  echo "SMH_LOCAL_CA=$STATE/ca-bundle.pem"
  echo "SMH_LOCAL_SESSION_SECRET_FILE=$STATE/secrets/session-secret"
  echo "SMH_LOCAL_ADMIN_TOKEN_FILE=$STATE/secrets/admin-token"
  echo "SMH_LOCAL_LAME_DUCK_SECS=$LAME_DUCK_SECS"
  echo "SMH_LOCAL_DRAIN_TIMEOUT_SECS=$DRAIN_TIMEOUT_SECS"
  echo "SMH_LOCAL_HAPROXY_SOCK=$STATE/haproxy/admin.sock"
  echo "SMH_LOCAL_HAPROXY_STATS=http://127.0.0.1:$STATS_PORT/"
  echo "SMH_LOCAL_HAPROXY_PID=$(cat "$STATE/haproxy/pid")"
  echo "SMH_LOCAL_REDIS_URL=$REDIS_URL"
  echo "SMH_LOCAL_REDIS_PID=$(cat "$STATE/redis/pid")"
  echo "SMH_LOCAL_EMULATOR_URL=$EMULATOR_URL"
  echo "SMH_LOCAL_EMULATOR_PID=$(cat "$STATE/emulator/pid")"
  for k in $(seq 1 "$N"); do
    echo "SMH_LOCAL_REPLICA_${k}_URL=https://127.0.0.1:$(cat "$STATE/replica-$k/port")"
    echo "SMH_LOCAL_REPLICA_${k}_ADMIN=http://127.0.0.1:$(cat "$STATE/replica-$k/admin-port")"
    echo "SMH_LOCAL_REPLICA_${k}_PID=$(cat "$STATE/replica-$k/pid")"
  done
} >"$STATE/env"

# --- wait until the set serves -------------------------------------------------------
for k in $(seq 1 "$N"); do
  wait_ready "http://127.0.0.1:$(cat "$STATE/replica-$k/admin-port")/readyz" 60 ||
    die "replica $k not ready within 60 s: $(tail -n 5 "$STATE/replica-$k/log")"
done
"$PY" wait-haproxy "$STATE/haproxy/admin.sock" --up all --timeout 30 ||
  die "HAProxy did not mark every replica up within 30 s"
started_ok=1

SESSION="$("$PY" session --secret-file "$STATE/secrets/session-secret" --user alice --roles viewer --ttl 86400)"
cat <<EOF
smh-gateway local replica set is up ($N replicas, binary $BIN).
  through HAProxy:  https://127.0.0.1:$FRONT_PORT   (stats page: http://127.0.0.1:$STATS_PORT/)
EOF
for k in $(seq 1 "$N"); do
  echo "  replica $k:        https://127.0.0.1:$(cat "$STATE/replica-$k/port")   admin http://127.0.0.1:$(cat "$STATE/replica-$k/admin-port")   pid $(cat "$STATE/replica-$k/pid")"
done
cat <<EOF
  emulator (SMH):   $EMULATOR_URL   library $LIB
  redis:            $REDIS_URL
  files:            $STATE   (env, configs, secrets, logs)

In another shell (bash):
  . $STATE/env
  SESSION=$SESSION
  curl -s --cacert \$SMH_LOCAL_CA -H "Authorization: Bearer \$SESSION" "\$SMH_LOCAL_URL/api/v1/directory/\$SMH_LOCAL_LIB/-/?by-marker"
  curl -s "\$SMH_LOCAL_REPLICA_1_ADMIN/metrics" | grep '^smh_gateway_requests_total'
  # revoke alice's sessions on replica 1; every replica refuses them within a second
  curl -s -H "Authorization: Bearer \$(cat \$SMH_LOCAL_ADMIN_TOKEN_FILE)" -d '{"user_id":"alice"}' "\$SMH_LOCAL_REPLICA_1_ADMIN/admin/v1/revoke"
  # a new session: deploy/local/replicaset.py session --secret-file \$SMH_LOCAL_SESSION_SECRET_FILE --user alice
  deploy/local/ctl.sh status          # HAProxy's view and each replica's pid
  deploy/local/ctl.sh restart 2       # graceful: SIGTERM, drain, start again, wait until HAProxy has it up
Stop everything: deploy/local/down.sh
EOF
