#!/usr/bin/env bash
# No image registry is reachable from CI: the Dockerfile is checked
# statically (check_dockerfile.py), then its build command runs on a copy
# of exactly what the Dockerfile copies, so a file the build needs but the
# image lacks fails here. Usage: deploy/docker/check.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmd=$(python3 deploy/docker/check_dockerfile.py .)
if [ "${1:-}" = --no-build ]; then
  echo "docker: Dockerfile checked statically (build not run: --no-build)"
  exit 0
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -r Cargo.toml Cargo.lock build.rs src benches "$ctx/"
# The release dependencies are shared with the repository's own target
# directory; the crate itself is built from the copy.
(cd "$ctx" && CARGO_TARGET_DIR="$OLDPWD/target/docker-check" $cmd >/dev/null 2>"$ctx/build.log") ||
  { tail -30 "$ctx/build.log" >&2; echo "docker: the Dockerfile's build command fails on what it copies" >&2; exit 1; }
"target/docker-check/release/smh-gateway" --version
echo "docker: Dockerfile checked statically; its build command ($cmd) builds from what it copies"
