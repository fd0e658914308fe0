#!/usr/bin/env python3
"""Parse one load-tool output file into a single tab-separated line.

    parse.py wrk FILE     -> rps \t valid(1/0) \t requests \t detail
    parse.py wrklimit FILE DONE_FILE -> rps \t valid(1/0) \t requests \t detail
                          (rate = responses / seconds written by tokens.lua)
    parse.py h2load FILE  -> rps \t valid(1/0) \t requests \t detail
    parse.py oha FILE     -> rps \t p50_ms \t p99_ms \t valid(1/0) \t requests \t detail
(requests = responses the tool completed, for per-request CPU figures)

A run is valid only when the tool reports no error of any kind: wrk's
"Non-2xx or 3xx responses" and "Socket errors", h2load's failed / errored /
timeout counts and 4xx/5xx status codes, oha's non-2xx/3xx status codes and
its error distribution. Unparseable output is invalid too.
"""
import json, re, sys


def wrk(text: str):
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        return 0.0, False, 0, "no Requests/sec line"
    rps = float(m.group(1))
    problems = []
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m and int(m.group(1)) > 0:
        problems.append(f"non-2xx/3xx={m.group(1)}")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m and any(int(x) for x in m.groups()):
        problems.append("socket errors connect={} read={} write={} timeout={}".format(*m.groups()))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    total = m.group(1) if m else "?"
    if m and int(m.group(1)) == 0:
        problems.append("zero requests")
    detail = f"requests={total}" + ("; " + "; ".join(problems) if problems else "")
    return rps, not problems, int(total) if total != "?" else 0, detail


def h2load(text: str):
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    if not m:
        return 0.0, False, 0, "no 'finished in' line"
    rps = float(m.group(1))
    problems = []
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    if not m:
        return rps, False, 0, "no requests line"
    total, started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
    if failed or errored or timeout:
        problems.append(f"failed={failed} errored={errored} timeout={timeout}")
    if ok == 0:
        problems.append("zero succeeded")
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        c4, c5 = int(m.group(3)), int(m.group(4))
        if c4 or c5:
            problems.append(f"4xx={c4} 5xx={c5}")
    else:
        problems.append("no status codes line")
    detail = f"succeeded={ok}" + ("; " + "; ".join(problems) if problems else "")
    return rps, not problems, done, detail


def oha(text: str):
    try:
        j = json.loads(text[text.index("{"):])
    except Exception as e:  # noqa: BLE001
        return 0.0, 0.0, 0.0, False, 0, f"unparseable oha json: {e}"
    summ = j.get("summary", {})
    rps = float(summ.get("requestsPerSec") or 0.0)
    pct = j.get("latencyPercentiles") or {}
    p50 = float(pct.get("p50") or 0.0) * 1000.0
    p99 = float(pct.get("p99") or 0.0) * 1000.0
    codes = {str(k): int(v) for k, v in (j.get("statusCodeDistribution") or {}).items()}
    errs = {str(k): int(v) for k, v in (j.get("errorDistribution") or {}).items()}
    problems = []
    bad = {k: v for k, v in codes.items() if not (k.startswith("2") or k.startswith("3"))}
    if bad:
        problems.append("status " + ",".join(f"{k}={v}" for k, v in sorted(bad.items())))
    if errs:
        problems.append("errors " + "; ".join(f"{k}={v}" for k, v in errs.items()))
    ok = sum(v for k, v in codes.items() if k.startswith("2") or k.startswith("3"))
    if ok == 0:
        problems.append("zero successful responses")
    detail = "codes " + ",".join(f"{k}={v}" for k, v in sorted(codes.items()))
    if problems:
        detail += "; " + "; ".join(problems)
    return rps, p50, p99, not problems, sum(codes.values()), detail


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    with open(path, errors="replace") as f:
        text = f.read()
    if kind == "wrk":
        rps, valid, n, detail = wrk(text)
        print(f"{rps:.1f}\t{int(valid)}\t{n}\t{detail}")
    elif kind == "wrklimit":
        _, valid, n, detail = wrk(text)
        try:
            count, secs = open(sys.argv[3]).read().split()
            rps = int(count) / float(secs)
            detail += f"; {count} responses in {float(secs):.3f} s"
        except Exception as e:  # noqa: BLE001
            rps, valid, detail = 0.0, False, f"{detail}; limit not reached ({e})"
        print(f"{rps:.1f}\t{int(valid)}\t{n}\t{detail}")
    elif kind == "h2load":
        rps, valid, n, detail = h2load(text)
        print(f"{rps:.1f}\t{int(valid)}\t{n}\t{detail}")
    elif kind == "oha":
        rps, p50, p99, valid, n, detail = oha(text)
        print(f"{rps:.1f}\t{p50:.3f}\t{p99:.3f}\t{int(valid)}\t{n}\t{detail}")
    else:
        sys.exit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
