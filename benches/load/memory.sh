#!/usr/bin/env bash
# Resident memory of the gateway (VmRSS from /proc/PID/status):
#   (a) idle after start;
#   (b) holding 10,000 TLS keep-alive connections, almost idle (one GET each
#       on opening, then one every 10 s: the gateway drops keep-alive
#       connections with no request for 15 s, its header-read timeout);
#   (c) after 100,000 distinct users (=> 100,000 cached SMH tokens and
#       100,000 cached sessions), confirmed from the admin /metrics gauges.
# Called by benches/load/run.sh (unless --no-memory); also runs alone.
#
# Usage: benches/load/memory.sh [--workers W] [--conns N] [--users N] [--refresh S] [--out FILE] [--keep]
#   --refresh S  seconds between the requests each held connection sends (default 10; 0 = none)
#   --out FILE   append "mem<TAB>key<TAB>value" rows (run.sh's report reads them)
# Exit status is non-zero when a measurement could not be made cleanly.
set -euo pipefail

WORKERS=1 CONNS=10000 USERS=100000 OUT="" KEEP=0 REFRESH=10
while [ $# -gt 0 ]; do
  case $1 in
    --workers) WORKERS=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --users) USERS=$2; shift ;;
    --refresh) REFRESH=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"
cd "$REPO_DIR"
ensure_tools
[ -x "$GATEWAY_BIN" ] || build_gateway

# Both sides (this shell's children: the gateway and the Python client) need
# a descriptor per connection.
raise_nofile
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((CONNS + 1024)) ]; then
  die "open-file limit is $NOFILE (could not raise to 65536); need at least $((CONNS + 1024))"
fi
[ "$NOFILE" -ge 65536 ] 2>/dev/null || log "note: ulimit -n 65536 not permitted here; using the hard limit $NOFILE"

HOLD_PID=""
before_exit() { if [ -n "$HOLD_PID" ]; then stop_pid "$HOLD_PID"; fi; }
make_work_dir mem
PROBLEM=0
# Rows go to --out when given (run.sh's report reads them), else to stdout.
row() {
  if [ -n "$OUT" ]; then printf 'mem\t%s\t%s\n' "$1" "$2" >>"$OUT"; else printf 'mem\t%s\t%s\n' "$1" "$2"; fi
  log "  $1 = $2"
}

read -r P_UP P_GW P_ADM <<<"$(free_ports 3)"
make_tls "$T/tls"
printf 'bench-library-secret\n' >"$T/library-secret"
python3 -c 'import secrets; print(secrets.token_urlsafe(36))' >"$T/session-secret"
chmod 600 "$T/library-secret" "$T/session-secret"
mkdir -p "$T/logs" "$T/audit"
write_upstream_conf "$T/upstream" "$P_UP" "$T/tls"
start_nginx "$T/upstream"; UP_PID=$LAST_PID
DIR_PATH="/api/v1/directory/$BENCH_LIB/-/?by-marker"
wait_ready "https://127.0.0.1:$P_UP$DIR_PATH&access_token=x" "$UP_PID" || die "upstream nginx not ready"
CONF=$T/gateway.toml
write_gateway_conf "$CONF" "$P_GW" "$P_ADM" "$BENCH_LIB" "https://localhost:$P_UP" "$T/tls/ca.pem" \
  "$T/library-secret" "$T/session-secret" "$T/tls" "$T/audit/audit.jsonl"
GW_URL="https://127.0.0.1:$P_GW$DIR_PATH"

python3 "$BENCH_DIR/jwt.py" "$T/session-secret" mem-warm- 0 1 "$T/jwt-warm.txt"
JWT=$(head -1 "$T/jwt-warm.txt")

start_gw() {
  start_gateway "$CONF" "$T/logs/gateway-$1.log" "$WORKERS"; GW_PID=$LAST_PID
  wait_ready "http://127.0.0.1:$P_ADM/readyz" "$GW_PID" || { cat "$T/logs/gateway-$1.log" >&2; die "gateway not ready"; }
}
one_request() {
  local code
  code=$(curl -s --cacert "$T/tls/ca.pem" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $JWT" "$GW_URL")
  [ "$code" = 200 ] || die "warm-up request answered $code"
}

# ---------------------------------------------------------------- (a) + (b)
log "memory (a): idle gateway (workers=$WORKERS)"
start_gw conns
sleep 2
RSS_IDLE=$(rss_kib "$GW_PID")
row idle_rss_kib "$RSS_IDLE"
one_request
sleep 1
RSS_WARM=$(rss_kib "$GW_PID")
row warm_rss_kib "$RSS_WARM"

log "memory (b): opening $CONNS TLS keep-alive connections (one GET each, then one per connection every ${REFRESH}s)"
python3 "$BENCH_DIR/hold_conns.py" "$P_GW" "$DIR_PATH" "$JWT" "$CONNS" 900 "$REFRESH" >"$T/logs/hold.out" 2>"$T/logs/hold.err" &
HOLD_PID=$!
STARTED_PIDS+=("$HOLD_PID")
for ((i = 0; i < 6000; i++)); do # at most 10 minutes
  grep -q '^READY' "$T/logs/hold.out" 2>/dev/null && break
  alive "$HOLD_PID" || break
  sleep 0.1
done
READY=$(grep '^READY' "$T/logs/hold.out" || true)
[ -n "$READY" ] || { cat "$T/logs/hold.err" >&2; die "connection holder never became ready"; }
log "  holder: $READY"
OK=$(sed -E 's/.*ok=([0-9]+).*/\1/' <<<"$READY")
FAILED_CONNS=$(sed -E 's/.*failed=([0-9]+).*/\1/' <<<"$READY")
sleep 3
RSS_CONNS=$(rss_kib "$GW_PID")
ESTAB=$(ss -Htn state established "( sport = :$P_GW )" 2>/dev/null | wc -l)
GW_FDS=$(find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
row conns_opened "$OK"
row conns_failed "$FAILED_CONNS"
row conns_established_at_measure "$ESTAB"
row gateway_fds_at_measure "$GW_FDS"
row conns_rss_kib "$RSS_CONNS"
row conns_refresh_s "$REFRESH"
# Per connection actually held when measured.
if [ "$ESTAB" -gt 0 ]; then
  row kib_per_conn "$(python3 -c "import sys; print(round((int(sys.argv[1]) - int(sys.argv[2])) / int(sys.argv[3]), 2))" "$RSS_CONNS" "$RSS_WARM" "$ESTAB")"
fi
if [ "$FAILED_CONNS" != 0 ] || [ "$OK" != "$CONNS" ]; then
  PROBLEM=1; log "PROBLEM: only $OK of $CONNS connections opened ($FAILED_CONNS failed)"
fi
if [ "$ESTAB" -lt "$OK" ]; then
  PROBLEM=1; log "PROBLEM: only $ESTAB connections still established when measured (gateway closed some)"
fi
stop_pid "$HOLD_PID"; HOLD_PID=""
REFRESH_FAILED=$(sed -nE 's/^CLOSED refresh_failed=([0-9]+).*/\1/p' "$T/logs/hold.out")
row conns_refresh_failed "${REFRESH_FAILED:-?}"
if [ "${REFRESH_FAILED:-1}" != 0 ]; then
  PROBLEM=1; log "PROBLEM: ${REFRESH_FAILED:-?} refresh requests on held connections failed (see $T/logs/hold.*)"
fi
sleep 3
row after_close_rss_kib "$(rss_kib "$GW_PID")"
stop_pid "$GW_PID"

# ---------------------------------------------------------------- (c)
log "memory (c): $USERS distinct users => $USERS cached tokens + sessions"
python3 "$BENCH_DIR/jwt.py" "$T/session-secret" mem-user- 1 "$USERS" "$T/jwt-users.txt"
start_gw users
one_request
sleep 1
MINTS_BEFORE=$(wc -l <"$T/upstream/logs/mints.log")
RSS_BEFORE=$(rss_kib "$GW_PID")
row users_before_rss_kib "$RSS_BEFORE"
wrk_limit "$T/logs/wrk-users.txt" "$T/logs/wrk-users.done" "$GW_URL" "$T/jwt-users.txt" "$USERS" 900
IFS=$'\t' read -r rps valid _ detail <<<"$(python3 "$BENCH_DIR/parse.py" wrklimit "$T/logs/wrk-users.txt" "$T/logs/wrk-users.done")"
row users_wrk_rps "$rps"
row users_wrk_valid "$valid"
[ "$valid" = 1 ] || { PROBLEM=1; log "INVALID RUN: $USERS-user wrk run: $detail"; cat "$T/logs/wrk-users.txt" >&2; }
sleep 3
RSS_AFTER=$(rss_kib "$GW_PID")
TOK=$(metric smh_gateway_token_cache_entries "$P_ADM")
SES=$(metric smh_gateway_session_cache_entries "$P_ADM")
MINTS=$(($(wc -l <"$T/upstream/logs/mints.log") - MINTS_BEFORE))
row users_after_rss_kib "$RSS_AFTER"
row users_token_cache_entries "${TOK:-?}"
row users_session_cache_entries "${SES:-?}"
row users_mints "$MINTS"
row bytes_per_token_session "$(python3 -c "import sys; print(round((int(sys.argv[1]) - int(sys.argv[2])) * 1024 / int(sys.argv[3])))" "$RSS_AFTER" "$RSS_BEFORE" "$USERS")"
log "  token cache entries ${TOK:-?}, session cache entries ${SES:-?}, upstream mints $MINTS"
stop_pid "$GW_PID"

row problem "$PROBLEM"
exit "$PROBLEM"
