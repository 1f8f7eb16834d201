# Sourced by the relying-party checks (checks/rp-*/run.sh): starts oxidex with
# examples/config-dev.json on a free loopback port, a temp SQLite file and no telemetry
# listener, plus one extra client whose id and secret need form-encoding in HTTP Basic.
#
#   start_dev_server OXIDEX_BIN WORKDIR [SOURCE_CONFIG]
#
# SOURCE_CONFIG (default examples/config-dev.json) is the config to start from.
#
# Sets: issuer, oxidex_pid, oxidex_log, special_id, special_secret. The caller's EXIT trap
# must call stop_dev_server. Needs python3.

special_id='rp:special client'
special_secret="s3cret with space+plus/slash:colon%25-_.!~*'()"

start_dev_server() {
  local oxidex=$1 work=$2 source=${3:-} repo port
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  source=${source:-$repo/examples/config-dev.json}
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  issuer="http://127.0.0.1:${port}/dex"
  oxidex_log="$work/oxidex.log"

  SPECIAL_ID="$special_id" SPECIAL_SECRET="$special_secret" ISSUER="$issuer" PORT="$port" \
    python3 - "$source" "$work" <<'EOF'
import json, os, sys
source, work = sys.argv[1], sys.argv[2]
with open(source) as f:
    config = json.load(f)
config["issuer"] = os.environ["ISSUER"]
config["web"] = {**config.get("web", {}), "http": f"127.0.0.1:{os.environ['PORT']}"}
config["storage"] = {"type": "sqlite3", "config": {"file": os.path.join(work, "oxidex.db")}}
config.pop("telemetry", None)
config["staticClients"].append({
    "id": os.environ["SPECIAL_ID"],
    "name": "RP with an awkward secret",
    "secret": os.environ["SPECIAL_SECRET"],
    "redirectURIs": ["http://127.0.0.1:5555/callback"],
    "postLogoutRedirectURIs": ["http://127.0.0.1:5555/logged-out"],
})
with open(os.path.join(work, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
EOF

  "$oxidex" serve "$work/config.json" >"$oxidex_log" 2>&1 &
  oxidex_pid=$!

  if ! python3 - "$issuer/healthz" "$oxidex_pid" <<'EOF'; then
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
EOF
    echo "oxidex did not become healthy at $issuer/healthz; its log:" >&2
    cat "$oxidex_log" >&2
    return 1
  fi
  echo "oxidex $("$oxidex" version 2>/dev/null | head -n1) healthy at $issuer (pid $oxidex_pid)"
}

stop_dev_server() {
  if [ -n "${oxidex_pid:-}" ] && kill -0 "$oxidex_pid" 2>/dev/null; then
    kill "$oxidex_pid" 2>/dev/null || true
    wait "$oxidex_pid" 2>/dev/null || true
  fi
}

# Bookkeeping for the relying-party runs: `rp_run NAME TITLE CMD…` runs one login
# and counts it; `rp_summary NAME` prints the tally (and oxidex's log on failure)
# and returns non-zero if any run failed.
rp_runs=0
rp_failures=0
rp_run() { # name, title, command…
  local name=$1 title=$2
  shift 2
  rp_runs=$((rp_runs + 1))
  echo
  echo "== $name: $title"
  "$@" || rp_failures=$((rp_failures + 1))
}
rp_summary() { # name
  echo
  if [ "$rp_failures" -ne 0 ]; then
    echo "$1: oxidex log (last 40 lines):"
    tail -n 40 "$oxidex_log"
  fi
  echo "$1: $((rp_runs - rp_failures)) of $rp_runs runs passed"
  [ "$rp_failures" -eq 0 ]
}
