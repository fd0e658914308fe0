#!/usr/bin/env python3
"""Turn benches/load raw rows into the Markdown report (stdout).

Raw rows (tab separated), written by run.sh / memory.sh:
  tput    workload arm rep rps valid mints detail
  lat     arm rep rate rps p50_ms p99_ms valid detail
  iso     phase rep rps p50_ms p99_ms valid detail
  isocold rep requests ok p50_ms p99_ms min_ms max_ms errors samples
  mem     key value
Statistics use valid runs only; every invalid run is listed by name.
"""
import argparse, datetime, os, platform, statistics, subprocess

ARMS = ["gateway", "nginx", "direct"]
WORKLOADS = [
    ("h1_small", "small GET (~300 B JSON listing), HTTP/1.1 keep-alive, wrk -t1 -c32"),
    ("h2_small", "small GET, HTTP/2, h2load -c8 -m16 -t1"),
    ("redirect", "302 download redirect, wrk -t1 -c32"),
    ("big_1mib", "1 MiB response, wrk -t1 -c8"),
    ("cold_10k", "10,000 first-time users, one request each, wrk -t1 -c32 (gateway restarted first)"),
]


def sh(cmd: str) -> str:
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return (out.stdout + out.stderr).strip()
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def first_line(s: str) -> str:
    return s.splitlines()[0] if s else "?"


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--mem")
    ap.add_argument("--cmdline", required=True)
    ap.add_argument("--workers", required=True)
    ap.add_argument("--reps", required=True)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--iso-duration", required=True)
    ap.add_argument("--rate", required=True)
    ap.add_argument("--failed", default="0")
    a = ap.parse_args()

    rows = []
    for path in [a.raw, a.mem]:
        if path and os.path.exists(path):
            rows += [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]

    invalid = []
    tput = {}   # (workload, arm) -> [rps]
    mints = {}  # arm -> [mints] (cold_10k)
    for r in rows:
        if r[0] != "tput":
            continue
        _, w, arm, rep, rps, valid, m, detail = (r + [""] * 8)[:8]
        if valid != "1":
            invalid.append(f"throughput {w} / {arm} / rep {rep}: {detail}")
            continue
        tput.setdefault((w, arm), []).append(float(rps))
        if w == "cold_10k" and m not in ("", "-"):
            mints.setdefault(arm, []).append(int(m))

    lat = {}  # arm -> [(p50, p99, rps)]
    for r in rows:
        if r[0] != "lat":
            continue
        _, arm, rep, rate, rps, p50, p99, valid, detail = (r + [""] * 9)[:9]
        if valid != "1":
            invalid.append(f"latency {arm} / rep {rep}: {detail}")
            continue
        lat.setdefault(arm, []).append((float(p50), float(p99), float(rps)))

    iso = {}  # phase -> [(p50, p99, rps)]
    for r in rows:
        if r[0] != "iso":
            continue
        _, phase, rep, rps, p50, p99, valid, detail = (r + [""] * 8)[:8]
        if valid != "1":
            invalid.append(f"isolation warm user ({phase}) / rep {rep}: {detail}")
            continue
        iso.setdefault(phase, []).append((float(p50), float(p99), float(rps)))
    cold = [r for r in rows if r[0] == "isocold"]
    for r in cold:
        if r[8] != "0":
            invalid.append(f"isolation cold users / rep {r[1]}: {r[8]} errors ({r[9] if len(r) > 9 else ''})")
    mem = {r[1]: r[2] for r in rows if r[0] == "mem"}

    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    out = []
    p = out.append
    now = datetime.datetime.now().astimezone()
    p(f"# smh-gateway load benchmark — {now:%Y-%m-%d %H:%M %Z}")
    p("")
    p(f"- command: `{a.cmdline}`")
    p(f"- settings: workers W={a.workers} (nginx `worker_processes`, gateway `TOKIO_WORKER_THREADS`), "
      f"{a.reps} repetitions x {a.duration} s, arms interleaved with the order rotated each repetition; "
      f"upstream nginx 1 worker; clients 1 thread")
    cpu = first_line(sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")).strip()
    memline = " ".join(first_line(sh("free -h | awk '/^Mem:/'")).split())
    p(f"- machine: {sh('nproc')} CPUs ({cpu}); `free -h`: {memline}; kernel {sh('uname -r')}; {platform.platform(terse=True)}")
    commit = sh("git -C '%s' rev-parse --short HEAD" % os.path.dirname(os.path.abspath(__file__)))
    dirty = sh("git -C '%s' status --porcelain -- src Cargo.toml Cargo.lock | head -1" % os.path.dirname(os.path.abspath(__file__)))
    p(f"- gateway: commit {commit}{' (with uncommitted changes in src/Cargo)' if dirty else ''}, `cargo build --release`")
    p(f"- tools: {first_line(sh('nginx -v'))}; {first_line(sh('wrk -v'))}; {first_line(sh('h2load --version'))}; "
      f"{first_line(sh('oha --version'))}; {first_line(sh('openssl version'))}; {first_line(sh('python3 --version'))}; "
      f"{first_line(sh('rustc --version'))}")
    p("")

    p("## Throughput (requests/s; median of valid runs, [min – max])")
    p("")
    p("| workload | gateway | nginx | direct | gateway/nginx | nginx/direct | gateway/direct |")
    p("|---|---|---|---|---|---|---|")
    for w, _desc in WORKLOADS:
        cells, meds = [], {}
        for arm in ARMS:
            xs = tput.get((w, arm), [])
            meds[arm] = med(xs)
            if xs:
                cells.append(f"{fmt(meds[arm])} [{fmt(min(xs))} – {fmt(max(xs))}] (n={len(xs)})")
            else:
                cells.append("– (no valid run)")
        p(f"| {w} | {' | '.join(cells)} | {ratio(meds['gateway'], meds['nginx'])} | "
          f"{ratio(meds['nginx'], meds['direct'])} | {ratio(meds['gateway'], meds['direct'])} |")
    p("")
    for w, desc in WORKLOADS:
        p(f"- `{w}`: {desc}")
    gm = mints.get("gateway", [])
    p(f"- `cold_10k` token mints seen by the upstream per gateway run: {', '.join(map(str, gm)) or '–'} "
      f"(expected 10000 each; the nginx and direct arms send a static token and mint nothing)")
    p("")

    p(f"## Fixed-rate latency (oha -q {a.rate} -z {a.duration}s -c 32, HTTP/1.1, small GET; "
      f"rate = 50% of nginx's median h1 throughput)")
    p("")
    p("| arm | p50 ms (median [min – max]) | p99 ms (median [min – max]) | achieved req/s | added p50 over direct | added p99 over direct |")
    p("|---|---|---|---|---|---|")
    lm = {}
    for arm in ARMS:
        xs = lat.get(arm, [])
        if not xs:
            p(f"| {arm} | – | – | – | – | – |")
            continue
        p50s, p99s, rpss = [x[0] for x in xs], [x[1] for x in xs], [x[2] for x in xs]
        lm[arm] = (med(p50s), med(p99s))
    for arm in ARMS:
        xs = lat.get(arm, [])
        if not xs:
            continue
        p50s, p99s, rpss = [x[0] for x in xs], [x[1] for x in xs], [x[2] for x in xs]
        add50 = add99 = "–"
        if arm != "direct" and "direct" in lm:
            add50 = f"{lm[arm][0] - lm['direct'][0]:+.3f}"
            add99 = f"{lm[arm][1] - lm['direct'][1]:+.3f}"
        p(f"| {arm} | {med(p50s):.3f} [{min(p50s):.3f} – {max(p50s):.3f}] | {med(p99s):.3f} [{min(p99s):.3f} – {max(p99s):.3f}] | "
          f"{fmt(med(rpss))} | {add50} | {add99} |")
    if all(k in lm for k in ARMS):
        g50, g99 = lm["gateway"][0] - lm["direct"][0], lm["gateway"][1] - lm["direct"][1]
        n50, n99 = lm["nginx"][0] - lm["direct"][0], lm["nginx"][1] - lm["direct"][1]
        r = lambda g, n: f"{g / n:.2f}" if n > 0 else "– (nginx added ≤ 0)"  # noqa: E731
        p("")
        p(f"- gateway-added / nginx-added latency: p50 {r(g50, n50)}, p99 {r(g99, n99)}")
    p("")

    p(f"## Slow-mint isolation (emulator with --token-latency-ms 1000; warm user oha -q 200 -z {a.iso_duration}s -c 8)")
    p("")
    p("| warm user | p50 ms (median [min – max]) | p99 ms (median [min – max]) | achieved req/s |")
    p("|---|---|---|---|")
    for phase, label in [("alone", "alone"), ("with_cold", "with concurrent cold users")]:
        xs = iso.get(phase, [])
        if not xs:
            p(f"| {label} | – | – | – |")
            continue
        p50s, p99s, rpss = [x[0] for x in xs], [x[1] for x in xs], [x[2] for x in xs]
        p(f"| {label} | {med(p50s):.3f} [{min(p50s):.3f} – {max(p50s):.3f}] | {med(p99s):.3f} [{min(p99s):.3f} – {max(p99s):.3f}] | {fmt(med(rpss))} |")
    if cold:
        ok = sum(int(r[3]) for r in cold)
        req = sum(int(r[2]) for r in cold)
        p("")
        p(f"- cold users (waves of 50 concurrent first requests, each needing a 1 s mint): {ok} of {req} answered 200; "
          f"per repetition p50 ms: {', '.join(r[4] for r in cold)}; p99 ms: {', '.join(r[5] for r in cold)}; "
          f"min {min(float(r[6]) for r in cold):.0f} ms, max {max(float(r[7]) for r in cold):.0f} ms")
    p("")

    p("## Memory (gateway VmRSS; benches/load/memory.sh)")
    p("")
    if not mem:
        p("(not run: --no-memory)")
    else:
        kib = lambda k: f"{int(mem[k]):,} KiB" if k in mem and mem[k].lstrip('-').isdigit() else mem.get(k, "–")  # noqa: E731
        p("| what | value |")
        p("|---|---|")
        p(f"| (a) idle after start | {kib('idle_rss_kib')} |")
        p(f"| idle after one request (baseline for b) | {kib('warm_rss_kib')} |")
        p(f"| (b) with {mem.get('conns_opened', '?')} idle TLS keep-alive connections "
          f"({mem.get('conns_established_at_measure', '?')} established when measured, {mem.get('conns_failed', '?')} failed) | {kib('conns_rss_kib')} |")
        p(f"| (b) per connection | {mem.get('kib_per_conn', '–')} KiB |")
        p(f"| after those connections closed | {kib('after_close_rss_kib')} |")
        p(f"| (c) fresh gateway before 100,000 users | {kib('users_before_rss_kib')} |")
        p(f"| (c) after 100,000 distinct users | {kib('users_after_rss_kib')} |")
        p(f"| (c) per cached token + session pair | {mem.get('bytes_per_token_session', '–')} bytes |")
        p(f"| (c) /metrics smh_gateway_token_cache_entries / session_cache_entries | "
          f"{mem.get('users_token_cache_entries', '?')} / {mem.get('users_session_cache_entries', '?')} |")
        p(f"| (c) mints seen by the upstream / wrk req/s during the fill | {mem.get('users_mints', '?')} / {mem.get('users_wrk_rps', '?')} |")
    p("")

    p("## Validity")
    p("")
    if invalid:
        p(f"**{len(invalid)} INVALID run(s) — excluded from the statistics above:**")
        for s in invalid:
            p(f"- {s}")
    else:
        p("All runs valid: no non-2xx/3xx responses, socket errors, failed/errored requests or client errors.")
    if a.failed != "0":
        p("")
        p("**The harness exited non-zero: some run was invalid or a check failed (see its log).**")
    print("\n".join(out))


if __name__ == "__main__":
    main()
