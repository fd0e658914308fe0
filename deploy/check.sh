#!/usr/bin/env bash
# Every deploy/ asset's check, one line each, and a summary line. A check
# that cannot run here (a tool missing) is counted as skipped, loudly;
# any failure makes the exit status non-zero.
# Usage: deploy/check.sh [GATEWAY_BINARY]   (scripts/test runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/smh-gateway}
passed=0 failed=0 skipped=0 failures=()
run() {
  local name=$1; shift
  echo "deploy/check.sh: $name: $*" >&2
  "$@"
  case $? in
    0) passed=$((passed + 1)) ;;
    3) skipped=$((skipped + 1)); echo "deploy/check.sh: $name SKIPPED" >&2 ;;
    *) failed=$((failed + 1)); failures+=("$name") ;;
  esac
}
run kubernetes deploy/k8s/check.sh "$bin"
run docker deploy/docker/check.sh
run systemd deploy/systemd/check.sh "$bin"
run monitoring env SMH_GATEWAY_BIN="$bin" deploy/monitoring/check.sh
run replica-set env SMH_GATEWAY_BIN="$bin" deploy/local/test.sh
summary="deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] || summary="$summary (failed: ${failures[*]})"
echo "$summary"
[ "$failed" = 0 ]
