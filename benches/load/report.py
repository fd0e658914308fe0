#!/usr/bin/env python3
"""Turn benches/load raw rows into the Markdown report (stdout).

Raw rows (tab separated), written by run.sh / memory.sh:
  tput    workload arm rep rps valid mints proxy_cpu_us_per_req upstream_cpu_us_per_req other_cores steal_cores detail
  lat     arm rep rate rps p50_ms p99_ms valid proxy_cpu_us_per_req proxy_cpu_s other_cores steal_cores detail
  meta    key value
  iso     phase rep rps p50_ms p99_ms valid detail
  isocold rep requests ok p50_ms p99_ms min_ms max_ms errors samples
  mem     key value
Statistics use valid runs only; every invalid run is listed by name.
"""
import argparse, datetime, os, statistics, subprocess

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

    meta = {r[1]: r[2] for r in rows if r[0] == "meta"}
    invalid = []
    tput = {}   # (workload, arm) -> [rps]
    mints = {}  # arm -> [mints] (cold_10k)
    pcpu, ucpu = {}, {}  # (workload, arm) -> [us per request]
    contention = []  # (run, other-process load in cores, steal in cores)
    num = lambda x: float(x) if x not in ("", "-", "?") else None  # noqa: E731
    for r in rows:
        if r[0] != "tput":
            continue
        _, w, arm, rep, rps, valid, m, pus, uus, oth, stl, detail = (r + [""] * 12)[:12]
        contention.append((f"throughput {w} / {arm} / rep {rep}", num(oth), num(stl)))
        if valid != "1":
            invalid.append(f"throughput {w} / {arm} / rep {rep}: {detail}")
            continue
        tput.setdefault((w, arm), []).append(float(rps))
        if num(pus) is not None:
            pcpu.setdefault((w, arm), []).append(num(pus))
        if num(uus) is not None:
            ucpu.setdefault((w, arm), []).append(num(uus))
        if w == "cold_10k" and m not in ("", "-"):
            mints.setdefault(arm, []).append(int(m))

    lat = {}  # arm -> [(p50, p99, rps, proxy_us, proxy_s)]
    for r in rows:
        if r[0] != "lat":
            continue
        _, arm, rep, rate, rps, p50, p99, valid, pus, psec, oth, stl, detail = (r + [""] * 13)[:13]
        contention.append((f"latency {arm} / rep {rep}", num(oth), num(stl)))
        if valid != "1":
            invalid.append(f"latency {arm} / rep {rep}: {detail}")
            continue
        lat.setdefault(arm, []).append((float(p50), float(p99), float(rps), num(pus), num(psec)))

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
      f"upstream nginx 1 worker; clients 1 thread; proxy -> upstream protocol: nginx HTTP/1.1 (keepalive pool), "
      f"gateway {meta.get('gw_upstream_proto', '?')}")
    cpu = first_line(sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")).strip()
    memline = sh("free -h | awk '/^Mem:/ {print \"total \" $2 \", used \" $3 \", available \" $7}'")
    p(f"- machine: `nproc` {sh('nproc')} ({cpu}); `free -h` memory {memline}; `uname -r` {sh('uname -r')}")
    commit = meta.get("gw_commit", "?")
    dirty = meta.get("gw_dirty", "0") not in ("0", "")
    p(f"- gateway: commit {commit}{' plus uncommitted changes in src/ or Cargo.*' if dirty else ''} "
      f"(as of the `cargo build --release` at the start of the run)")
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
    p("")
    p("### CPU per request (microseconds of user+system CPU per completed request; median of valid runs)")
    p("")
    p("| workload | gateway process | nginx arm (all processes) | gateway/nginx | upstream, behind gateway | upstream, behind nginx | upstream, direct |")
    p("|---|---|---|---|---|---|---|")
    for w, _desc in WORKLOADS:
        g, n = med(pcpu.get((w, "gateway"), [])), med(pcpu.get((w, "nginx"), []))
        ug, un, ud = (med(ucpu.get((w, a), [])) for a in ARMS)
        p(f"| {w} | {fmt(g, 1)} | {fmt(n, 1)} | {ratio(g, n)} | {fmt(ug, 1)} | {fmt(un, 1)} | {fmt(ud, 1)} |")
    p("")
    p("(Read from /proc/PID/stat before and after each run. Independent of how the cores were shared with the "
      "client, so steadier than req/s on a noisy machine. The upstream column shows what each proxy costs the "
      "upstream: the gateway speaks " + meta.get("gw_upstream_proto", "?") + " to it, nginx HTTP/1.1.)")
    gm = mints.get("gateway", [])
    p(f"- `cold_10k` token mints seen by the upstream per gateway run: {', '.join(map(str, gm)) or '–'} "
      f"(expected 10000 each; the nginx and direct arms send a static token and mint nothing)")
    p("")

    p(f"## Fixed-rate latency (oha -q {a.rate} -z {a.duration}s -c 32, HTTP/1.1, small GET; "
      f"rate = 50% of nginx's median h1 throughput)")
    p("")
    p("| arm | p50 ms (median [min – max]) | p99 ms (median [min – max]) | achieved req/s (median; runs < 99% of target) | added p50 over direct | added p99 over direct | proxy CPU µs/req | proxy CPU busy |")
    p("|---|---|---|---|---|---|---|---|")
    lm = {}
    for arm in ARMS:
        xs = lat.get(arm, [])
        if not xs:
            p(f"| {arm} | – | – | – | – | – | – | – |")
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
        below = sum(1 for x in rpss if x < 0.99 * float(a.rate))
        pus = [x[3] for x in xs if x[3] is not None]
        busy = [x[4] / float(a.duration) * 100 for x in xs if x[4] is not None]
        p(f"| {arm} | {med(p50s):.3f} [{min(p50s):.3f} – {max(p50s):.3f}] | {med(p99s):.3f} [{min(p99s):.3f} – {max(p99s):.3f}] | "
          f"{fmt(med(rpss))}; {below} of {len(rpss)} | {add50} | {add99} | "
          f"{fmt(med(pus), 1) if pus and arm != 'direct' else '–'} | {fmt(med(busy)) + '% of one core' if busy and arm != 'direct' else '–'} |")
    p("")
    for arm in ARMS:
        xs = lat.get(arm, [])
        if xs:
            p(f"- {arm} per run (p50 / p99 ms, in repetition order): " + ", ".join(f"{x[0]:.2f} / {x[1]:.1f}" for x in xs))
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
        p(f"| (b) with {mem.get('conns_opened', '?')} TLS keep-alive connections, each sending one small GET every "
          f"{mem.get('conns_refresh_s', '?')} s ({mem.get('conns_established_at_measure', '?')} established when measured; "
          f"{mem.get('conns_failed', '?')} failed to open, {mem.get('conns_refresh_failed', '?')} refresh requests failed) | {kib('conns_rss_kib')} |")
        p(f"| (b) per connection ((b) − baseline) / established | {mem.get('kib_per_conn', '–')} KiB |")
        p(f"| after those connections closed | {kib('after_close_rss_kib')} |")
        p(f"| (c) fresh gateway before 100,000 users | {kib('users_before_rss_kib')} |")
        p(f"| (c) after 100,000 distinct users | {kib('users_after_rss_kib')} |")
        p(f"| (c) per cached token + session pair | {mem.get('bytes_per_token_session', '–')} bytes |")
        p(f"| (c) /metrics smh_gateway_token_cache_entries / session_cache_entries | "
          f"{mem.get('users_token_cache_entries', '?')} / {mem.get('users_session_cache_entries', '?')} |")
        p(f"| (c) mints seen by the upstream / wrk req/s during the fill | {mem.get('users_mints', '?')} / {mem.get('users_wrk_rps', '?')} |")
    p("")

    p("## Other load on the machine")
    p("")
    others = [c for c in contention if c[1] is not None]
    if others:
        ov = sorted(c[1] for c in others)
        sv = sorted(c[2] for c in others if c[2] is not None)
        busy = [c for c in others if c[1] > 0.25]
        p(f"CPU used during each run by processes other than the proxy, the upstream and the load tool "
          f"(machine busy time from /proc/stat minus theirs), in cores: median {statistics.median(ov):.2f}, max {max(ov):.2f}"
          + (f"; hypervisor steal median {statistics.median(sv):.2f}, max {max(sv):.2f}" if sv else "")
          + f"; load average at start {meta.get('loadavg_start', '?')}.")
        if busy:
            p("")
            p(f"**{len(busy)} of {len(others)} runs shared the machine with more than 0.25 core of other work** — "
              f"their numbers are less reliable (they are kept; compare with the min–max spread):")
            for c in busy:
                p(f"- {c[0]}: {c[1]:.2f} cores other load" + (f", {c[2]:.2f} steal" if c[2] is not None else ""))
        else:
            p("")
            p("No run shared the machine with more than 0.25 core of other work.")
    else:
        p("(not measured)")
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
