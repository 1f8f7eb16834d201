#!/usr/bin/env bash
# A third relying party (PyPI Authlib) logs in to a real oxidex:
#   checks/rp-python/run.sh OXIDEX_BIN
# Creates (once) a venv at ${OXIDEX_CACHE:-$HOME/.cache/oxidex}/venv-rp with the pinned
# requirements, starts `OXIDEX_BIN serve` with examples/config-dev.json on a free loopback port
# (checks/lib/dev-server.sh), then runs login.py with the password DB, the mockCallback
# connector and a client whose id and secret hold reserved characters, then client_credentials.py
# (the grant enabled with Dex master's DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT).
# Each login run goes on to SSO, prompt=none, revocation and RP-Initiated Logout (login.py names
# the groups). RP_SKIP=logout,revocation (a comma-separated list of those groups) leaves groups
# out, for a server that lacks the feature; by default every group runs.
# Exit status: 0 when every run passed.
set -euo pipefail

oxidex=${1:?usage: $0 OXIDEX_BIN}
oxidex=$(command -v "$oxidex" || true)
[ -x "$oxidex" ] || { echo "rp-python: not an executable: ${1}" >&2; exit 2; }
# Absolute: the script changes directory before starting it.
oxidex=$(realpath "$oxidex")
command -v python3 >/dev/null || { echo "rp-python: python3 missing" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# shellcheck source=../lib/dev-server.sh
. "$here/../lib/dev-server.sh"

venv="${OXIDEX_CACHE:-$HOME/.cache/oxidex}/venv-rp"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s requirements.txt "$stamp"; then
  echo "rp-python: installing requirements into $venv"
  python3 -m venv "$venv" || { echo "rp-python: python3 -m venv failed (apt-get install -y python3-venv)" >&2; exit 2; }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$stamp"
fi
python="$venv/bin/python"

work=$(mktemp -d)
trap 'stop_dev_server; rm -rf "$work"' EXIT
# The dev config sets no oauth2.grantTypes, so Dex master's flag adds client_credentials.
DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT=true start_dev_server "$oxidex" "$work"

common=(--issuer "$issuer" --redirect-uri http://127.0.0.1:5555/callback
  --post-logout-redirect-uri http://127.0.0.1:5555/logged-out --skip "${RP_SKIP:-}")
example=(--client-id example-app --client-secret ZXhhbXBsZS1hcHAtc2VjcmV0)
login() { # title, flags...
  local title=$1
  shift
  rp_run rp-python "$title" "$python" login.py "${common[@]}" "$@"
}

login "password DB via the connector picker, client_secret_basic" "${example[@]}" \
  --connector local --select picker --login admin@example.com --password password \
  --expect-group admins --auth client_secret_basic
login "mockCallback via connector_id, client_secret_post" "${example[@]}" \
  --connector mock --select param --expect-email kilgore@kilgore.trout --expect-group authors \
  --auth client_secret_post
# Authlib's client_secret_basic sends id and secret without the form-encoding RFC 6749 §2.3.1
# asks for (authlib/authlib#594 was reverted), so Dex and oxidex, which form-decode them,
# reject this client over Basic; the form body is unambiguous.
login "password DB, client id and secret with reserved characters, client_secret_post" \
  --client-id "$special_id" --client-secret "$special_secret" \
  --connector local --select picker --login admin@example.com --password password \
  --auth client_secret_post

rp_run rp-python "client_credentials grant" "$python" client_credentials.py --issuer "$issuer" \
  "${example[@]}" --client-name "Example App" --public-client-id example-cli

rp_summary rp-python
