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
#
# With DEV_SERVER_HTTPS=1 oxidex serves web.https instead of web.http (an https issuer), its
# certificate for 127.0.0.1 from a throwaway CA made with openssl in WORKDIR/tls; the CA
# file is in dev_ca_file (give it to the relying party, e.g. NODE_EXTRA_CA_CERTS).

special_id='rp:special client'
special_secret="s3cret with space+plus/slash:colon%25-_.!~*'()"

start_dev_server() {
  local oxidex=$1 work=$2 source=${3:-} repo port scheme=http
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  source=${source:-$repo/examples/config-dev.json}
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dev_ca_file=
  if [ "${DEV_SERVER_HTTPS:-}" = 1 ]; then
    scheme=https
    make_dev_tls "$work/tls" || return 1
    dev_ca_file="$work/tls/ca.crt"
  fi
  issuer="${scheme}://127.0.0.1:${port}/dex"
  oxidex_log="$work/oxidex.log"

  SPECIAL_ID="$special_id" SPECIAL_SECRET="$special_secret" ISSUER="$issuer" PORT="$port" \
    SCHEME="$scheme" TLS_DIR="$work/tls" \
    python3 - "$source" "$work" <<'EOF'
import json, os, sys
source, work = sys.argv[1], sys.argv[2]
with open(source) as f:
    config = json.load(f)
config["issuer"] = os.environ["ISSUER"]
address = f"127.0.0.1:{os.environ['PORT']}"
web = {k: v for k, v in config.get("web", {}).items() if k not in ("http", "https")}
if os.environ["SCHEME"] == "https":
    tls = os.environ["TLS_DIR"]
    web.update(https=address, tlsCert=os.path.join(tls, "tls.crt"),
               tlsKey=os.path.join(tls, "tls.key"))
else:
    web["http"] = address
config["web"] = web
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

  if ! python3 - "$issuer/healthz" "$oxidex_pid" "$dev_ca_file" <<'EOF'; then
import os, ssl, sys, time, urllib.request
url, pid, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=ca) if ca else None
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as r:
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

# A throwaway CA and a certificate for 127.0.0.1 signed by it (P-256, one day) in DIR:
# ca.crt, tls.crt, tls.key.
make_dev_tls() { # dir
  local dir=$1
  command -v openssl >/dev/null || { echo "dev-server: openssl missing" >&2; return 2; }
  mkdir -p "$dir"
  (
    cd "$dir" &&
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=oxidex checks throwaway CA" -keyout ca.key -out ca.crt \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout tls.key -out tls.csr &&
      printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf &&
      openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
        -extfile ext.cnf -out tls.crt
  ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; return 1; }
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
