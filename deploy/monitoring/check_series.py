#!/usr/bin/env python3
"""Checks for the monitoring assets; run by deploy/monitoring/check.sh.

    check_series.py static            static checks (no gateway needed)
    check_series.py scrape METRICS    compare against a /metrics scrape

`static`: parses grafana-dashboard.json and alerts.yml, extracts every
metric name their PromQL uses (panel targets, template-variable queries,
rule expressions), has `promtool check rules` parse the dashboard's
expressions too (Grafana's variables substituted), checks the allow-list
below against src/metrics.rs and docs/metrics.md, and checks that every
runbook_url anchor is a heading of the runbook in deploy/README.md, and that alerts_test.yml has, for every alert, a
case where it fires and one where it does not.

`scrape`: every name used must be a family of the scrape (a histogram's
`_bucket`/`_sum`/`_count` count as its base name), or on the allow-list of
series that legitimately appear only after an event, or Prometheus' own
(`up`). Label names in selectors must exist on the family. Every name used
must be documented in docs/metrics.md. Unknown names fail, listed.

Needs PyYAML (`pip install pyyaml`, or Debian's python3-yaml).
"""

import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_series.py: PyYAML is missing: pip install pyyaml (or apt-get install python3-yaml)")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DASHBOARD = os.path.join(HERE, "grafana-dashboard.json")
RULES = os.path.join(HERE, "alerts.yml")
TESTS = os.path.join(HERE, "alerts_test.yml")
RUNBOOK = os.path.join(ROOT, "deploy", "README.md")
METRICS_RS = os.path.join(ROOT, "src", "metrics.rs")
METRICS_MD = os.path.join(ROOT, "docs", "metrics.md")

# Series the gateway registers but exports only after an event the check's
# short run against `smh-gateway dev` does not cause. Each entry must be a
# registered name in src/metrics.rs and a documented series in
# docs/metrics.md (checked below), and must be used by the dashboard or the
# rules (a stale entry fails too). Nothing else may be missing.
ABSENT_UNTIL_EVENT = {
    # Registered with the first fetch of session.jwt.jwks_url
    # (Metrics::jwks_series); `dev` signs sessions with an HMAC key and has
    # no JWKS URL, so neither exists there.
    "smh_gateway_jwks_refreshes_total": "registered on the first JWKS fetch; absent without session.jwt.jwks_url",
    "smh_gateway_jwks_last_success_timestamp_seconds": "registered on the first JWKS fetch; absent without session.jwt.jwks_url",
    # An IntCounterVec by reason: a child (and so the family) appears only
    # when a connection limit closes a connection (idle, first_request,
    # header_block, send), which takes the limits' timeouts to happen.
    "smh_gateway_connection_timeouts_total": "first child made when a connection limit closes a connection",
}

# Series Prometheus records itself for every target; not the gateway's.
PROMETHEUS_OWN = {
    "up": "Prometheus' own scrape health series for each target",
}

# Labels Prometheus adds to every scraped series (target labels); the
# ServiceMonitor adds namespace/pod/service/endpoint/container as well.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "service", "endpoint", "container"}

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'


def grafana_to_promql(expr):
    """Grafana's variables replaced so the expression is plain PromQL."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)(?:_ms|_s)?\}?", "5m", expr)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", ".*", expr)


def selectors(expr):
    """(metric name or None, [label names]) of every {...} selector."""
    out = []
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{((?:" + STRING + r"|[^}\"'`])*)\}", expr):
        labels = re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", re.sub(STRING, '""', m.group(2)))
        out.append((m.group(1), labels))
    return out


def metric_names(expr):
    """Every metric name a PromQL expression reads."""
    s = re.sub(STRING, '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)            # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)           # ranges and subqueries
    # Grouping clauses go whole, so `sum by (x) (...)` reads as a call.
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS or word in AGGREGATIONS:
            continue  # a function or aggregation, or an operator keyword
        names.add(word)
    return names


def dashboard_exprs():
    """(where, PromQL) of every dashboard query, variables included."""
    dash = json.load(open(DASHBOARD))
    found = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    found.append((f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", q or "")
        if not m:
            sys.exit(f"check_series.py: variable {v.get('name')}: only label_values(selector, label) is understood: {q!r}")
        found.append((f'variable "{v["name"]}"', m.group(1)))
        # The label it lists must exist on that series as well.
        found.append((f'variable "{v["name"]}" label', f'{m.group(1).split("{")[0].strip()}{{{m.group(2)}=~".*"}}'))
    return dash, found


def rule_exprs():
    doc = yaml.safe_load(open(RULES))
    found = []
    for g in doc["groups"]:
        for r in g["rules"]:
            found.append((f'rule {r.get("alert") or r.get("record")}', r["expr"], r))
    return doc, found


def github_anchor(heading):
    """GitHub's anchor for a Markdown heading."""
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def anchors(path):
    text = open(path).read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def src_labels(src, name):
    """Label names src/metrics.rs registers `name` with ([] for none)."""
    m = re.search(r'"' + re.escape(name) + r'",\s*"(?:[^"\\]|\\.)*",\s*&\[([^\]]*)\]', src)
    return re.findall(r'"(\w+)"', m.group(1)) if m else []


def fail(title, items):
    print(f"monitoring: FAILED: {title}", file=sys.stderr)
    for i in items:
        print(f"  - {i}", file=sys.stderr)
    sys.exit(1)


def used_names():
    _, dash = dashboard_exprs()
    _, rules = rule_exprs()
    uses = {}  # name -> [where]
    sels = []  # (where, name, labels)
    for where, expr in dash + [(w, e) for w, e, _ in rules]:
        expr = grafana_to_promql(expr)
        for n in metric_names(expr):
            uses.setdefault(n, []).append(where)
        for n, labels in selectors(expr):
            if n:
                sels.append((where, n, labels))
    return uses, sels


def static():
    src = open(METRICS_RS).read()
    docs = open(METRICS_MD).read()
    problems = []

    # The allow-list is itself checked: registered, documented, used.
    uses, _ = used_names()
    for name in ABSENT_UNTIL_EVENT:
        if f'"{name}"' not in src:
            problems.append(f"allow-listed {name} is not registered in src/metrics.rs")
        if f"`{name}`" not in docs:
            problems.append(f"allow-listed {name} is not documented in docs/metrics.md")
        if name not in uses:
            problems.append(f"allow-listed {name} is used by neither the dashboard nor the rules (stale entry)")

    # Dashboard expressions must parse: promtool reads them as recording rules.
    _, dash = dashboard_exprs()
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-expressions", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(dash)]}]}, f)
        tmp = f.name
    try:
        r = subprocess.run(["promtool", "check", "rules", tmp], capture_output=True, text=True)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            bad = sorted({int(n) for n in re.findall(r"dashboard:expr_(\d+)", out)})
            problems.append("dashboard expressions do not parse (" +
                            "; ".join(f"expr_{n} = {dash[n][0]}: {dash[n][1]}" for n in bad) + "):\n" + out)
    finally:
        os.unlink(tmp)

    # Every rule: for, severity, summary, description, runbook_url whose anchor exists.
    _, rules = rule_exprs()
    runbook = anchors(RUNBOOK)
    targets = {}
    for where, _, r in rules:
        if "alert" not in r:
            continue
        for key in ("summary", "description", "runbook_url"):
            if not r.get("annotations", {}).get(key):
                problems.append(f"{where}: no {key} annotation")
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{where}: severity label missing or unknown")
        if "for" not in r:
            problems.append(f"{where}: no for:")
        url = r.get("annotations", {}).get("runbook_url", "")
        path, _, anchor = url.partition("#")
        if anchor != r["alert"].lower():
            problems.append(f"{where}: runbook_url anchor {anchor!r} is not {r['alert'].lower()!r}")
        if anchor not in runbook:
            problems.append(f"{where}: no heading in deploy/README.md (Runbook) makes anchor #{anchor}")
        targets.setdefault(path, []).append(anchor)
    # Every alert is tested both ways: a case where it fires, one where it does not.
    fires, quiet = set(), set()
    for t in yaml.safe_load(open(TESTS))["tests"]:
        for c in t.get("alert_rule_test", []):
            (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
    for where, _, r in rules:
        if "alert" in r:
            if r["alert"] not in fires:
                problems.append(f"{where}: alerts_test.yml has no case where it fires")
            if r["alert"] not in quiet:
                problems.append(f"{where}: alerts_test.yml has no case where it does not fire")
    for path, wanted in targets.items():
        full = os.path.join(ROOT, path)
        missing = sorted(set(wanted) - (anchors(full) if os.path.exists(full) else set()))
        if missing:
            problems.append(f"{path} lacks the runbook anchors {', '.join('#' + a for a in missing)}")
    if problems:
        fail("static checks", problems)
    print(f"monitoring: static checks passed ({len(dash)} dashboard queries parse, "
          f"{len(ABSENT_UNTIL_EVENT)} allow-listed names registered and documented)")


def scrape(path):
    text = open(path).read()
    families = {}   # name -> type
    labels = {}     # family -> label names seen
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            families[m.group(1)] = m.group(2)
            labels.setdefault(m.group(1), set())
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s", line)
        if not m:
            continue
        name = m.group(1)
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and families.get(base) in ("histogram", "summary"):
                fam = base
        labels.setdefault(fam, set()).update(re.findall(r'([a-zA-Z_]\w*)="', m.group(3) or ""))
    if not families:
        fail("the scrape has no metric families", [path])

    src = open(METRICS_RS).read()
    docs = open(METRICS_MD).read()
    uses, sels = used_names()

    def family(name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and families.get(base) == "histogram":
                return base
        return name

    unknown, undocumented, unregistered, accepted = [], [], [], []
    for name in sorted(uses):
        base = family(name)
        if name in PROMETHEUS_OWN:
            accepted.append(f"{name} (Prometheus' own: {PROMETHEUS_OWN[name]})")
            continue
        if base in families:
            if base != name and families[base] != "histogram":
                unknown.append(f"{name}: {base} is a {families[base]}, not a histogram ({', '.join(uses[name])})")
        elif base in ABSENT_UNTIL_EVENT:
            accepted.append(f"{name} (allow-listed: {ABSENT_UNTIL_EVENT[base]})")
        else:
            unknown.append(f"{name} (used by {', '.join(sorted(set(uses[name])))})")
            continue
        if f"`{base}`" not in docs:
            undocumented.append(base)
        # The gateway's own series are registered in src/metrics.rs (the
        # process_* ones come from the prometheus crate's process collector).
        if base.startswith("smh_gateway_") and f'"{base}"' not in src:
            unregistered.append(base)

    bad_labels = []
    for where, name, used in sels:
        base = family(name)
        if name in PROMETHEUS_OWN:
            have = set()
        elif base in families:
            have = labels.get(base, set())
        elif base in ABSENT_UNTIL_EVENT:
            have = set(src_labels(src, base))
        else:
            continue  # already reported as unknown
        if name.endswith("_bucket"):
            have = have | {"le"}
        for label in used:
            if label not in have and label not in TARGET_LABELS:
                bad_labels.append(f"{where}: {name} has no label {label!r} (it has {', '.join(sorted(have)) or 'none'})")

    for a in accepted:
        print(f"monitoring: accepted without a scrape: {a}")
    for name in ABSENT_UNTIL_EVENT:
        if name in families:
            print(f"monitoring: note: allow-listed {name} was in the scrape after all")
    problems = []
    if unknown:
        problems += [f"not exported by the gateway: {u}" for u in unknown]
    if undocumented:
        problems += [f"not documented in docs/metrics.md: {u}" for u in undocumented]
    if unregistered:
        problems += [f"exported by the binary but not registered in src/metrics.rs (stale binary?): {u}" for u in unregistered]
    if bad_labels:
        problems += bad_labels
    if problems:
        fail(f"{len(problems)} problem(s) with the series the dashboard and rules use", problems)

    doc, rules = rule_exprs()
    tests = sum(len(t.get("alert_rule_test", [])) for t in yaml.safe_load(open(TESTS))["tests"])
    print(f"monitoring: {len(rules)} rules, {tests} tests, {len(uses)} series checked")


def main(argv):
    if len(argv) == 2 and argv[1] == "static":
        static()
    elif len(argv) == 3 and argv[1] == "scrape":
        scrape(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
