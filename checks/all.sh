#!/usr/bin/env bash
# Every check that runs on a plain Debian machine: formatting, lints, unit and
# integration tests, PostgreSQL storage on a throwaway cluster, a real OpenLDAP, fault injection,
# a fuzzing smoke run, the Nix offline checks, the Nix→oxidex rendering contract and the
# browser pages in headless Chromium.
# Installs missing prerequisites (as root, via apt-get) first. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
failures=0
passes=0
record() { # name, exit code
  if [ "$2" -eq 0 ]; then passes=$((passes + 1)); echo "ok: $1"; else failures=$((failures + 1)); echo "FAILED: $1"; fi
}

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

step "prerequisites"
bash checks/lib/install-prereqs.sh

set +e
step "rustfmt"
cargo fmt --all -- --check; record "rustfmt" $?

step "clippy"
cargo clippy --all-targets --locked -- -D warnings; record "clippy" $?

step "cargo test (unit + integration)"
cargo test --locked; record "cargo test" $?

step "PostgreSQL (throwaway cluster: conformance suite, two replicas on one database)"
bash checks/postgres/run.sh; record "postgres" $?
step "faults: SIGKILL x5 mid-rotation, full disk (tmpfs, root), clock steps, online backup"
bash checks/faults/ci.sh; record "faults" $?
step "fuzzing smoke run (cargo fuzz on nightly, 20 s per target)"
# run.sh bounds each target itself; this caps the build and all runs together.
timeout --kill-after=30 1800 bash fuzz/run.sh 20; record "fuzz smoke run" $?

step "Nix offline checks (parse, flake lock, evaluation)"
bash checks/nix-offline.sh; record "nix offline checks" $?

step "Nix rendering contract (nixos-module/render.nix → oxidex check-config)"
cargo build --locked --bin oxidex && bash checks/render-contract.sh "$root/target/debug/oxidex"; record "render contract" $?

step "relying parties against a running oxidex (npm openid-client, PyPI Authlib)"
bash checks/rp-node/run.sh "$root/target/debug/oxidex"; record "rp-node (openid-client)" $?
RP_HTTPS=1 bash checks/rp-node/run.sh "$root/target/debug/oxidex"; record "rp-node over HTTPS (openid-client)" $?
bash checks/rp-python/run.sh "$root/target/debug/oxidex"; record "rp-python (Authlib)" $?

step "browser pages in headless Chromium (real flows, axe-core, keyboard, screenshots; light and dark)"
bash checks/pages/run.sh "$root/target/debug/oxidex"; record "pages (Chromium)" $?

step "Dex's Go API client (github.com/dexidp/dex/api/v2) against a running oxidex"
bash checks/grpc-go/run.sh "$root/target/debug/oxidex"; record "grpc-go (Dex API client)" $?

step "ldap connector against a real OpenLDAP (Debian slapd, throwaway config, StartTLS/LDAPS CA)"
bash checks/ldap/run.sh; record "ldap (OpenLDAP)" $?

step "real forge end to end (Gitea built from the Go module proxy, gitea and oidc connectors)"
bash checks/forgejo/e2e.sh "$root/target/debug/oxidex"; record "forge end to end" $?
set -e

echo
echo "checks: ${passes} passed, ${failures} failed"
[ "$failures" -eq 0 ]
