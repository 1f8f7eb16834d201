#!/usr/bin/env bash
# A strict, independent relying party (npm openid-client) logs in to a real oxidex:
#   checks/rp-node/run.sh OXIDEX_BIN
# Installs the locked npm dependencies, starts `OXIDEX_BIN serve` with examples/config-dev.json
# on a free loopback port (checks/lib/dev-server.sh), then runs login.mjs:
#   1. password DB (admin@example.com), connector chosen on the picker page, client_secret_basic
#   2. mockCallback connector chosen on the picker page, client_secret_post
#   3. mockCallback connector chosen with the connector_id authorization parameter
#   4. password DB again with a client whose id and secret need form-encoding in HTTP Basic
#   5. client_credentials (enabled with Dex master's DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT)
#      through openid-client's clientCredentialsGrant (client-credentials.mjs)
# Each login run goes on to SSO, prompt=none, revocation and RP-Initiated Logout (login.mjs names
# the groups). RP_SKIP=logout,revocation (a comma-separated list of those groups) leaves groups
# out, for a server that lacks the feature; by default every group runs.
# With RP_HTTPS=1 the same runs go to an https issuer: oxidex serves web.https with a
# certificate from a throwaway CA (checks/lib/dev-server.sh), which Node trusts through
# NODE_EXTRA_CA_CERTS and nothing else.
# Exit status: 0 when every run passed.
set -euo pipefail

oxidex=${1:?usage: $0 OXIDEX_BIN}
oxidex=$(command -v "$oxidex" || true)
[ -x "$oxidex" ] || { echo "rp-node: not an executable: ${1}" >&2; exit 2; }
# Absolute: the script changes directory before starting it.
oxidex=$(realpath "$oxidex")
for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "rp-node: $tool missing" >&2; exit 2; }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "rp-node: Node.js 20 or newer needed, found $(node --version)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# shellcheck source=../lib/dev-server.sh
. "$here/../lib/dev-server.sh"

echo "rp-node: npm ci"
npm ci --no-audit --no-fund --loglevel=error

work=$(mktemp -d)
trap 'stop_dev_server; rm -rf "$work"' EXIT
# The dev config sets no oauth2.grantTypes, so Dex master's flag adds client_credentials.
DEV_SERVER_HTTPS=${RP_HTTPS:-} DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT=true \
  start_dev_server "$oxidex" "$work"
if [ -n "$dev_ca_file" ]; then
  export NODE_EXTRA_CA_CERTS=$dev_ca_file
fi

common=(--issuer "$issuer" --redirect-uri http://127.0.0.1:5555/callback
  --post-logout-redirect-uri http://127.0.0.1:5555/logged-out --skip "${RP_SKIP:-}")
example=(--client-id example-app --client-secret ZXhhbXBsZS1hcHAtc2VjcmV0)
login() { # title, flags...
  local title=$1
  shift
  rp_run rp-node "$title" node login.mjs "${common[@]}" "$@"
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

rp_run rp-node "client_credentials grant" node client-credentials.mjs --issuer "$issuer" \
  "${example[@]}" --client-name "Example App" --public-client-id example-cli

rp_summary rp-node
