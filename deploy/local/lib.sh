# Shared by up.sh, down.sh and ctl.sh (sourced, not run).
# shellcheck shell=bash

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LOCAL_DIR/../.." && pwd)"
# Where up.sh records the state dir of the last set it started, so that
# down.sh and ctl.sh find it without arguments.
LAST_POINTER="${TMPDIR:-/tmp}/smh-gateway-local.last"

die() {
  echo "deploy/local: $*" >&2
  exit 1
}

# The state dir: $1, else $STATE_DIR, else the last one up.sh started.
resolve_state() {
  local s="${1:-${STATE_DIR:-}}"
  if [ -z "$s" ] && [ -f "$LAST_POINTER" ]; then
    s="$(cat "$LAST_POINTER")"
  fi
  [ -n "$s" ] || die "no state dir (pass it, set STATE_DIR, or run up.sh first)"
  [ -f "$s/env" ] || die "$s/env missing: not a set started by up.sh"
  (cd "$s" && pwd)
}

# The gateway binary: $SMH_GATEWAY_BIN, else the newer of the release and
# debug builds (a stale release build next to a fresh debug one is the
# usual way to test the wrong code).
find_gateway_bin() {
  if [ -n "${SMH_GATEWAY_BIN:-}" ]; then
    [ -x "$SMH_GATEWAY_BIN" ] || die "SMH_GATEWAY_BIN=$SMH_GATEWAY_BIN is not executable"
    (cd "$(dirname "$SMH_GATEWAY_BIN")" && echo "$(pwd)/$(basename "$SMH_GATEWAY_BIN")")
    return
  fi
  local rel="$REPO_DIR/target/release/smh-gateway" dbg="$REPO_DIR/target/debug/smh-gateway"
  if [ -x "$rel" ] && [ -x "$dbg" ]; then
    if [ "$dbg" -nt "$rel" ]; then echo "$dbg"; else echo "$rel"; fi
  elif [ -x "$rel" ]; then
    echo "$rel"
  elif [ -x "$dbg" ]; then
    echo "$dbg"
  else
    die "no gateway binary: build one (cargo build [--release]) or set SMH_GATEWAY_BIN"
  fi
}

# spawn DIR CMD...: runs CMD detached (own session, stdin from /dev/null,
# output appended to DIR/log), its pid in DIR/pid and, once it has exited,
# its exit status in DIR/rc (a small waiter shell stays behind for that).
spawn() {
  local d="$1"
  shift
  mkdir -p "$d"
  rm -f "$d/pid" "$d/rc"
  setsid bash -c '
    d="$1"; shift
    "$@" >>"$d/log" 2>&1 </dev/null &
    echo $! >"$d/pid.tmp" && mv "$d/pid.tmp" "$d/pid"
    wait $!
    echo $? >"$d/rc"
  ' spawn "$d" "$@" </dev/null >/dev/null 2>&1 &
  local i
  for i in $(seq 1 200); do
    [ -s "$d/pid" ] && return 0
    sleep 0.01
  done
  die "$d: process did not start"
}

# alive DIR NAME: the process in DIR/pid runs and its command line names NAME
# (so a recycled pid is never signalled).
alive() {
  local d="$1" name="$2" pid
  [ -s "$d/pid" ] || return 1
  pid="$(cat "$d/pid")"
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr "\\0" " " 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$name"
}

# signal DIR NAME SIG
signal() {
  local d="$1" name="$2" sig="$3"
  if alive "$d" "$name"; then
    kill "-$sig" "$(cat "$d/pid")" 2>/dev/null || true
  fi
}

# wait_gone DIR NAME SECONDS: until the process is gone (1 if still there).
wait_gone() {
  local d="$1" name="$2" secs="$3" end
  end=$((SECONDS + secs))
  while alive "$d" "$name"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}

# wait_ready URL SECONDS: until GET URL answers 200.
wait_ready() {
  local url="$1" secs="$2" end
  end=$((SECONDS + secs))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)" = 200 ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}
