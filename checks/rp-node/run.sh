#!/usr/bin/env bash
# A strict, independent relying party (npm openid-client) logs in to a real oxidex:
#   checks/rp-node/run.sh OXIDEX_BIN
# Installs the locked npm dependencies, starts `OXIDEX_BIN serve` on a free loopback port with
# examples/config-dev.json (temp SQLite file, no telemetry listener), then runs login.mjs:
#   1. password DB (admin@example.com), connector chosen on the picker page, client_secret_basic
#   2. mockCallback connector chosen on the picker page, client_secret_post
#   3. mockCallback connector chosen with the connector_id authorization parameter
#   4. password DB again with a client whose id and secret need form-encoding in HTTP Basic
# Exit status: 0 when every run passed.
set -euo pipefail

oxidex=${1:?usage: $0 OXIDEX_BIN}
oxidex=$(command -v "$oxidex" || true)
[ -x "$oxidex" ] || { echo "rp-node: not an executable: ${1}" >&2; exit 2; }
command -v node >/dev/null || { echo "rp-node: node missing (Node.js 20 or newer)" >&2; exit 2; }
command -v npm >/dev/null || { echo "rp-node: npm missing" >&2; exit 2; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "rp-node: Node.js 20 or newer needed, found $(node --version)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$here"

echo "rp-node: npm ci"
npm ci --no-audit --no-fund --loglevel=error

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

port=$(node -e '
  const s = require("node:net").createServer();
  s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
issuer="http://127.0.0.1:${port}/dex"

special_id='rp-node:special client'
special_secret="s3cret with space+plus/slash:colon%25-_.!~*'()"
SPECIAL_ID="$special_id" SPECIAL_SECRET="$special_secret" REPO="$repo" WORK="$work" PORT="$port" ISSUER="$issuer" node -e '
  const fs = require("node:fs");
  const config = JSON.parse(fs.readFileSync(`${process.env.REPO}/examples/config-dev.json`, "utf8"));
  config.issuer = process.env.ISSUER;
  config.web = { ...config.web, http: `127.0.0.1:${process.env.PORT}` };
  config.storage = { type: "sqlite3", config: { file: `${process.env.WORK}/oxidex.db` } };
  delete config.telemetry;
  // A client whose id and secret need form-encoding inside HTTP Basic (RFC 6749 §2.3.1).
  config.staticClients.push({
    id: process.env.SPECIAL_ID,
    name: "RP with an awkward secret",
    secret: process.env.SPECIAL_SECRET,
    redirectURIs: ["http://127.0.0.1:5555/callback"],
  });
  fs.writeFileSync(`${process.env.WORK}/config.json`, JSON.stringify(config, null, 2));'

"$oxidex" serve "$work/config.json" >"$work/oxidex.log" 2>&1 &
pid=$!

if ! PID="$pid" ISSUER="$issuer" node -e '
  const deadline = Date.now() + 30000;
  const alive = () => { try { process.kill(Number(process.env.PID), 0); return true; } catch { return false; } };
  (async () => {
    while (Date.now() < deadline && alive()) {
      try {
        if ((await fetch(`${process.env.ISSUER}/healthz`)).ok) process.exit(0);
      } catch {}
      await new Promise((r) => setTimeout(r, 200));
    }
    process.exit(1);
  })();'; then
  echo "rp-node: oxidex did not become healthy at $issuer/healthz; its log:" >&2
  cat "$work/oxidex.log" >&2
  exit 1
fi
echo "rp-node: oxidex $("$oxidex" version 2>/dev/null | head -n1) healthy at $issuer (pid $pid)"

common=(--issuer "$issuer" --redirect-uri http://127.0.0.1:5555/callback)
example=(--client-id example-app --client-secret ZXhhbXBsZS1hcHAtc2VjcmV0)
runs=0
failures=0
login() { # title, flags...
  local title=$1
  shift
  runs=$((runs + 1))
  echo
  echo "== rp-node: $title"
  if ! node login.mjs "${common[@]}" "$@"; then
    failures=$((failures + 1))
  fi
}

login "password DB via the connector picker, client_secret_basic" "${example[@]}" \
  --connector local --select picker --login admin@example.com --password password \
  --expect-group admins --auth basic
login "mockCallback via the connector picker, client_secret_post" "${example[@]}" \
  --connector mock --select picker --expect-email kilgore@kilgore.trout --expect-group authors \
  --auth post
login "mockCallback via connector_id, client_secret_basic" "${example[@]}" \
  --connector mock --select param --expect-email kilgore@kilgore.trout --expect-group authors \
  --auth basic
login "password DB, client id and secret that need form-encoding in HTTP Basic" \
  --client-id "$special_id" --client-secret "$special_secret" \
  --connector local --select picker --login admin@example.com --password password --auth basic

echo
if [ "$failures" -ne 0 ]; then
  echo "rp-node: oxidex log (last 40 lines):"
  tail -n 40 "$work/oxidex.log"
fi
echo "rp-node: $((runs - failures)) of $runs runs passed"
[ "$failures" -eq 0 ]
