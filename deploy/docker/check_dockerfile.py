#!/usr/bin/env python3
"""Static checks of deploy/docker/Dockerfile (no image registry is
reachable from CI, so the image itself is not built there):

- two stages: a Rust build stage at least at Cargo.toml's rust-version,
  and a runtime stage; every image pinned by tag, none `latest`;
- every COPY source exists and passes Dockerfile.dockerignore;
- the runtime stage runs as a non-root user, exposes exactly the ports the
  Kubernetes manifests use, stops with SIGTERM, and its entrypoint is the
  file the build stage copies in; its default config path is the one the
  manifests mount;
- prints the build stage's RUN command, which check.sh then runs.
"""
import fnmatch
import os
import re
import sys
import tomllib

repo = sys.argv[1]
problems = []
path = os.path.join(repo, "deploy/docker/Dockerfile")
lines, cur = [], ""
for raw in open(path):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    lines.append((cur + line).strip())
    cur = ""
stages = []
for line in lines:
    op, _, rest = line.partition(" ")
    op = op.upper()
    if op == "FROM":
        stages.append({"from": rest, "ops": []})
    elif stages:
        stages[-1]["ops"].append((op, rest.strip()))
    else:
        problems.append(f"{op} before FROM")

if len(stages) != 2:
    problems.append(f"expected a build and a runtime stage, found {len(stages)}")
for s in stages:
    image = s["from"].split()[0]
    if ":" not in image or image.endswith(":latest"):
        problems.append(f"image {image} is not pinned by tag")
build, runtime = stages[0], stages[-1]

cargo = tomllib.load(open(os.path.join(repo, "Cargo.toml"), "rb"))
need = tuple(int(x) for x in cargo["package"]["rust-version"].split("."))
m = re.match(r"rust:(\d+)\.(\d+)", build["from"])
if not m or tuple(map(int, m.groups())) < need[:2]:
    problems.append(f"build image {build['from']} is older than rust-version {cargo['package']['rust-version']}")

ignore = [l.strip() for l in open(os.path.join(repo, "deploy/docker/Dockerfile.dockerignore")) if l.strip() and not l.startswith("#")]


def included(rel):
    keep = True
    for pat in ignore:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        if fnmatch.fnmatch(rel, p) or rel.startswith(p + "/"):
            keep = neg
    return keep


copied_out = None
for op, rest in build["ops"]:
    if op == "COPY":
        *srcs, _dst = rest.split()
        for src in srcs:
            if not os.path.exists(os.path.join(repo, src)):
                problems.append(f"COPY {src}: no such file in the repository")
            elif not included(src.rstrip("/")):
                problems.append(f"COPY {src}: excluded by Dockerfile.dockerignore")
run = [rest for op, rest in build["ops"] if op == "RUN"]
if len(run) != 1 or "cargo build --release --locked" not in run[0]:
    problems.append("the build stage must have one RUN with cargo build --release --locked")
m = re.search(r"install -D -m 0755 (\S+) (\S+)", run[0] if run else "")
if m:
    copied_out = m.group(2)

ops = dict((op, rest) for op, rest in runtime["ops"] if op != "COPY")
copies = [rest for op, rest in runtime["ops"] if op == "COPY"]
user = ops.get("USER", "root").split(":")[0]
if user in ("root", "0", ""):
    problems.append("the runtime stage must set a non-root USER")
if ops.get("STOPSIGNAL") != "SIGTERM":
    problems.append("STOPSIGNAL SIGTERM is the gateway's orderly stop")
deployment = open(os.path.join(repo, "deploy/k8s/base/deployment.yaml")).read()
k8s_ports = set(map(int, re.findall(r"containerPort: (\d+)", deployment)))
exposed = set(map(int, ops.get("EXPOSE", "").split()))
if exposed != k8s_ports:
    problems.append(f"EXPOSE {sorted(exposed)} but the Deployment's ports are {sorted(k8s_ports)}")
entry = re.findall(r'"([^"]+)"', ops.get("ENTRYPOINT", ""))
if not entry or not any(c.startswith(f"--from=build {copied_out} {entry[0]}") for c in copies):
    problems.append(f"ENTRYPOINT {entry} is not the binary copied from the build stage ({copied_out})")
cmd = re.findall(r'"([^"]+)"', ops.get("CMD", ""))
if cmd[:2] != ["run", "--config"] or len(cmd) != 3 or f"mountPath: {os.path.dirname(cmd[2])}" not in deployment:
    problems.append(f"CMD {cmd}: expected run --config <file in the Deployment's config mount>")

if problems:
    print("\n".join(f"deploy/docker/Dockerfile: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
# The build command, for check.sh to run as the image would.
print(run[0].split("&&")[0].strip())
