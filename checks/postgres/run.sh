#!/usr/bin/env bash
# oxidex on a real PostgreSQL:
#   checks/postgres/run.sh
# Starts a throwaway cluster (initdb in a temp dir, never as root: as the
# `postgres` user when run as root, else as the caller) listening on loopback
# only, with scram-sha-256 password authentication, then runs with
# OXIDEX_TEST_POSTGRES pointing at it:
#   1. the storage conformance suite and the backend's own tests
#      (cargo test --lib postgres), each check on a fresh database;
#   2. the two-replica integration test (cargo test --test it postgres): two
#      oxidex processes on one database — login on one, code exchange on the
#      other, alternating refreshes, a replay refused across replicas (family
#      revoked), 16 concurrent refreshes with one winner, restart of both.
# The cluster is stopped and removed on exit. Exit status 0 when all passed.
set -euo pipefail
cd "$(dirname "$0")/../.."

. checks/lib/postgres-cluster.sh
trap pg_cluster_stop EXIT
pg_cluster_start
work=$PG_WORK
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
pg_create_role oxidex "$password"
pg_create_database oxidex oxidex
port=$PG_PORT

export OXIDEX_TEST_POSTGRES="host=127.0.0.1 port=$port user=oxidex password=$password dbname=oxidex"
export CARGO_TERM_COLOR=never

# Each run must have run tests: a filter that matches nothing would pass silently.
run() { # label, cargo test args...
  local label=$1 out
  shift
  out="$work/$label.out"
  if ! cargo test --locked "$@" 2>&1 | tee "$out"; then
    echo "postgres: $label FAILED" >&2
    return 1
  fi
  if ! grep -Eq 'test result: ok\. [1-9][0-9]* passed' "$out"; then
    echo "postgres: $label ran no test" >&2
    return 1
  fi
}

status=0
run conformance --lib postgres || status=1
run replicas --test it postgres -- --test-threads=1 || status=1
exit "$status"
