#!/usr/bin/env bash
# Load benchmark: smh-gateway vs a plain nginx token-injecting proxy vs the
# upstream directly. See benches/load/README.md.
#
# Usage: benches/load/run.sh [--quick] [--workers W] [--reps R] [--duration S]
#                            [--no-memory] [--keep]
#   --quick       2 repetitions of 5 s (default: 5 repetitions of 10 s)
#   --workers W   nginx worker_processes / TOKIO_WORKER_THREADS of both proxies (default 1)
#   --reps R      repetitions (interleaved; arm order rotates each repetition)
#   --duration S  seconds per throughput / latency run
#   --no-memory   skip benches/load/memory.sh
#   --keep        keep the temp dir (configs, every tool's raw output)
#   --quiet-wait S  before each run wait up to S s (default 15; total budget 20x S)
#                 for other work on the machine to drop below 0.25 core
# Exit status is non-zero when any run was invalid (errors of any kind) or a
# check failed (e.g. mint count); results are still written.
set -euo pipefail

CMDLINE="benches/load/run.sh${*:+ $*}"
QUICK=0 WORKERS=1 REPS="" DUR="" MEMORY=1 KEEP=0 QUIET_WAIT=15
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --workers) WORKERS=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --no-memory) MEMORY=0 ;;
    --keep) KEEP=1 ;;
    --quiet-wait) QUIET_WAIT=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then REPS=${REPS:-2}; DUR=${DUR:-5}; else REPS=${REPS:-5}; DUR=${DUR:-10}; fi

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"
cd "$REPO_DIR"

ensure_tools
build_gateway
raise_nofile

make_work_dir load

RAW=$T/raw.tsv
: >"$RAW"
LOGS=$T/logs
mkdir -p "$LOGS"
FAILED=0

printf 'meta\tloadavg_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
# What was built (others may commit while this runs).
printf 'meta\tgw_commit\t%s\n' "$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')" >>"$RAW"
printf 'meta\tgw_dirty\t%s\n' "$(git -C "$REPO_DIR" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)" >>"$RAW"
read -r P_UP P_NGX P_GW P_GWADM P_EMU P_ISO P_ISOADM <<<"$(free_ports 7)"
log "temp dir $T; ports upstream=$P_UP nginx=$P_NGX gateway=$P_GW admin=$P_GWADM emulator=$P_EMU iso-gateway=$P_ISO"

make_tls "$T/tls"
CA=$T/tls/ca.pem
printf 'bench-library-secret\n' >"$T/library-secret"
python3 -c 'import secrets; print(secrets.token_urlsafe(36))' >"$T/session-secret"
chmod 600 "$T/library-secret" "$T/session-secret"

python3 "$BENCH_DIR/jwt.py" "$T/session-secret" bench-user- 0 1 "$T/jwt-warm.txt"
JWT=$(head -1 "$T/jwt-warm.txt")
python3 "$BENCH_DIR/jwt.py" "$T/session-secret" bench-cold- 1 10000 "$T/jwt-10k.txt"
AUTH="Authorization: Bearer $JWT"

# ------------------------------------------------------------ start the arms
write_upstream_conf "$T/upstream" "$P_UP" "$T/tls"
start_nginx "$T/upstream"; UP_PID=$LAST_PID
write_nginx_arm_conf "$T/nginx" "$P_NGX" "$P_UP" "$WORKERS" "$T/tls"
start_nginx "$T/nginx"; NGX_PID=$LAST_PID
MINTS_LOG=$T/upstream/logs/mints.log

DIR_PATH="/api/v1/directory/$BENCH_LIB/-/?by-marker"
REDIR_PATH="/api/v1/file/$BENCH_LIB/-/redirect.jpg"
BIG_PATH="/api/v1/file/$BENCH_LIB/-/big.bin"

url() { # url ARM PATH
  local arm=$1 p=$2 sep="?"
  case $p in *\?*) sep="&" ;; esac
  case $arm in
    direct) echo "https://127.0.0.1:$P_UP$p${sep}access_token=acctkdirect" ;;
    nginx) echo "https://127.0.0.1:$P_NGX$p" ;;
    gateway) echo "https://127.0.0.1:$P_GW$p" ;;
  esac
}

wait_ready "$(url direct "$DIR_PATH")" "$UP_PID" || die "upstream nginx not ready (see $T/upstream/logs)"
wait_ready "$(url nginx "$DIR_PATH")" "$NGX_PID" || die "nginx arm not ready (see $T/nginx/logs)"

GW_CONF=$T/gateway.toml
write_gateway_conf "$GW_CONF" "$P_GW" "$P_GWADM" "$BENCH_LIB" "https://localhost:$P_UP" "$CA" \
  "$T/library-secret" "$T/session-secret" "$T/tls" "$T/audit/audit.jsonl"
mkdir -p "$T/audit"
"$GATEWAY_BIN" check-config "$GW_CONF" >"$LOGS/check-config.txt" 2>&1 ||
  { cat "$LOGS/check-config.txt" >&2; die "generated gateway config refused"; }
GW_PID=""
GW_STARTS=0
start_gw() {
  GW_STARTS=$((GW_STARTS + 1))
  start_gateway "$GW_CONF" "$LOGS/gateway-$GW_STARTS.log" "$WORKERS"; GW_PID=$LAST_PID
  wait_ready "http://127.0.0.1:$P_GWADM/readyz" "$GW_PID" ||
    { cat "$LOGS/gateway-$GW_STARTS.log" >&2; die "gateway not ready"; }
}
restart_gw() { stop_pid "$GW_PID"; start_gw; }
start_gw

# ------------------------------------------------------------ sanity checks
# Same answer from every arm (status, and size for the 1 MiB file), with the
# certificate verified against the throw-away CA.
check() { # check ARM PATH WANT_STATUS [WANT_SIZE]
  local got
  got=$(curl -s --cacert "$CA" -o /dev/null -w '%{http_code} %{size_download}' -H "$AUTH" "$(url "$1" "$2")")
  if [ "${got%% *}" != "$3" ] || { [ -n "${4:-}" ] && [ "${got#* }" != "$4" ]; }; then
    die "sanity check: $1 $2 answered '$got', expected $3 ${4:-}"
  fi
}
for arm in direct nginx gateway; do
  check $arm "$DIR_PATH" 200
  check $arm "$REDIR_PATH" 302
  check $arm "$BIG_PATH" 200 1048576
done
body_direct=$(curl -s --cacert "$CA" "$(url direct "$DIR_PATH")")
for arm in nginx gateway; do
  [ "$(curl -s --cacert "$CA" -H "$AUTH" "$(url $arm "$DIR_PATH")")" = "$body_direct" ] ||
    die "sanity check: $arm listing body differs from the upstream's"
done
# The gateway minted exactly once for the warm user.
[ "$(wc -l <"$MINTS_LOG")" = 1 ] || log "WARNING: upstream saw $(wc -l <"$MINTS_LOG") mints after the first gateway request (expected 1)"
log "sanity checks passed (all arms: 200 listing, 302 redirect, 1 MiB file)"
# Which HTTP version the gateway speaks to the upstream (the nginx arm always
# uses HTTP/1.1 upstream; nginx cannot proxy over h2).
GW_UP_PROTO=$(awk -F'"' 'NR==1 {n=split($2, a, " "); print a[n]}' "$MINTS_LOG")
printf 'meta\tgw_upstream_proto\t%s\n' "${GW_UP_PROTO:-?}" >>"$RAW"
log "gateway -> upstream protocol: ${GW_UP_PROTO:-?}"

# ------------------------------------------------------------ runners
ARMS=(gateway nginx direct)
rotated_arms() { # rotated_arms REP -> arm order for this repetition
  local r=$1 i n=${#ARMS[@]}
  for ((i = 0; i < n; i++)); do printf '%s ' "${ARMS[$(((i + r) % n))]}"; done
}

# CPU accounting: the proxy's own processes (gateway: the process; nginx arm:
# master + workers; direct: none) and the upstream nginx's, read before and
# after every run, give CPU microseconds per completed request — a figure
# that does not depend on how the 2 cores were shared with the client.
proxy_pids() {
  case $1 in
    gateway) echo "$GW_PID" ;;
    nginx) echo "$NGX_PID $(pgrep -P "$NGX_PID" | tr '\n' ' ')" ;;
    direct) echo "" ;;
  esac
}
upstream_pids() { echo "$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ')"; }
CPU_P0=0 CPU_U0=0 CPU_S0="0 0" CPU_C0=0 CPU_T0=0
cpu_start() { # cpu_start ARM  (main shell only: uses children_ticks)
  # shellcheck disable=SC2046
  CPU_P0=$(cpu_ticks $(proxy_pids "$1")); CPU_U0=$(cpu_ticks $(upstream_pids))
  times >"$T/times"; CPU_C0=$(times_ticks "$T/times")
  CPU_S0=$(sys_ticks); CPU_T0=$(date +%s.%N)
}
# cpu_stop ARM REQUESTS -> CPU_LINE: proxy_us_per_req, upstream_us_per_req,
# proxy_cpu_seconds, other_load_cores, steal_cores (tab separated).
# other_load = machine busy CPU minus proxy, upstream and this script's
# children (the load tool): anything else running on the machine meanwhile.
cpu_stop() {
  local p1 u1 c1 s1 t1
  # shellcheck disable=SC2046
  p1=$(cpu_ticks $(proxy_pids "$1")); u1=$(cpu_ticks $(upstream_pids))
  times >"$T/times"; c1=$(times_ticks "$T/times"); s1=$(sys_ticks); t1=$(date +%s.%N)
  CPU_LINE=$(python3 -c '
import sys
a = sys.argv
dp, du, dc, n, hz, arm = int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]), a[6]
b0, st0 = map(int, a[7].split()); b1, st1 = map(int, a[8].split())
secs = max(1e-3, float(a[10]) - float(a[9]))
us = lambda t: "%.1f" % (t * 1e6 / hz / n) if n > 0 else "-"
other = max(0.0, ((b1 - b0) - dp - du - dc) / hz / secs)
print("\t".join(["-" if arm == "direct" else us(dp), us(du), "%.2f" % (dp / hz), "%.2f" % other, "%.2f" % ((st1 - st0) / hz / secs)]))
' "$((p1 - CPU_P0))" "$((u1 - CPU_U0))" "$((c1 - CPU_C0))" "${2:-0}" "$CLK_TCK" "$1" "$CPU_S0" "$s1" "$CPU_T0" "$t1")
}

# Other work on the machine (e.g. compiles) skews a run. Before each run,
# with our own processes idle, measure machine busy CPU over 1 s and wait
# while it exceeds 0.25 core: at most QUIET_WAIT s per run and 20x that in
# total. Runs that still overlap other work are flagged in the report.
QUIET_BUDGET=$((QUIET_WAIT * 20))
wait_quiet() {
  local i a b busy
  for ((i = 0; i < QUIET_WAIT && QUIET_BUDGET > 0; i++)); do
    a=$(sys_ticks); sleep 1; b=$(sys_ticks)
    busy=$((${b%% *} - ${a%% *}))
    [ "$busy" -le $((CLK_TCK / 4)) ] && return 0
    QUIET_BUDGET=$((QUIET_BUDGET - 1))
    [ "$i" = 0 ] && log "  waiting for other work on the machine to settle ($busy ticks/s busy)"
  done
  return 0
}

record_tput() { # record_tput WORKLOAD ARM REP PARSED_LINE MINTS CPU_LINE RAW_OUTPUT
  local rps valid n detail pus uus psec other steal
  IFS=$'\t' read -r rps valid n detail <<<"$4"
  IFS=$'\t' read -r pus uus psec other steal <<<"$6"
  printf 'tput\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$valid" "$5" "$pus" "$uus" "$other" "$steal" "$detail" >>"$RAW"
  if [ "$valid" != 1 ]; then
    FAILED=1
    log "INVALID RUN: $1 $2 rep $3: $detail (raw output: $7)"
  else
    log "  $1 $2 rep $3: $rps req/s ($detail; CPU us/req proxy $pus upstream $uus; other load $other cores)"
  fi
}

run_workload() { # run_workload WORKLOAD ARM REP
  local w=$1 arm=$2 rep=$3 out="$LOGS/$1-$2-rep$3.txt" mints="-" before kind=wrk parsed
  if [ "$w" = cold_10k ]; then
    # 10,000 distinct users, one request each (then wrk stops); the gateway
    # is restarted first so its token and session caches are empty.
    [ "$arm" = gateway ] && restart_gw
    before=$(wc -l <"$MINTS_LOG")
  fi
  wait_quiet
  cpu_start "$arm"
  case $w in
    h1_small) wrk -t1 -c32 -d"${DUR}s" --timeout 10s -H "$AUTH" "$(url "$arm" "$DIR_PATH")" >"$out" 2>&1 || true ;;
    h2_small) kind=h2load
              h2load -D "$DUR" -c 8 -m 16 -t 1 -H "$AUTH" "$(url "$arm" "$DIR_PATH")" >"$out" 2>&1 || true ;;
    redirect) wrk -t1 -c32 -d"${DUR}s" --timeout 10s -H "$AUTH" "$(url "$arm" "$REDIR_PATH")" >"$out" 2>&1 || true ;;
    big_1mib) wrk -t1 -c8 -d"${DUR}s" --timeout 10s -H "$AUTH" "$(url "$arm" "$BIG_PATH")" >"$out" 2>&1 || true ;;
    cold_10k) wrk_limit "$out" "$out.done" "$(url "$arm" "$DIR_PATH")" "$T/jwt-10k.txt" 10000 300 ;;
  esac
  if [ "$w" = cold_10k ]; then
    parsed=$(python3 "$BENCH_DIR/parse.py" wrklimit "$out" "$out.done")
  else
    parsed=$(python3 "$BENCH_DIR/parse.py" "$kind" "$out")
  fi
  cpu_stop "$arm" "$(cut -f3 <<<"$parsed")"
  if [ "$w" = cold_10k ]; then
    sleep 0.5
    mints=$(($(wc -l <"$MINTS_LOG") - before))
  fi
  record_tput "$w" "$arm" "$rep" "$parsed" "$mints" "$CPU_LINE" "$out"
  if [ "$w" = cold_10k ] && [ "$arm" = gateway ] && [ "$mints" != 10000 ]; then
    FAILED=1
    log "CHECK FAILED: cold_10k gateway rep $rep: upstream saw $mints mints, expected 10000"
  fi
  sleep 1
}

WORKLOADS=(h1_small h2_small redirect big_1mib cold_10k)

# Warm-up (not recorded): connections, TLS session caches, upstream pools.
log "warm-up"
for arm in "${ARMS[@]}"; do
  wrk -t1 -c32 -d2s -H "$AUTH" "$(url "$arm" "$DIR_PATH")" >/dev/null 2>&1 || true
  h2load -D 2 -c 8 -m 16 -t 1 -H "$AUTH" "$(url "$arm" "$DIR_PATH")" >/dev/null 2>&1 || true
done

log "throughput: $REPS repetitions x ${#WORKLOADS[@]} workloads x ${#ARMS[@]} arms, ${DUR}s each, workers=$WORKERS"
for ((rep = 1; rep <= REPS; rep++)); do
  order=$(rotated_arms "$rep")
  log "repetition $rep/$REPS (arm order: $order)"
  for w in "${WORKLOADS[@]}"; do
    for arm in $order; do
      run_workload "$w" "$arm" "$rep"
    done
  done
done

# ------------------------------------------------------------ fixed-rate latency
NGX_MEDIAN=$(awk -F'\t' '$1=="tput" && $2=="h1_small" && $3=="nginx" && $6==1 {print $5}' "$RAW" |
  sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
RATE=$(python3 -c "import sys; print(max(1, int(float(sys.argv[1]) * 0.5)))" "$NGX_MEDIAN")
log "fixed-rate latency: $RATE req/s (50% of nginx's median h1 small-GET $NGX_MEDIAN req/s), ${DUR}s per run"
for ((rep = 1; rep <= REPS; rep++)); do
  for arm in $(rotated_arms "$rep"); do
    out="$LOGS/latency-$arm-rep$rep.json"
    wait_quiet
    cpu_start "$arm"
    oha -q "$RATE" -z "${DUR}s" -w -c 32 --insecure --no-tui --latency-correction --output-format json \
      -H "$AUTH" "$(url "$arm" "$DIR_PATH")" >"$out" 2>"$out.err" || true
    IFS=$'\t' read -r rps p50 p99 valid n detail <<<"$(python3 "$BENCH_DIR/parse.py" oha "$out")"
    cpu_stop "$arm" "$n"
    IFS=$'\t' read -r pus uus psec other steal <<<"$CPU_LINE"
    printf 'lat\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$arm" "$rep" "$RATE" "$rps" "$p50" "$p99" "$valid" "$pus" "$psec" "$other" "$steal" "$detail" >>"$RAW"
    if [ "$valid" != 1 ]; then FAILED=1; log "INVALID RUN: latency $arm rep $rep: $detail ($out)"
    else log "  latency $arm rep $rep: p50 ${p50} ms p99 ${p99} ms at $rps req/s (proxy CPU ${psec} s, $pus us/req; other load $other cores)"; fi
    sleep 1
  done
done

# ------------------------------------------------------------ slow-mint isolation
ISO_D=10
[ "$QUICK" = 1 ] && ISO_D=$DUR
ISO_REPS=$REPS
log "slow-mint isolation: emulator with --token-latency-ms 1000, ${ISO_D}s runs, $ISO_REPS repetitions"
mkdir -p "$T/emu"
TOKIO_WORKER_THREADS=$WORKERS "$GATEWAY_BIN" emulator --listen "127.0.0.1:$P_EMU" --state-dir "$T/emu" \
  --token-latency-ms 1000 >"$LOGS/emulator.out" 2>"$LOGS/emulator.err" &
EMU_PID=$!; STARTED_PIDS+=("$EMU_PID")
for ((i = 0; i < 100; i++)); do grep -q '^ *export CA=' "$LOGS/emulator.out" 2>/dev/null && break; sleep 0.1; done
EXPORT_LINE=$(grep '^ *export CA=' "$LOGS/emulator.out") || die "emulator printed no export line (see $LOGS/emulator.*)"
EMU_CA=$(sed -E 's/.*CA=([^ ]+).*/\1/' <<<"$EXPORT_LINE")
EMU_BASE=$(sed -E 's/.*BASE=([^ ]+).*/\1/' <<<"$EXPORT_LINE")
EMU_LIB=$(sed -E 's/.*LIB=([^ ]+).*/\1/' <<<"$EXPORT_LINE")
sed -E 's/.*SECRET=([^ ]+).*/\1/' <<<"$EXPORT_LINE" >"$T/emu-secret"; chmod 600 "$T/emu-secret"
ISO_CONF=$T/gateway-iso.toml
write_gateway_conf "$ISO_CONF" "$P_ISO" "$P_ISOADM" "$EMU_LIB" "$EMU_BASE" "$EMU_CA" \
  "$T/emu-secret" "$T/session-secret" "$T/tls" "$T/audit/audit-iso.jsonl"
start_gateway "$ISO_CONF" "$LOGS/gateway-iso.log" "$WORKERS"; ISO_PID=$LAST_PID
wait_ready "http://127.0.0.1:$P_ISOADM/readyz" "$ISO_PID" || { cat "$LOGS/gateway-iso.log" >&2; die "iso gateway not ready"; }
ISO_PATH="/api/v1/directory/$EMU_LIB/-/?by-marker"
ISO_URL="https://127.0.0.1:$P_ISO$ISO_PATH"
python3 "$BENCH_DIR/jwt.py" "$T/session-secret" iso-warm- 0 1 "$T/jwt-iso-warm.txt"
ISO_AUTH="Authorization: Bearer $(head -1 "$T/jwt-iso-warm.txt")"
t0=$(date +%s.%N)
code=$(curl -s --cacert "$CA" -o "$LOGS/iso-warm-first.txt" -w '%{http_code}' -H "$ISO_AUTH" "$ISO_URL")
t1=$(date +%s.%N)
[ "$code" = 200 ] || die "iso gateway: warm user's first request answered $code ($(cat "$LOGS/iso-warm-first.txt"))"
log "  warm user's first request (includes the 1 s mint): $(python3 -c "print(round(($t1-$t0)*1000))") ms"
iso_oha() { # iso_oha PHASE REP
  local out="$LOGS/iso-$1-rep$2.json" rps p50 p99 valid detail
  oha -q 200 -z "${ISO_D}s" -w -c 8 --insecure --no-tui --latency-correction --output-format json \
    -H "$ISO_AUTH" "$ISO_URL" >"$out" 2>"$out.err" || true
  IFS=$'\t' read -r rps p50 p99 valid _ detail <<<"$(python3 "$BENCH_DIR/parse.py" oha "$out")"
  printf 'iso\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rps" "$p50" "$p99" "$valid" "$detail" >>"$RAW"
  if [ "$valid" != 1 ]; then FAILED=1; log "INVALID RUN: isolation $1 rep $2: $detail ($out)"
  else log "  warm user ($1) rep $2: p50 $p50 ms p99 $p99 ms"; fi
}
for ((rep = 1; rep <= ISO_REPS; rep++)); do
  # Alternate which phase goes first.
  if ((rep % 2)); then phases="alone with_cold"; else phases="with_cold alone"; fi
  for phase in $phases; do
    wait_quiet
    if [ "$phase" = alone ]; then
      iso_oha alone "$rep"
    else
      # Enough fresh users for 50 per wave for the whole run (waves take >= 1 s).
      python3 "$BENCH_DIR/jwt.py" "$T/session-secret" "iso-cold-$rep-" 0 $((50 * (ISO_D + 2))) "$T/jwt-iso-cold.txt"
      python3 "$BENCH_DIR/cold_users.py" "$P_ISO" "$ISO_PATH" "$CA" "$T/jwt-iso-cold.txt" 50 "$ISO_D" \
        "$LOGS/iso-cold-rep$rep.json" >/dev/null 2>"$LOGS/iso-cold-rep$rep.err" &
      COLD_PID=$!
      sleep 0.2
      iso_oha with_cold "$rep"
      wait "$COLD_PID" || true
      python3 - "$LOGS/iso-cold-rep$rep.json" "$rep" >>"$RAW" <<'EOF' || { echo "no cold-user result" >&2; }
import json, sys
r = json.load(open(sys.argv[1]))
print("isocold\t{}\t{}\t{}\t{:.1f}\t{:.1f}\t{:.1f}\t{:.1f}\t{}\t{}".format(
    sys.argv[2], r["requests"], r["ok"], r["p50_ms"], r["p99_ms"], r["min_ms"], r["max_ms"], r["errors"],
    "; ".join(r["error_samples"])))
EOF
      if ! grep -qP "^isocold\t$rep\t" "$RAW" || awk -F'\t' -v r="$rep" '$1=="isocold" && $2==r && $9>0 {f=1} END {exit !f}' "$RAW"; then
        FAILED=1; log "INVALID RUN: isolation cold users rep $rep had errors (see $LOGS/iso-cold-rep$rep.*)"
      else
        log "  cold users rep $rep: $(awk -F'\t' -v r="$rep" '$1=="isocold" && $2==r {print $4" ok, p50 "$5" ms, max "$8" ms"}' "$RAW")"
      fi
    fi
    sleep 1
  done
done

# Everything above is done: stop it before the memory runs so they have the machine.
cleanup_started

# ------------------------------------------------------------ memory
MEM_TSV=$T/mem.tsv
: >"$MEM_TSV"
if [ "$MEMORY" = 1 ]; then
  log "memory: benches/load/memory.sh --workers $WORKERS"
  if ! "$BENCH_DIR/memory.sh" --workers "$WORKERS" --out "$MEM_TSV"; then
    FAILED=1; log "memory.sh failed or reported a problem"
  fi
fi

# ------------------------------------------------------------ report
mkdir -p "$BENCH_DIR/results"
cp "$RAW" "$BENCH_DIR/results/latest.tsv"
[ -s "$MEM_TSV" ] && cat "$MEM_TSV" >>"$BENCH_DIR/results/latest.tsv"
python3 "$BENCH_DIR/report.py" \
  --raw "$RAW" --mem "$MEM_TSV" --cmdline "$CMDLINE" --workers "$WORKERS" --reps "$REPS" \
  --duration "$DUR" --iso-duration "$ISO_D" --rate "$RATE" --failed "$FAILED" \
  >"$BENCH_DIR/results/latest.md"
cat "$BENCH_DIR/results/latest.md"
log "wrote benches/load/results/latest.md (raw rows: benches/load/results/latest.tsv)"
if [ "$FAILED" != 0 ]; then
  log "SOME RUNS WERE INVALID OR A CHECK FAILED (see above and the table); exiting non-zero"
  exit 1
fi
