#!/usr/bin/env bash
# Stops a set started by up.sh: HAProxy, the replicas, Redis and the
# emulator (SIGTERM, then SIGKILL for anything still there after 20 s), and
# removes its state dir if up.sh made it as a temp dir (KEEP_STATE=1 keeps it).
#
# Usage: deploy/local/down.sh [STATE_DIR]   (default $STATE_DIR, else the last set up.sh started)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

STATE="$(resolve_state "${1:-}")"

# name of the process each pid file must belong to
procs=()
[ -d "$STATE/haproxy" ] && procs+=("$STATE/haproxy:haproxy")
for r in "$STATE"/replica-*; do
  [ -d "$r" ] && procs+=("$r:smh-gateway")
done
[ -d "$STATE/redis" ] && procs+=("$STATE/redis:redis-server")
[ -d "$STATE/emulator" ] && procs+=("$STATE/emulator:smh-gateway")

for p in "${procs[@]}"; do
  signal "${p%%:*}" "${p##*:}" TERM
done
for p in "${procs[@]}"; do
  if ! wait_gone "${p%%:*}" "${p##*:}" 20; then
    echo "deploy/local/down.sh: ${p%%:*} still running after 20 s: SIGKILL" >&2
    signal "${p%%:*}" "${p##*:}" KILL
    wait_gone "${p%%:*}" "${p##*:}" 5 || echo "deploy/local/down.sh: ${p%%:*} survived SIGKILL" >&2
  fi
done
# The waiter shells end with their process; give them a moment to write rc.
sleep 0.1

if [ "$(cat "$LAST_POINTER" 2>/dev/null || true)" = "$STATE" ]; then
  rm -f "$LAST_POINTER"
fi
if [ -f "$STATE/.temporary" ] && [ "${KEEP_STATE:-0}" != 1 ]; then
  rm -rf "$STATE"
  echo "stopped; removed $STATE"
else
  rm -f "$STATE/env"
  echo "stopped; logs kept in $STATE"
fi
