#!/usr/bin/env bash
# The local replica-set test: starts a set of 3 replicas (up.sh) in a temp
# dir, then drives it through HAProxy with keep-alive clients that never
# retry and count every request (replicaset.py test):
#   - steady load, spread over the replicas (each one's smh_gateway_requests_total)
#   - a revocation on one replica, refused through every replica within 1 s
#   - a rolling restart (SIGTERM, lame duck, drain, start, HAProxy up) with
#     zero failed requests
#   - SIGKILL of one replica: failures only on the connections that were on it
#   - the revoked session still refused by every restarted replica
# prints a summary and exits non-zero if any check failed. Everything it
# started is stopped on exit (KEEP_STATE=1 keeps the logs).
#
# Usage: deploy/local/test.sh [replicaset.py test options: --conns 8 --rate 300 --steady 1500 --kill 2]
#   SMH_GATEWAY_BIN  the gateway binary (default: the newer of target/release and target/debug)
# Needs: haproxy, redis-server, openssl, python3, curl (Debian: apt-get install -y haproxy redis-server).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/smh-gateway-local-test.XXXXXX")"
status=1
finish() {
  trap - EXIT
  trap "" INT TERM  # cleaning up: not to be cut short
  if [ "$status" != 0 ]; then
    echo "deploy/local/test.sh: FAILED; the last lines of each log:" >&2
    for f in "$STATE"/*/log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if [ -f "$STATE/env" ]; then
    KEEP_STATE=1 "$LOCAL_DIR/down.sh" "$STATE" >/dev/null || true
  fi
  if [ "${KEEP_STATE:-0}" = 1 ]; then
    echo "deploy/local/test.sh: state kept in $STATE" >&2
  else
    rm -rf "$STATE"
  fi
  exit "$status"
}
trap finish EXIT
trap 'status=130; exit' INT TERM

started=$(date +%s)
STATE_DIR="$STATE" "$LOCAL_DIR/up.sh" 3 >"$STATE/up.txt"
sed -n '1,/^  files:/p' "$STATE/up.txt"
# In the background, so that a SIGTERM or Ctrl-C stops it and cleans up at once.
"$LOCAL_DIR/replicaset.py" test --state "$STATE" "$@" &
driver=$!
trap 'kill -TERM "$driver" 2>/dev/null; status=130; exit' INT TERM
set +e
wait "$driver"
status=$?
set -e
echo "deploy/local/test.sh: $([ "$status" = 0 ] && echo PASSED || echo FAILED) in $(($(date +%s) - started)) s"
