#!/usr/bin/env bash
# Controls one replica of a set started by up.sh.
#
# Usage: deploy/local/ctl.sh [--state DIR] COMMAND
#   start K [--no-wait]  start replica K (same config and ports); waits for
#                        its /readyz unless --no-wait
#   term K               SIGTERM: /readyz 503 at once, lame duck, drain, exit
#   kill K               SIGKILL
#   restart K            graceful: SIGTERM, wait for the exit, start again,
#                        wait until HAProxy has marked it up
#   status               HAProxy's view of each replica, pids, exit statuses
# The state dir is --state DIR, else $STATE_DIR, else the last set up.sh started.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

state_arg=""
if [ "${1:-}" = --state ]; then
  state_arg="$2"
  shift 2
fi
STATE="$(resolve_state "$state_arg")"
# shellcheck disable=SC1091
. "$STATE/env"
PY="$LOCAL_DIR/replicaset.py"

cmd="${1:-status}"
k="${2:-}"
need_k() {
  [ -n "$k" ] && [ -d "$STATE/replica-$k" ] || die "no replica '$k' in $STATE"
}
d="$STATE/replica-$k"

case "$cmd" in
  start)
    need_k
    ! alive "$d" smh-gateway || die "replica $k is running (pid $(cat "$d/pid"))"
    echo "---- start $(date -u +%FT%TZ)" >>"$d/log"
    spawn "$d" "$SMH_GATEWAY_BIN" run --config "$d/gateway.toml"
    pid="$(cat "$d/pid")"
    # Keep the env file's pid current.
    sed -i "s/^SMH_LOCAL_REPLICA_${k}_PID=.*/SMH_LOCAL_REPLICA_${k}_PID=$pid/" "$STATE/env"
    if [ "${3:-}" != --no-wait ]; then
      wait_ready "http://127.0.0.1:$(cat "$d/admin-port")/readyz" 60 ||
        die "replica $k not ready within 60 s: $(tail -n 5 "$d/log")"
    fi
    echo "replica $k started (pid $pid)"
    ;;
  term)
    need_k
    alive "$d" smh-gateway || die "replica $k is not running"
    signal "$d" smh-gateway TERM
    ;;
  kill)
    need_k
    alive "$d" smh-gateway || die "replica $k is not running"
    signal "$d" smh-gateway KILL
    ;;
  restart)
    need_k
    if alive "$d" smh-gateway; then
      signal "$d" smh-gateway TERM
      wait_gone "$d" smh-gateway $((SMH_LOCAL_LAME_DUCK_SECS + SMH_LOCAL_DRAIN_TIMEOUT_SECS + 20)) ||
        die "replica $k did not exit after SIGTERM"
      echo "replica $k exited with status $(cat "$d/rc" 2>/dev/null || echo '?')"
    fi
    "$0" --state "$STATE" start "$k"
    "$PY" wait-haproxy "$SMH_LOCAL_HAPROXY_SOCK" --up "r$k" --timeout 30 ||
      die "HAProxy did not mark r$k up within 30 s"
    echo "HAProxy has r$k up"
    ;;
  status)
    "$PY" haproxy-status "$SMH_LOCAL_HAPROXY_SOCK" || true
    for r in "$STATE"/replica-*; do
      kk="${r##*-}"
      if alive "$r" smh-gateway; then
        echo "replica $kk: running, pid $(cat "$r/pid")"
      else
        echo "replica $kk: stopped (last exit status $(cat "$r/rc" 2>/dev/null || echo '?'))"
      fi
    done
    ;;
  *)
    die "unknown command '$cmd' (start|term|kill|restart|status)"
    ;;
esac
