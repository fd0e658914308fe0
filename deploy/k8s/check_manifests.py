#!/usr/bin/env python3
"""Cross-checks rendered manifests against the gateway's code and config.

    check_manifests.py REPO_DIR RENDERED.yaml...

For each rendered overlay: the container runs `run --config <file>` on a
file the ConfigMap provides; the ports in that file are the container's
ports, and Services, probes, the ServiceMonitor and the NetworkPolicy use
those ports; the probe paths are routes the admin server serves; every
file the config names sits in a mounted volume whose Secret or ConfigMap
has that key; every ${VAR} in it is set in the container's environment and
every SMH_GATEWAY_* variable set is one the code reads; every key it uses
exists in config/gateway.example.toml; the grace period covers the preStop
wait, the lame duck and the drain. Prints one line per overlay; exits 1
with every problem found.
"""
import os
import re
import sys
import tomllib

import yaml

# Keys of Secrets the operator provides (not rendered): deploy/README.md
# lists the same ones, and this script checks that it does.
EXTERNAL_SECRET_KEYS = {
    "smh-gateway-secrets": {"library-secret", "session-secret", "admin-token"},
    "smh-gateway-tls": {"tls.crt", "tls.key"},
    "smh-gateway-redis": {"url"},
}
# Kinds without a schema in kubernetes-validate (CRDs), checked here.
CRD_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}

problems = []


def fail(overlay, msg):
    problems.append(f"{overlay}: {msg}")


def base_name(name):
    """Generated names carry a hash suffix: smh-gateway-config-abc123."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def walk_keys(table, prefix=""):
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from walk_keys(v, path + ".")
        elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            for item in v:
                yield from walk_keys(item, path + ".")
        else:
            yield path


def commented_keys(text):
    """Keys the example documents as commented-out alternatives
    (`# secret_file = "..."` under `[[library]]`)."""
    keys, table = set(), ""
    for line in text.splitlines():
        m = re.match(r"^\[\[?([a-z_.]+)\]\]?\s*$", line)
        if m:
            table = m.group(1) + "."
            continue
        m = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if m:
            keys.add(table + m.group(1))
    return keys


def check(repo, path):
    overlay = os.path.basename(path)
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    admin_src = open(os.path.join(repo, "src/admin.rs")).read()
    main_src = open(os.path.join(repo, "src/main.rs")).read()
    example_text = open(os.path.join(repo, "config/gateway.example.toml")).read()
    example_keys = set(walk_keys(tomllib.loads(example_text))) | commented_keys(example_text)
    readme = open(os.path.join(repo, "deploy/README.md")).read()

    deps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "smh-gateway"]
    if len(deps) != 1:
        fail(overlay, "expected one Deployment smh-gateway")
        return
    pod = deps[0]["spec"]["template"]["spec"]
    gw = next((c for c in pod["containers"] if c["name"] == "gateway"), None)
    if gw is None:
        fail(overlay, "no container named gateway")
        return
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = gw.get("volumeMounts", [])

    def source_keys(volume):
        """(kind, name, keys or None when the object is external)."""
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            objs = by_kind.get("ConfigMap", [])
        else:
            name = volume["secret"]["secretName"]
            objs = by_kind.get("Secret", [])
        for o in objs:
            if o["metadata"]["name"] == name:
                return name, set((o.get("data") or {}).keys()) | set((o.get("stringData") or {}).keys())
        return name, EXTERNAL_SECRET_KEYS.get(base_name(name))

    def file_source(file_path):
        for m in mounts:
            mp = m["mountPath"].rstrip("/")
            if os.path.dirname(file_path) == mp:
                name, keys = source_keys(volumes[m["name"]])
                key = os.path.basename(file_path)
                if keys is None:
                    fail(overlay, f"{file_path}: volume {m['name']} ({name}) is neither rendered nor a known external Secret")
                elif key not in keys:
                    fail(overlay, f"{file_path}: {name} has no key {key} (has {sorted(keys)})")
                return name
        fail(overlay, f"{file_path} is under no volume mount of the gateway container")
        return None

    # The command line and the config file.
    args = gw.get("args", [])
    if args[:2] != ["run", "--config"] or len(args) != 3:
        fail(overlay, f"gateway args {args}: expected run --config FILE")
        return
    config_path = args[2]
    cm_name = file_source(config_path)
    cm = next((o for o in by_kind.get("ConfigMap", []) if o["metadata"]["name"] == cm_name), None)
    if cm is None:
        fail(overlay, f"the config {config_path} does not come from a rendered ConfigMap")
        return
    text = cm["data"][os.path.basename(config_path)]
    cfg = tomllib.loads(text)

    # Ports.
    ports = {p["name"]: p["containerPort"] for p in gw.get("ports", [])}
    for table, name in (("listener", "https"), ("admin", "admin")):
        addr = cfg.get(table, {}).get("address", "")
        port = int(addr.rsplit(":", 1)[1]) if ":" in addr else None
        if ports.get(name) != port:
            fail(overlay, f"[{table}] address {addr!r} but containerPort {name} = {ports.get(name)}")
    for svc in by_kind.get("Service", []):
        if svc["metadata"]["name"].startswith("smh-gateway-redis"):
            continue
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                fail(overlay, f"Service {svc['metadata']['name']} targets port {p['targetPort']}, not a gateway port")
    for sm in by_kind.get("ServiceMonitor", []):
        names = {p["name"] for s in by_kind.get("Service", []) for p in s["spec"]["ports"]}
        for e in sm["spec"]["endpoints"]:
            if e["port"] not in names:
                fail(overlay, f"ServiceMonitor endpoint port {e['port']} is on no Service")
            if e.get("path") != "/metrics" or '"/metrics"' not in admin_src:
                fail(overlay, "ServiceMonitor must scrape /metrics, which src/admin.rs serves")
    for np in by_kind.get("NetworkPolicy", []):
        if np["metadata"]["name"] != "smh-gateway":
            continue
        allowed = {p["port"] for rule in np["spec"]["ingress"] for p in rule.get("ports", [])}
        if allowed != set(ports.values()):
            fail(overlay, f"NetworkPolicy admits ports {sorted(allowed)}, the gateway listens on {sorted(ports.values())}")
        admin_rule = [r for r in np["spec"]["ingress"] if any(p["port"] == ports.get("admin") for p in r.get("ports", []))]
        if not admin_rule or not all(r.get("from") for r in admin_rule):
            fail(overlay, "the admin port must be admitted only from named sources (monitoring)")

    # Probes.
    for probe, want in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/readyz")):
        p = gw.get(probe)
        if not p:
            fail(overlay, f"no {probe}")
            continue
        get = p["httpGet"]
        if get["path"] != want or f'"{want}"' not in admin_src:
            fail(overlay, f"{probe} path {get['path']}: expected {want}, served by src/admin.rs")
        if get["port"] != "admin" and get["port"] != ports.get("admin"):
            fail(overlay, f"{probe} must probe the admin port")

    # Files named by the config (tables may be arrays: [[library]]).
    def values(t, parts):
        if isinstance(t, list):
            return [v for i in t for v in values(i, parts)]
        if not parts:
            return [t]
        return values(t[parts[0]], parts[1:]) if isinstance(t, dict) and parts[0] in t else []

    for key in walk_keys(cfg):
        if key.endswith("_file"):
            for value in values(cfg, key.split(".")):
                file_source(value)

    # Environment.
    env = {e["name"] for e in gw.get("env", [])}
    for var in re.findall(r"\$\{([A-Z0-9_]+)\}", text):
        if var not in env:
            fail(overlay, f"the config uses ${{{var}}}, which the container's env does not set")
    for var in env:
        if var.startswith("SMH_") and f'"{var}"' not in main_src and f"${{{var}}}" not in text:
            fail(overlay, f"env {var} is read neither by src/main.rs nor by the config")

    # Keys the example config documents.
    for key in walk_keys(cfg):
        if key not in example_keys:
            fail(overlay, f"config key {key} is not in config/gateway.example.toml")

    # Shutdown timing.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = gw.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    limits = cfg.get("limits", {})
    need = pre + limits.get("lame_duck_secs", 5) + limits.get("drain_timeout_secs", 30)
    if grace <= need:
        fail(overlay, f"terminationGracePeriodSeconds {grace} must exceed preStop + lame duck + drain = {need}")

    # CRDs have no schema in kubernetes-validate: their essentials here.
    known = {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet",
             "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} | CRD_KINDS
    for kind in by_kind:
        if kind not in known:
            fail(overlay, f"kind {kind} is neither validated by schema nor checked here")
    for c in by_kind.get("Certificate", []):
        spec = c["spec"]
        tls_vol = [v for v in volumes.values() if v.get("secret", {}).get("secretName") == spec.get("secretName")]
        if not tls_vol:
            fail(overlay, f"Certificate fills {spec.get('secretName')}, which the pod does not mount")
        if not spec.get("issuerRef", {}).get("name") or not spec.get("dnsNames"):
            fail(overlay, "Certificate needs issuerRef.name and dnsNames")
        ref = spec["issuerRef"]
        if ref.get("kind") == "Issuer" and not any(i["metadata"]["name"] == ref["name"] for i in by_kind.get("Issuer", [])):
            fail(overlay, f"Certificate's Issuer {ref['name']} is not rendered")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        if not any(all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items()) for s in by_kind.get("Service", [])):
            fail(overlay, "ServiceMonitor selects no Service")

    for name, keys in EXTERNAL_SECRET_KEYS.items():
        if name not in readme or any(k not in readme for k in keys):
            fail(overlay, f"deploy/README.md must list Secret {name} and its keys {sorted(keys)}")
    print(f"k8s {overlay}: {len(docs)} objects cross-checked against the code and the example config")


def main():
    repo = sys.argv[1]
    for path in sys.argv[2:]:
        check(repo, path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
