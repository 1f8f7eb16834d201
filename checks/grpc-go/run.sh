#!/usr/bin/env bash
# Dex's published Go API client (github.com/dexidp/dex/api/v2, pinned in go.mod) against a
# real oxidex:
#   checks/grpc-go/run.sh OXIDEX_BIN
# Builds main.go with `go build` (modules from the Go module proxy, cached in Go's module
# cache outside the repository), starts `OXIDEX_BIN serve` with examples/config-dev.json on
# free loopback ports with the gRPC API on (plaintext, as Dex without grpc.tlsCert) and a temp
# SQLite file, and runs the client: create a client and a password, list and verify them, log
# in with them through the browser flow, refresh, list and revoke refresh tokens, delete.
# Exit status: 0 when the client passed.
set -euo pipefail

oxidex=${1:?usage: $0 OXIDEX_BIN}
oxidex=$(command -v "$oxidex" || true)
[ -x "$oxidex" ] || { echo "grpc-go: not an executable: ${1}" >&2; exit 2; }
command -v go >/dev/null || { echo "grpc-go: go missing" >&2; exit 2; }
command -v python3 >/dev/null || { echo "grpc-go: python3 missing" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$work/grpc-go" .)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
grpc_port=$(free_port)
issuer="http://127.0.0.1:${port}/dex"
python3 - "$repo/examples/config-dev.json" "$work" "$issuer" "$port" "$grpc_port" <<'PY'
import json, os, sys
source, work, issuer, port, grpc_port = sys.argv[1:]
with open(source) as f:
    config = json.load(f)
config["issuer"] = issuer
config["web"] = {**config.get("web", {}), "http": f"127.0.0.1:{port}"}
config["storage"] = {"type": "sqlite3", "config": {"file": os.path.join(work, "oxidex.db")}}
config["grpc"] = {"addr": f"127.0.0.1:{grpc_port}"}
config.pop("telemetry", None)
with open(os.path.join(work, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
PY

"$oxidex" serve "$work/config.json" >"$work/oxidex.log" 2>&1 &
pid=$!
if ! python3 - "$issuer/healthz" "$pid" <<'PY'; then
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
  echo "grpc-go: oxidex did not become healthy; its log:" >&2
  cat "$work/oxidex.log" >&2
  exit 1
fi

if ! timeout 120 "$work/grpc-go" -grpc "127.0.0.1:${grpc_port}" -issuer "$issuer"; then
  echo "grpc-go: oxidex log (last 40 lines):"
  tail -n 40 "$work/oxidex.log"
  exit 1
fi
if ! grep -q 'audit.*CreatePassword' "$work/oxidex.log"; then
  echo "grpc-go: no audit event in oxidex's log" >&2
  exit 1
fi
