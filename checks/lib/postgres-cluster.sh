# Sourced, not run: a throwaway PostgreSQL cluster for checks and the bench.
#
#   . checks/lib/postgres-cluster.sh
#   pg_cluster_start              # initdb in a temp dir + start, loopback only
#   trap pg_cluster_stop EXIT     # stops the server and removes the directory
#   pg_create_role NAME PASSWORD  # a LOGIN CREATEDB role (SCRAM verifier)
#   pg_create_database NAME OWNER
#
# initdb never runs as root: as the `postgres` user (else `nobody`) when the caller is root,
# else as the caller. The server listens on 127.0.0.1 only, on a free port, with
# scram-sha-256 password authentication for TCP and its socket. After pg_cluster_start:
#   PG_BINDIR  PostgreSQL's bin directory     PG_WORK  the cluster's directory (mode 700)
#   PG_PORT    its TCP port                   PG_SUPERPASS  the `postgres` superuser's password

pg_cluster_start() {
  PG_BINDIR=""
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    PG_BINDIR=$(pg_config --bindir)
  fi
  if [ -z "$PG_BINDIR" ]; then
    PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$PG_BINDIR" ] && [ -x "$PG_BINDIR/initdb" ] || {
    echo "postgres: initdb not found (apt-get install postgresql)" >&2
    return 2
  }
  command -v python3 >/dev/null || { echo "postgres: python3 missing" >&2; return 2; }

  _pg_as_owner=()
  local owner=""
  if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    id "$owner" >/dev/null 2>&1 || owner=nobody
    _pg_as_owner=(runuser -u "$owner" --)
  fi

  PG_WORK=$(mktemp -d)
  chmod 700 "$PG_WORK"
  [ -z "$owner" ] || chown "$owner" "$PG_WORK"
  PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PG_SUPERPASS=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')

  printf '%s\n' "$PG_SUPERPASS" >"$PG_WORK/superpass"
  [ -z "$owner" ] || chown "$owner" "$PG_WORK/superpass"
  echo "postgres: initdb in $PG_WORK (port $PG_PORT)" >&2
  "${_pg_as_owner[@]}" "$PG_BINDIR/initdb" -D "$PG_WORK/data" -U postgres -E UTF8 --no-locale \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 --pwfile="$PG_WORK/superpass" \
    >"$PG_WORK/initdb.log" 2>&1 || { cat "$PG_WORK/initdb.log" >&2; return 1; }
  "${_pg_as_owner[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_WORK/data" -l "$PG_WORK/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_WORK -c max_connections=300 -c password_encryption=scram-sha-256" \
    >/dev/null || { cat "$PG_WORK/server.log" >&2; return 1; }
}

pg_cluster_stop() {
  [ -n "${PG_WORK:-}" ] || return 0
  "${_pg_as_owner[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_WORK/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$PG_WORK"
  PG_WORK=""
}

# psql as the superuser over TCP; arguments go to psql.
pg_psql() {
  PGPASSWORD="$PG_SUPERPASS" "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
    -U postgres -d postgres "$@"
}

pg_create_role() { # name, password
  pg_psql -c "CREATE ROLE \"$1\" LOGIN CREATEDB PASSWORD '$2'"
  # The password is stored as a SCRAM verifier, so logins use scram-sha-256.
  local scram
  scram=$(pg_psql -tA -c "SELECT rolpassword LIKE 'SCRAM-SHA-256\$%' FROM pg_authid WHERE rolname = '$1'")
  [ "$scram" = t ] || { echo "postgres: role $1's password is not a SCRAM verifier" >&2; return 1; }
}

pg_create_database() { # name, owner
  pg_psql -c "CREATE DATABASE \"$1\" OWNER \"$2\""
}
