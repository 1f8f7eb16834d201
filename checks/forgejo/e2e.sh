#!/usr/bin/env bash
# End-to-end check: a Grafana-like client -> oxidex -> a real forge (Forgejo/Gitea built from the
# Go module proxy), all on 127.0.0.1, driven by checks/login-driver/login_driver.py.
#
#   checks/forgejo/e2e.sh OXIDEX_BIN
#
# Builds or reuses the forge (build.sh), starts and bootstraps it (forge.py), writes an oxidex
# config (gitea connector + oidc connector against the same forge, a Grafana-like static client,
# SQLite in a temp dir, every secret through a file), starts `OXIDEX_BIN serve CONFIG` and runs the
# scenarios. One line per scenario, then `N passed, N failed`; exit status 1 when any failed.
# Everything it started is stopped on exit. KEEP=1 keeps the temp dir (logs, config) for a look.
# Ports: FORGE_PORT (3300), OXIDEX_PORT (5556); nothing listens on the client's redirect port.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
driver=$here/../login-driver/login_driver.py
oxidex_bin=${1:?usage: e2e.sh OXIDEX_BIN}
oxidex_bin=$(realpath "$oxidex_bin")
forge_port=${FORGE_PORT:-3300}
oxidex_port=${OXIDEX_PORT:-5556}
rp_port=${RP_PORT:-3000}
issuer=http://127.0.0.1:$oxidex_port/dex
rp_redirect=http://127.0.0.1:$rp_port/login/generic_oauth
rp_signed_out=http://127.0.0.1:$rp_port/login
# The forge's access tokens live this long, so that every refresh through oxidex needs an
# upstream refresh (Dex's gitea connector refreshes upstream only once the token has expired).
ttl=${FORGE_ACCESS_TOKEN_TTL:-4}

work=$(mktemp -d "${TMPDIR:-/tmp}/oxidex-e2e.XXXXXX")
oxidex_pid=
passed=0
failed=0
scenarios=(gitea-login-alice refresh-twice wrong-password outside-org oidc-connector-login grafana-logout forge-restarted forge-app-deleted)

cleanup() {
  if [[ -n $oxidex_pid ]]; then
    kill "$oxidex_pid" 2>/dev/null && wait "$oxidex_pid" 2>/dev/null
  fi
  python3 "$here/forge.py" stop --dir "$work/forge" 2>/dev/null
  if [[ ${KEEP:-} == 1 ]]; then echo "e2e: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "e2e: $*" >&2; }

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() {
  echo "FAIL $1: $2"
  failed=$((failed + 1))
  if [[ -f $work/$1.err ]]; then sed 's/^/    /' "$work/$1.err" | tail -n 12; fi
}

# Setup failed: every scenario not yet run counts as failed, so the closing line tells.
abort() {
  echo "FAIL setup: $1"
  for s in "${scenarios[@]}"; do echo "FAIL $s: not run (setup failed)"; done
  echo "0 passed, $(( ${#scenarios[@]} + 1 )) failed"
  exit 1
}

wait_http() { # url seconds [pid]
  local deadline=$((SECONDS + $2))
  while (( SECONDS < deadline )); do
    if [[ -n ${3:-} ]] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    curl -fsS -o /dev/null --max-time 3 "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

# Counts the forge's successful token-endpoint answers (code exchanges and refreshes).
forge_token_grants() {
  grep -c 'completed POST /login/oauth/access_token for .*200 OK' "$work/forge/forge.log" || true
}

json_get() { # file python-expression-over-d
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# --- prerequisites: go and gcc (build), git (the forge needs it), curl, python3 ---------------
missing=()
for tool in git curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
command -v gcc >/dev/null || missing+=(gcc)
if (( ${#missing[@]} )) && [[ $(id -u) == 0 ]]; then
  note "installing ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1
fi
for tool in go gcc git curl python3; do command -v "$tool" >/dev/null || abort "$tool is not on PATH"; done

# --- the forge --------------------------------------------------------------------------------
build_out=$(bash "$here/build.sh" 2>"$work/build.log") || { cat "$work/build.log" >&2; abort "building the forge failed"; }
eval "$build_out"
note "forge $UPSTREAM_VERSION: $UPSTREAM_BIN"
python3 "$here/forge.py" start --bin "$UPSTREAM_BIN" --static-root "$UPSTREAM_STATIC_ROOT" \
  --dir "$work/forge" --port "$forge_port" --access-token-ttl "$ttl" \
  --redirect-uri "$issuer/callback" >/dev/null 2>"$work/forge-start.log" \
  || { cat "$work/forge-start.log" >&2; abort "starting the forge failed"; }
forge_json=$work/forge/forge.json
forge_url=$(json_get "$forge_json" 'd["url"].rstrip("/")')
alice_pw=$(json_get "$forge_json" 'd["users"]["alice"]["password"]')
bob_pw=$(json_get "$forge_json" 'd["users"]["bob"]["password"]')
# The forge's OIDC issuer, byte for byte (Forgejo <= 10 ends it with "/", newer ones do not).
forge_issuer=$(curl -fsS "$forge_url/.well-known/openid-configuration" | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])') \
  || abort "the forge's discovery document is unreadable"

# --- oxidex -----------------------------------------------------------------------------------
umask 077
python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$work/grafana-client-secret"
python3 - "$work" "$issuer" "$oxidex_port" "$rp_redirect" "$rp_signed_out" "$forge_url" "$forge_issuer" <<'EOF' || abort "writing the oxidex config failed"
import json, sys
work, issuer, port, rp_redirect, rp_signed_out, forge_url, forge_issuer = sys.argv[1:]
forge = json.load(open(f"{work}/forge/forge.json"))
apps = forge["apps"]
config = {
    "issuer": issuer,
    "storage": {"type": "sqlite3", "config": {"file": f"{work}/oxidex.db"}},
    "web": {"http": f"127.0.0.1:{port}"},
    "logger": {"level": "debug"},
    "oauth2": {"skipApprovalScreen": True},
    "staticClients": [{
        "id": "grafana",
        "name": "Grafana",
        "redirectURIs": [rp_redirect],
        "postLogoutRedirectURIs": [rp_signed_out],
        "secretFile": f"{work}/grafana-client-secret",
    }],
    "connectors": [
        {
            "type": "gitea",
            "id": "forgejo",
            "name": "Forgejo",
            "config": {
                "baseURL": forge_url,
                "clientID": apps["gitea"]["client_id"],
                "clientSecretFile": apps["gitea"]["client_secret_file"],
                "redirectURI": f"{issuer}/callback",
                "orgs": [{"name": forge["org"], "teams": [forge["team"]]}],
            },
        },
        {
            "type": "oidc",
            "id": "forgejo-oidc",
            "name": "Forgejo (OpenID Connect)",
            "config": {
                "issuer": forge_issuer,
                "clientID": apps["oidc"]["client_id"],
                "clientSecretFile": apps["oidc"]["client_secret_file"],
                "redirectURI": f"{issuer}/callback",
                "scopes": ["openid", "profile", "email", "groups"],
                "getUserInfo": True,
                "insecureEnableGroups": True,
            },
        },
    ],
}
with open(f"{work}/oxidex.json", "w") as handle:
    json.dump(config, handle, indent=2)
EOF
umask 022
note "starting $oxidex_bin serve $work/oxidex.json"
"$oxidex_bin" serve "$work/oxidex.json" >"$work/oxidex.log" 2>&1 </dev/null &
oxidex_pid=$!
if ! wait_http "$issuer/healthz" 60 "$oxidex_pid"; then
  tail -n 30 "$work/oxidex.log" >&2
  abort "oxidex did not become ready at $issuer/healthz"
fi

# --- scenarios --------------------------------------------------------------------------------
rp=(--issuer "$issuer" --redirect-uri "$rp_redirect" --client-id grafana
    --client-secret-file "$work/grafana-client-secret")
team_group="oxorg:Devs"  # the gitea connector keeps the team name's case

run_driver() { # scenario args...
  local name=$1; shift
  python3 "$driver" "$@" >"$work/$name.json" 2>"$work/$name.err"
}

# 1. alice logs in through the gitea connector; her org and team become groups and a role.
if run_driver gitea-login-alice oidc "${rp[@]}" --connector forgejo \
     --username alice --password "$alice_pw" --save-tokens "$work/alice.tokens" \
     --role-map "$team_group=Admin,oxorg=Viewer" --default-role None \
     --expect-login alice --expect-email alice@example.test --expect-role Admin \
     --expect-group oxorg --expect-group "$team_group"; then
  pass gitea-login-alice
else
  fail gitea-login-alice "login, groups or role not as expected"
fi

# 2. two refreshes through oxidex, each one an upstream refresh that rotates the forge's token.
refresh_once() { # n
  local before after
  sleep $((ttl + 1))
  before=$(forge_token_grants)
  run_driver "refresh-$1" refresh --tokens "$work/alice.tokens" \
    --client-id grafana --client-secret-file "$work/grafana-client-secret" \
    --role-map "$team_group=Admin,oxorg=Viewer" --default-role None \
    --expect-role Admin --expect-group "$team_group" || { echo "refresh $1 failed"; return 1; }
  [[ $(json_get "$work/refresh-$1.json" 'd["rotated"]') == True ]] || { echo "refresh $1 did not rotate oxidex's refresh token"; return 1; }
  after=$(forge_token_grants)
  (( after == before + 1 )) || { echo "refresh $1 made $((after - before)) upstream token grants, expected 1"; return 1; }
}
if [[ ! -f $work/alice.tokens ]]; then
  fail refresh-twice "no tokens from gitea-login-alice"
elif why=$(refresh_once 1) && why=$(refresh_once 2); then
  pass refresh-twice
else
  cat "$work"/refresh-*.err >"$work/refresh-twice.err" 2>/dev/null
  fail refresh-twice "$why"
fi

# 3. a wrong password ends on the forge's sign-in form: no code, no token.
if run_driver wrong-password oidc "${rp[@]}" --connector forgejo --username alice --password "not-$alice_pw" \
     --expect-failure "were rejected"; then
  pass wrong-password
else
  fail wrong-password "expected the forge to reject the password"
fi

# 4. bob is in no team of the required org: oxidex answers a clear 403 page, no code, no token.
if run_driver outside-org oidc "${rp[@]}" --connector forgejo --username bob --password "$bob_pw" \
     --expect-failure "(403,"; then
  pass outside-org
else
  fail outside-org "expected a 403 page from oxidex"
fi

# 5. the same login through the oidc connector (the forge as an OpenID provider). The forge's own
#    groups claim lower-cases team names.
if run_driver oidc-connector-login oidc "${rp[@]}" --connector forgejo-oidc \
     --username alice --password "$alice_pw" \
     --role-map "oxorg:devs=Admin,oxorg=Viewer" --default-role None \
     --expect-login alice --expect-email alice@example.test --expect-role Admin \
     --expect-group oxorg --expect-group oxorg:devs; then
  pass oidc-connector-login
else
  fail oidc-connector-login "login through the oidc connector failed"
fi

# 6. Grafana's sign-out (signout_redirect_url = <issuer>/logout?post_logout_redirect_uri=<rp>/login,
#    id_token_hint added): before it a second login skips the forge (oxidex's session); the
#    sign-out lands on the RP's login page; the next login goes through the forge again.
if run_driver grafana-logout oidc "${rp[@]}" --connector forgejo --username alice --password "$alice_pw" \
     --logout-url "$issuer/logout?post_logout_redirect_uri=$rp_signed_out"; then
  pass grafana-logout
else
  fail grafana-logout "sign-out through oxidex's /logout did not end the session as expected"
fi

# 7. the forge stops mid-session: a refresh that needs it is a clean 503 temporarily_unavailable
#    (not a 500, nothing rotated); once the forge is back, the same refresh token refreshes.
forge_restarted() {
  [[ -f $work/alice.tokens ]] || { echo "no tokens from gitea-login-alice"; return 1; }
  python3 "$here/forge.py" stop --dir "$work/forge" 2>>"$work/forge-restarted.err" || { echo "stopping the forge failed"; return 1; }
  sleep $((ttl + 1))
  run_driver forge-restarted-down refresh --tokens "$work/alice.tokens" \
    --client-id grafana --client-secret-file "$work/grafana-client-secret" \
    --expect-failure "answered 503" --expect-failure "temporarily_unavailable" \
    || { echo "refresh with the forge down did not fail with 503 temporarily_unavailable"; return 1; }
  python3 "$here/forge.py" resume --dir "$work/forge" --bin "$UPSTREAM_BIN" 2>>"$work/forge-restarted.err" \
    || { echo "restarting the forge failed"; return 1; }
  run_driver forge-restarted-up refresh --tokens "$work/alice.tokens" \
    --client-id grafana --client-secret-file "$work/grafana-client-secret" \
    --role-map "$team_group=Admin,oxorg=Viewer" --default-role None --expect-role Admin \
    || { echo "the same refresh token did not refresh once the forge was back"; return 1; }
  if grep -qiE 'panicked|status=500|" 500 ' "$work/oxidex.log"; then echo "oxidex logged a 500 or a panic"; return 1; fi
}
if why=$(forge_restarted); then
  pass forge-restarted
else
  cat "$work"/forge-restarted-*.err >>"$work/forge-restarted.err" 2>/dev/null
  fail forge-restarted "$why"
fi

# 8. the forge's OAuth2 application is deleted: refreshing alice's session is a clean
#    invalid_grant (400, not 500), and a new login ends on the forge's "Client ID not registered"
#    page instead of an oxidex 500.
if python3 "$here/forge.py" delete-app --dir "$work/forge" --which gitea 2>"$work/forge-app-deleted.err"; then
  sleep $((ttl + 1))
  why=""
  if [[ ! -f $work/alice.tokens ]]; then
    why="no tokens from gitea-login-alice"
  elif ! run_driver forge-app-deleted-refresh refresh --tokens "$work/alice.tokens" \
       --client-id grafana --client-secret-file "$work/grafana-client-secret" \
       --expect-failure "answered 400" --expect-failure "invalid_grant"; then
    why="refresh did not fail with 400 invalid_grant"
  fi
  if ! run_driver forge-app-deleted-login oidc "${rp[@]}" --connector forgejo \
       --username alice --password "$alice_pw" --expect-failure "(400," --expect-failure "Client ID not registered"; then
    why="${why:+$why; }new login did not end on the forge's 400 page"
  fi
  if grep -qiE 'panicked|status=500|" 500 ' "$work/oxidex.log"; then
    why="${why:+$why; }oxidex logged a 500 or a panic"
  fi
  cat "$work"/forge-app-deleted-*.err >>"$work/forge-app-deleted.err" 2>/dev/null
  if [[ -z $why ]]; then pass forge-app-deleted; else fail forge-app-deleted "$why"; fi
else
  fail forge-app-deleted "deleting the forge's application failed"
fi

echo "$passed passed, $failed failed"
(( failed == 0 ))
