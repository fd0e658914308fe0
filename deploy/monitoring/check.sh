#!/usr/bin/env bash
# Validates deploy/monitoring/ (run from anywhere; it works from the repo root):
#   1. promtool check rules alerts.yml, promtool test rules alerts_test.yml;
#   2. static checks (check_series.py static): the dashboard's queries parse
#      as PromQL, every alert has for/severity/summary/description/runbook_url,
#      runbook anchors exist in deploy/README.md, the allow-list of series absent
#      until an event is registered in src/metrics.rs and documented;
#   3. starts `smh-gateway dev` on free loopback ports, sends requests through
#      it (the banner's own curl lines, refusals, an unknown library, a
#      logout, which makes a revocation and an SMH token delete), scrapes the
#      admin port's /metrics and checks that every series the dashboard and
#      the rules use is exported (check_series.py scrape).
# Prints `monitoring: N rules, M tests, K series checked` when all pass.
#
# Needs: promtool (Debian: apt-get install -y prometheus), python3 with PyYAML
# (pip install pyyaml, or apt-get install -y python3-yaml), curl, and a built
# gateway: target/debug/smh-gateway (cargo build) or $SMH_GATEWAY_BIN.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

die() { echo "monitoring: FAILED: $*" >&2; exit 1; }

command -v promtool >/dev/null || die "promtool not found (apt-get install -y prometheus)"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
python3 -c 'import yaml' 2>/dev/null || die "python3 PyYAML not found (pip install pyyaml)"

bin=${SMH_GATEWAY_BIN:-target/debug/smh-gateway}
[[ -x $bin ]] || die "$bin is not an executable gateway binary (cargo build, or set SMH_GATEWAY_BIN)"

# 1. promtool
promtool check rules deploy/monitoring/alerts.yml
promtool test rules deploy/monitoring/alerts_test.yml

# 2. static checks
python3 deploy/monitoring/check_series.py static

# 3. a running gateway's exposition
tmp=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --emulator-listen 127.0.0.1:0 \
    --dir "$tmp/dev" >"$tmp/banner" 2>"$tmp/log" &
pid=$!
for _ in $(seq 1 600); do
    grep -q '^Press Ctrl-C' "$tmp/banner" && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/banner" "$tmp/log" >&2; die "smh-gateway dev exited before it was ready"; }
    sleep 0.1
done
grep -q '^Press Ctrl-C' "$tmp/banner" || { cat "$tmp/banner" "$tmp/log" >&2; die "smh-gateway dev did not print its banner within 60 s"; }

admin=$(sed -n 's/^ *admin: *\(http:\/\/[0-9.:]*\).*/\1/p' "$tmp/banner")
[[ -n $admin ]] || die "no admin address in the dev banner"

# The banner's commands (list, mkdir, upload in three steps, download), word
# for word as tests/dev_command.rs runs them; then refusals and a logout.
script="$tmp/requests.sh"
sed -n '/^  export CA=/,$p' "$tmp/banner" | sed -n 's/^  //p' >"$script"
cat >>"$script" <<'EOF'
echo
code() { curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" "$@"; }
echo "no session: $(code "$GW/api/v1/directory/$LIB/-/?by-marker")"
echo "bad session: $(code -H 'Authorization: Bearer not-a-session' "$GW/api/v1/directory/$LIB/-/?by-marker")"
echo "unknown library: $(code -H "Authorization: Bearer $SESSION" "$GW/api/v1/directory/nosuchlibrary/-/?by-marker")"
echo "cached token: $(code -H "Authorization: Bearer $SESSION" "$GW/api/v1/directory/$LIB/-/?by-marker")"
logout=$(code -X POST -H "Authorization: Bearer $SESSION" "$GW/gateway/v1/logout")
echo "logout: $logout"
[[ $logout == 204 ]] || { echo "logout answered $logout, not 204" >&2; exit 1; }
echo "revoked session: $(code -H "Authorization: Bearer $SESSION" "$GW/api/v1/directory/$LIB/-/?by-marker")"
EOF
grep -q 'export SESSION=' "$script" || die "no session in the dev banner"
if ! bash -euo pipefail "$script" >"$tmp/requests.out" 2>&1; then
    cat "$tmp/requests.out" >&2
    die "requests through the dev gateway failed"
fi
grep -E '^(no session|bad session|unknown library|cached token|logout|revoked session):' "$tmp/requests.out" \
    | tr '\n' ';' | sed 's/;$/\n/; s/^/monitoring: requests sent: /'

curl -sf "$admin/metrics" >"$tmp/metrics" || die "cannot scrape $admin/metrics"
python3 deploy/monitoring/check_series.py scrape "$tmp/metrics"
