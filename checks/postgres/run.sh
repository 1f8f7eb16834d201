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

bindir=""
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
  bindir=$(pg_config --bindir)
fi
if [ -z "$bindir" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || {
  echo "postgres: initdb not found (apt-get install postgresql)" >&2
  exit 2
}
command -v python3 >/dev/null || { echo "postgres: python3 missing" >&2; exit 2; }

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  owner=postgres
  id "$owner" >/dev/null 2>&1 || owner=nobody
  as_owner=(runuser -u "$owner" --)
fi

work=$(mktemp -d)
chmod 700 "$work"
[ ${#as_owner[@]} -eq 0 ] || chown "$owner" "$work"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
superpass=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')

stop() {
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop EXIT

printf '%s\n' "$superpass" >"$work/superpass"
[ ${#as_owner[@]} -eq 0 ] || chown "$owner" "$work/superpass"
echo "postgres: initdb in $work (port $port)"
"${as_owner[@]}" "$bindir/initdb" -D "$work/data" -U postgres -E UTF8 --no-locale \
  --auth-local=scram-sha-256 --auth-host=scram-sha-256 --pwfile="$work/superpass" \
  >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
"${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$work -c max_connections=300 -c password_encryption=scram-sha-256" \
  >/dev/null || { cat "$work/server.log" >&2; exit 1; }

PGPASSWORD="$superpass" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c "CREATE ROLE oxidex LOGIN CREATEDB PASSWORD '$password'" \
  -c "CREATE DATABASE oxidex OWNER oxidex"
# The role's password is stored as a SCRAM verifier, so logins use scram-sha-256.
scram=$(PGPASSWORD="$superpass" "$bindir/psql" -X -qtA -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c "SELECT rolpassword LIKE 'SCRAM-SHA-256\$%' FROM pg_authid WHERE rolname = 'oxidex'")
[ "$scram" = t ] || { echo "postgres: the oxidex role's password is not a SCRAM verifier" >&2; exit 1; }

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
