#!/usr/bin/env bash
# The steady cost of one proxied request: the gateway runs under
# valgrind's callgrind (one worker), h2load sends N small GETs (HTTP/1.1
# keep-alive, 8 connections) after a warm-up, and the script prints the
# instructions executed per request (all gateway threads, audit writer
# included) and the calls to malloc per request. Unlike req/s on a shared
# 2-core VM, these numbers repeat closely, so a
# change to the hot path can be judged before a full load run (repeat runs
# agree within about 2%).
#
# Usage: benches/load/instructions.sh [--requests N] [--keep] [--toml 'EXTRA TOML']
#                                     [--bin PATH]
#   --bin PATH  measure this gateway binary (e.g. one built from an older
#               commit, for a before/after pair) instead of building
# Builds the `profiling` profile (release + debug info); installs valgrind
# and h2load when missing. Note: under valgrind ring picks its AVX (not
# SHA-NI) SHA-256, so the session-cache digest weighs more here than on the
# real CPU.
set -euo pipefail

N=4000 KEEP=0 EXTRA="" BIN=""
while [ $# -gt 0 ]; do
  case $1 in
    --requests) N=$2; shift ;;
    --keep) KEEP=1 ;;
    --toml) EXTRA=$2; shift ;;
    --bin) BIN=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"
cd "$REPO_DIR"

ensure_tools
if ! command -v valgrind >/dev/null 2>&1; then
  log "installing valgrind"
  apt-get install -y -qq valgrind >&2 || die "valgrind not installable"
fi
if [ -n "$BIN" ]; then
  GATEWAY_BIN=$BIN
else
  log "building the gateway: cargo build --profile profiling"
  cargo build --profile profiling >&2 || die "cargo build --profile profiling failed"
  GATEWAY_BIN=$REPO_DIR/target/profiling/smh-gateway
fi

make_work_dir instr

read -r P_UP P_GW P_GWADM <<<"$(free_ports 3)"
make_tls "$T/tls"
printf 'bench-library-secret\n' >"$T/library-secret"
python3 -c 'import secrets; print(secrets.token_urlsafe(36))' >"$T/session-secret"
chmod 600 "$T/library-secret" "$T/session-secret"
python3 "$BENCH_DIR/jwt.py" "$T/session-secret" bench-user- 0 1 "$T/jwt-warm.txt"
JWT=$(head -1 "$T/jwt-warm.txt")
write_upstream_conf "$T/upstream" "$P_UP" "$T/tls"
start_nginx "$T/upstream"
mkdir -p "$T/audit"
write_gateway_conf "$T/gw.toml" "$P_GW" "$P_GWADM" "$BENCH_LIB" "https://localhost:$P_UP" "$T/tls/ca.pem" \
  "$T/library-secret" "$T/session-secret" "$T/tls" "$T/audit/audit.jsonl"
[ -n "$EXTRA" ] && printf '%b\n' "$EXTRA" >>"$T/gw.toml"

TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$T/cg.out" \
  "$GATEWAY_BIN" run --config "$T/gw.toml" >"$T/gw.log" 2>&1 &
GW_PID=$!
STARTED_PIDS+=("$GW_PID")
wait_ready "http://127.0.0.1:$P_GWADM/readyz" "$GW_PID" 600 || { cat "$T/gw.log" >&2; die "gateway did not start under valgrind"; }
URL="https://127.0.0.1:$P_GW/api/v1/directory/$BENCH_LIB/-/?by-marker"
h2load --h1 -n 400 -c 8 -H "Authorization: Bearer $JWT" "$URL" >"$T/warm.txt"
callgrind_control -z "$GW_PID" >/dev/null
h2load --h1 -n "$N" -c 8 -H "Authorization: Bearer $JWT" "$URL" >"$T/run.txt"
grep -q "^status codes: $N 2xx" "$T/run.txt" || { cat "$T/run.txt" >&2; die "not every request answered 2xx"; }
sleep 0.5 # let the audit writer drain its queue into the counted window
callgrind_control -d "$GW_PID" >/dev/null
sleep 1
OUT=$(ls -t "$T"/cg.out* | head -1)
python3 - "$OUT" "$N" <<'EOF'
import re, subprocess, sys
path, n = sys.argv[1], int(sys.argv[2])
total = 0
for line in open(path):
    m = re.match(r'(?:summary|totals):\s+(\d+)', line)
    if m:
        total = int(m.group(1))
        break
tree = subprocess.run(['callgrind_annotate', '--tree=caller', '--threshold=100', '--auto=no', path],
                      capture_output=True, text=True).stdout.splitlines()
calls, block = 0, []
for line in tree:
    if re.search(r'\*\s+\S*malloc\.c:malloc \[', line):
        calls = sum(int(c.replace(',', '')) for c in
                    (re.search(r'\(([\d,]+)x\)', l).group(1) for l in block if re.search(r'\(([\d,]+)x\)', l)))
        break
    block = [] if '*' in line else block + [line]
print(f"requests measured: {n}")
print(f"instructions per request: {total // n:,}")
print(f"malloc calls per request: {calls / n:.1f}")
EOF
