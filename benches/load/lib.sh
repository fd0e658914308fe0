# Shared helpers for benches/load/run.sh and benches/load/memory.sh.
# Sourced, not executed. Everything here talks to 127.0.0.1 only, and every
# wait loop is bounded.

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_DIR=${REPO_DIR:-$(cd "$BENCH_DIR/../.." && pwd)}
GATEWAY_BIN=${GATEWAY_BIN:-$REPO_DIR/target/release/smh-gateway}
BENCH_LIB=smhbench
UPSTREAM_TOKEN_BODY='{"accessToken":"acctkbench0001","expiresIn":86400}'

# PIDs this harness started; cleanup() ends exactly these (by id).
STARTED_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- tools
ensure_tools() {
  local need=()
  command -v nginx >/dev/null 2>&1 || need+=(nginx)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}"
    log "installing ${need[*]} with apt-get"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
  fi
  # The Debian package enables and starts a system nginx on :80 via
  # invoke-rc.d; we never use it (our nginx instances run with their own
  # prefix and config), and we leave it alone.
  if ! command -v oha >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/oha" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      log "installing oha with cargo install oha --locked (takes a few minutes)"
      cargo install oha --locked >&2
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
  command -v oha >/dev/null 2>&1 || die "oha not found after install"
}

build_gateway() {
  log "building the gateway: cargo build --release"
  (cd "$REPO_DIR" && cargo build --release >&2) || die "cargo build --release failed"
  [ -x "$GATEWAY_BIN" ] || die "$GATEWAY_BIN missing after build"
}

# make_work_dir NAME -> T: a fresh temp dir, removed on exit (kept when KEEP=1)
# after everything started is stopped; a script may define before_exit to
# stop its own extras first. Call directly, not in $(...).
make_work_dir() {
  T=$(mktemp -d "/tmp/smh-$1.XXXXXX")
  trap _on_exit EXIT
  trap 'exit 130' INT TERM
}
_on_exit() {
  local rc=$?
  if declare -F before_exit >/dev/null; then before_exit; fi
  cleanup_started
  if [ "${KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
  exit $rc
}

# Raise the fd limit: 65536 if allowed, else the hard limit.
raise_nofile() {
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# ---------------------------------------------------------------- ports
# free_ports N -> N distinct free loopback TCP ports, space separated.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# ---------------------------------------------------------------- TLS
# make_tls DIR -> DIR/ca.pem, DIR/ca.key, DIR/leaf.pem, DIR/leaf.key
# (ECDSA P-256; leaf SAN DNS:localhost, IP:127.0.0.1).
make_tls() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=smh-gateway bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || die "openssl: CA"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$d/leaf.key" -out "$d/leaf.csr" -subj "/CN=localhost" 2>/dev/null || die "openssl: leaf key"
  cat >"$d/leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOF
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/leaf.pem" -days 2 -extfile "$d/leaf.ext" 2>/dev/null || die "openssl: leaf cert"
  chmod 600 "$d"/*.key
}

# ---------------------------------------------------------------- nginx
# write_upstream_conf DIR PORT TLSDIR
# The SMH stand-in: token API, a directory listing, a 302 and a 1 MiB file.
write_upstream_conf() {
  local d=$1 port=$2 tls=$3
  mkdir -p "$d/www" "$d/logs" "$d/tmp"
  # nginx workers run as an unprivileged user: let them reach the docroot
  # (mktemp -d makes 0700 directories).
  chmod 711 "$(dirname "$d")"
  chmod 755 "$d" "$d/www"
  # A realistic ~300 byte SMH directory listing (by-marker shape).
  cat >"$d/www/listing.json" <<'EOF'
{"path":[],"contents":[{"name":"photos","type":"dir","creationTime":"2024-05-01T08:00:00Z","modificationTime":"2024-05-02T09:30:00Z"},{"name":"report.pdf","type":"file","size":"482133","eTag":"\"9b2cf535f27731c974343645a3985328\"","crc64":"8422573640286718521","creationTime":"2024-05-03T10:00:00Z"}],"eof":true}
EOF
  [ -f "$d/www/big.bin" ] || head -c 1048576 /dev/urandom >"$d/www/big.bin"
  chmod 644 "$d/www/listing.json" "$d/www/big.bin"
  cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:$port ssl http2;
    server_name localhost;
    ssl_certificate $tls/leaf.pem;
    ssl_certificate_key $tls/leaf.key;
    ssl_session_cache shared:UPSSL:10m;
    root $d/www;
    location = /api/v1/token {
      access_log $d/logs/mints.log;
      default_type application/json;
      return 200 '$UPSTREAM_TOKEN_BODY';
    }
    location /api/v1/directory/ {
      default_type application/json;
      try_files /listing.json =404;
    }
    location = /api/v1/file/$BENCH_LIB/-/redirect.jpg {
      return 302 https://cos.example.test/signed?sig=abc;
    }
    location = /api/v1/file/$BENCH_LIB/-/big.bin {
      default_type application/octet-stream;
      try_files /big.bin =404;
    }
  }
}
EOF
  : >"$d/logs/mints.log"
}

# write_nginx_arm_conf DIR PORT UPSTREAM_PORT WORKERS TLSDIR
# A plain nginx reverse proxy doing the least a token-injecting proxy must:
# TLS in, HTTP/2 in, add a static access_token, pooled TLS upstream.
write_nginx_arm_conf() {
  local d=$1 port=$2 up=$3 w=$4 tls=$5
  mkdir -p "$d/logs" "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
worker_processes $w;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 600s;
  upstream upstream_pool {
    server 127.0.0.1:$up;
    keepalive 64;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:$port ssl http2;
    server_name localhost;
    ssl_certificate $tls/leaf.pem;
    ssl_certificate_key $tls/leaf.key;
    ssl_session_cache shared:ARMSSL:10m;
    location / {
      set \$tok_args "access_token=acctkstatic";
      if (\$args != "") {
        set \$tok_args "\${args}&access_token=acctkstatic";
      }
      set \$args \$tok_args;
      proxy_pass https://upstream_pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $tls/ca.pem;
      proxy_ssl_session_reuse on;
      # Stream big bodies through memory buffers instead of spooling them
      # to a temp file (the gateway streams too).
      proxy_buffer_size 16k;
      proxy_buffers 8 64k;
      proxy_max_temp_file_size 0;
    }
  }
}
EOF
}

# start_nginx DIR -> LAST_PID = master PID, also appended to STARTED_PIDS.
# (Started from the calling shell, not a $(...) subshell, so it stays our child.)
start_nginx() {
  local d=$1
  nginx -t -p "$d" -c "$d/nginx.conf" >"$d/logs/nginx-t.log" 2>&1 ||
    { cat "$d/logs/nginx-t.log" >&2; die "nginx config $d/nginx.conf invalid"; }
  nginx -p "$d" -c "$d/nginx.conf" >"$d/logs/stdout.log" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
}

# ---------------------------------------------------------------- gateway
# write_gateway_conf FILE PORT ADMIN_PORT LIB UPSTREAM CA SECRET_FILE SESSION_SECRET_FILE TLSDIR AUDIT_FILE
# $GATEWAY_EXTRA_TOML, when set, is appended (e.g. a [revocation] table to
# measure with Redis configured).
write_gateway_conf() {
  local f=$1 port=$2 admin=$3 lib=$4 up=$5 ca=$6 secret=$7 sess=$8 tls=$9 audit=${10}
  cat >"$f" <<EOF
# Generated by benches/load (shape copied from src/dev.rs).
[listener]
address = "127.0.0.1:$port"
cert_file = "$tls/leaf.pem"
key_file = "$tls/leaf.key"

[admin]
address = "127.0.0.1:$admin"

[[library]]
id = "$lib"
upstream = "$up"
ca_file = "$ca"
secret_file = "$secret"

[session]

[session.jwt]
hmac_secret_file = "$sess"

[[role]]
name = "editor"
grant = ["create_directory", "upload_file", "delete_file", "delete_directory", "move_file", "move_directory"]
spaces = ["-"]

# The default sink is stdout; a file keeps the gateway doing the same work
# (serialise + write every record) without flooding the terminal.
[audit]
sink = "file"
file = "$audit"
max_file_bytes = 67108864
max_files = 2

[log]
level = "warn"

${GATEWAY_EXTRA_TOML:-}
EOF
}

# start_gateway CONF LOGFILE WORKERS -> LAST_PID, also appended to STARTED_PIDS
start_gateway() {
  local conf=$1 logf=$2 w=$3
  TOKIO_WORKER_THREADS=$w "$GATEWAY_BIN" run --config "$conf" >"$logf" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
}

# wait_ready URL PID [TRIES] — poll (plain http or https -k) until 200, bounded.
wait_ready() {
  local url=$1 pid=$2 tries=${3:-150} i
  for ((i = 0; i < tries; i++)); do
    alive "$pid" || return 1
    if [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$url")" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# alive PID — running and not a zombie (an exited child not yet waited for).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# stop_pid PID — TERM, wait up to 10 s, then KILL. Only ever a PID we started.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  alive "$pid" || { wait "$pid" 2>/dev/null || true; forget_pid "$pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || { wait "$pid" 2>/dev/null || true; forget_pid "$pid"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

forget_pid() {
  local keep=() p
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

cleanup_started() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid"
  done
  STARTED_PIDS=()
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID... -> summed user+system CPU ticks (all threads) of those processes
cpu_ticks() {
  local t=0 p v
  for p in "$@"; do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

# sys_ticks -> "<busy ticks> <steal ticks>" for the whole machine (/proc/stat)
sys_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $9}' /proc/stat; }

# Reaped-children CPU of *this* shell comes from bash's `times` (second line).
# `times` must run in the main shell — a $(...) subshell starts with zeroed
# child accounting — so: times >"$FILE"; ticks=$(times_ticks "$FILE")
times_ticks() {
  awk -v hz="$CLK_TCK" 'NR == 2 {
    split($1, u, "m"); split($2, s, "m");
    printf "%d\n", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz }' "$1"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# metric NAME ADMIN_PORT -> value of an unlabelled series
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$2/metrics" | awk -v n="$1" '$1 == n {print $2; exit}'
}

# wrk_limit OUT DONE_FILE URL TOKENS_FILE LIMIT [MAX_SECS]
# wrk -t1 -c32 with tokens.lua until LIMIT responses (each with the next JWT
# from TOKENS_FILE), then SIGINT so wrk prints its summary (error counts).
# Bounded by MAX_SECS (default 600). The rate comes from DONE_FILE
# (parse.py wrklimit).
wrk_limit() {
  local out=$1 done_file=$2 url=$3 tokens=$4 limit=$5 max=${6:-600} pid i
  rm -f "$done_file"
  wrk -t1 -c32 -d"${max}s" --timeout 10s -s "$BENCH_DIR/tokens.lua" "$url" \
    -- "$tokens" "$limit" "$done_file" >"$out" 2>&1 &
  pid=$!
  for ((i = 0; i < max * 10; i++)); do
    [ -s "$done_file" ] && break
    alive "$pid" || break
    sleep 0.1
  done
  kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
