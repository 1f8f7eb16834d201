#!/usr/bin/env bash
# Builds oxidex (release), the hello example and the benchmark, prepares the peers, runs the
# benchmark and writes its table to bench/results/<date>-<time>-<host>.md (and prints it).
#
#   bench/run.sh                 5 s per measurement (SECS=2 for a quick look)
#   SKIP_DEX=1 SKIP_NODE=1 bench/run.sh     oxidex, hello and the ceilings only
#   SKIP_PG=1 bench/run.sh       without the PostgreSQL columns
#   STORAGE_ONLY=1 bench/run.sh  only the storage table: oxidex and Dex on SQLite and PostgreSQL
#   SOAK=600 bench/run.sh        the soak instead: 600 s of mixed load on oxidex alone, exit 1 on
#                                errors or RSS growth; writes results/<...>-soak.md and .svg
#   QUIET_WAIT=0 bench/run.sh    start at once; by default, once everything is built and
#                                prepared, it waits up to 300 s for a 1-minute load average
#                                below 0.5, so the preparation itself does not load the run
#
# The PostgreSQL columns run on a throwaway cluster (checks/lib/postgres-cluster.sh: initdb in
# a temp dir, never as root, loopback only), stopped and removed on exit.
#
# Needs: cargo, wrk (installed with apt-get when missing and run as root), node + npm for
# oidc-provider, go for Dex, PostgreSQL's server binaries (Debian: postgresql) for the storage table (built once into ${OXIDEX_CACHE:-$HOME/.cache/oxidex}/dex-<version>/).
# Load tests run on 127.0.0.1 only; every measurement is bounded in time and count.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${SECS:-5}
target=${CARGO_TARGET_DIR:-$repo/target}
bench_target=${CARGO_TARGET_DIR:-$repo/bench/target}

# Always with the examples, even where they are not run (storage table, soak): examples
# enable the dev-dependencies' features, so `--bin oxidex` alone would be another build of
# every crate (minutes, and a second copy in target/).
cargo build --release --manifest-path "$repo/Cargo.toml" --bin oxidex --example hello --example signing_hello \
  --example layered_hello
CARGO_TARGET_DIR=$bench_target cargo build --release --manifest-path "$repo/bench/Cargo.toml"

# Waits (at most QUIET_WAIT seconds) for the 1-minute load average to drop below 0.5; the
# table records the load average the run started at either way.
wait_for_quiet() {
  local waited=0 limit=${QUIET_WAIT:-300}
  while [ "$waited" -lt "$limit" ] && awk '{ exit !($1 >= 0.5) }' /proc/loadavg; do
    [ $((waited % 30)) -eq 0 ] && echo "run.sh: waiting for a quiet machine (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    sleep 5
    waited=$((waited + 5))
  done
}

if [ -n "${SOAK:-}" ]; then
  mkdir -p "$repo/bench/results"
  wait_for_quiet
  out="$repo/bench/results/$(date -u +%F-%H%M)-$(hostname -s)-soak.md"
  BENCH_COMMIT=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown) \
    exec "$bench_target/release/oxidex-bench" --oxidex "$target/release/oxidex" \
    --soak "$SOAK" --out "$out"
fi

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y wrk >/dev/null
  else
    echo "run.sh: wrk is missing (Debian: apt-get install wrk)" >&2
    exit 1
  fi
fi

peers=()
mode=()
if [ -n "${STORAGE_ONLY:-}" ]; then
  [ -z "${SKIP_PG:-}" ] || { echo "run.sh: STORAGE_ONLY needs PostgreSQL (unset SKIP_PG)" >&2; exit 1; }
  mode+=(--storage-only)
  SKIP_NODE=1
fi
if [ -z "${SKIP_PG:-}" ]; then
  . "$repo/checks/lib/postgres-cluster.sh"
  trap pg_cluster_stop EXIT
  pg_cluster_start
  pg_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  pg_create_role bench "$pg_password"
  pg_create_database oxidex bench
  pg_create_database dex bench
  # In the environment, not on the command line.
  export OXIDEX_BENCH_POSTGRES="host=127.0.0.1 port=$PG_PORT user=bench password=$pg_password"
  BENCH_POSTGRES_VERSION=$("$PG_BINDIR/postgres" --version)
  export BENCH_POSTGRES_VERSION
fi
if [ -z "${SKIP_NODE:-}" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  (cd "$repo/bench/peers/oidc-provider" && npm ci --no-audit --no-fund --silent)
  peers+=(--oidc-provider "$repo/bench/peers/oidc-provider")
else
  echo "run.sh: without oidc-provider (SKIP_NODE set, or no node/npm)" >&2
fi
if [ -z "${SKIP_DEX:-}" ] && command -v go >/dev/null; then
  dex=$("$repo/bench/peers/build-dex.sh" | tail -n1)
  peers+=(--dex "$dex")
else
  echo "run.sh: without Dex (SKIP_DEX set, or no go)" >&2
fi

mkdir -p "$repo/bench/results"
wait_for_quiet
out="$repo/bench/results/$(date -u +%F-%H%M)-$(hostname -s).md"
BENCH_COMMIT=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown) \
  "$bench_target/release/oxidex-bench" \
  --oxidex "$target/release/oxidex" --hello "$target/release/examples/hello" \
  --signing-hello "$target/release/examples/signing_hello" \
  --layered-hello "$target/release/examples/layered_hello" \
  "${peers[@]}" "${mode[@]}" --secs "$secs" --out "$out"
