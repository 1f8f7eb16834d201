#!/usr/bin/env bash
# The Nix -> oxidex contract: render every example under checks/render-examples/ with the
# NixOS module's pure renderer (nixos-module/render.nix, plain `nix-instantiate`, no nixpkgs)
# and hand the JSON to `oxidex check-config`.
#   checks/render-contract.sh OXIDEX_BIN
# Each example says what must happen (`expect`):
#   pass                rendering has no errors and `check-config --strict` accepts the file
#   check-config-fails  rendering has no errors and `check-config` rejects the file
#   render-fails        the renderer itself reports errors (the module's assertions)
set -euo pipefail

oxidex=${1:?usage: $0 OXIDEX_BIN}
oxidex=$(command -v "$oxidex" || true)
[ -x "$oxidex" ] || { echo "render-contract: not an executable: ${1}" >&2; exit 2; }
command -v nix-instantiate >/dev/null || { echo "render-contract: nix-instantiate missing (apt-get install -y nix-bin)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "render-contract: python3 missing" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# TLS stand-ins (a self-signed certificate and its key; also the client CA) for examples
# whose credentials are certificates: check-config reads and checks those files.
command -v openssl >/dev/null || { echo "render-contract: openssl missing" >&2; exit 2; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok    %-28s %s\n' "$1" "$2"; }
bad() { failed=$((failed + 1)); printf 'FAIL  %-28s %s\n' "$1" "$2"; }

for example in "$repo"/checks/render-examples/*.nix; do
  name=$(basename "$example" .nix)
  case_dir="$work/$name"
  creds="$case_dir/credentials"
  state="$case_dir/state"
  mkdir -p "$creds" "$state"

  # Render: the expected outcome, the credential names, the errors and the document.
  if ! nix-instantiate --eval --strict --json \
      --arg example "$example" --argstr credentialsDirectory "$creds" --argstr stateDirectory "$state" \
      -E '{ example, credentialsDirectory, stateDirectory }:
          let
            e = import example { inherit credentialsDirectory; };
            r = import '"$repo"'/nixos-module/render.nix {
              inherit (e) settings credentials;
              inherit credentialsDirectory stateDirectory;
            };
          in { inherit (e) expect; credentials = builtins.attrNames e.credentials; inherit (r) errors config; }' \
      >"$case_dir/rendered.json" 2>"$case_dir/nix.err"; then
    bad "$name" "nix-instantiate failed: $(tr '\n' ' ' <"$case_dir/nix.err")"
    continue
  fi

  # Split the result into the config file and a few shell-readable lines.
  python3 - "$case_dir" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
r = json.loads((d / "rendered.json").read_text())
(d / "config.json").write_text(json.dumps(r["config"], indent=2) + "\n")
(d / "expect").write_text(r["expect"])
(d / "credential-names").write_text("".join(n + "\n" for n in r["credentials"]))
(d / "errors").write_text("".join(e + "\n" for e in r["errors"]))
PY
  expect=$(cat "$case_dir/expect")
  nerrors=$(wc -l <"$case_dir/errors")

  # Stand-ins for the secret files systemd would load; CREDENTIALS_DIRECTORY as in the unit.
  while IFS= read -r cred; do
    [ -n "$cred" ] || continue
    case "$cred" in
      # A password-hash credential must hold a bcrypt hash (of "password", cost 10).
      *hash*) printf '%s\n' '$2b$10$sD0K5NZrR9THssaos8nEde5ywauRcVXC6frrFKxi6lUuERHKIbAdi' >"$creds/$cred" ;;
      # Client ids are not secrets: check-config may print them.
      *client-id*) printf 'test-id-for-%s\n' "$cred" >"$creds/$cred" ;;
      *.crt) cp "$work/tls.crt" "$creds/$cred" ;;
      *.key) cp "$work/tls.key" "$creds/$cred" ;;
      *) printf 'test-value-for-%s\n' "$cred" >"$creds/$cred" ;;
    esac
  done <"$case_dir/credential-names"
  env_for_case=(CREDENTIALS_DIRECTORY="$creds" FORGEJO_CLIENT_SECRET="test-secret-from-env")

  if [ "$expect" = render-fails ]; then
    if [ "$nerrors" -gt 0 ]; then
      ok "$name" "renderer refused it ($nerrors errors; first: $(head -n1 "$case_dir/errors" | cut -c1-90)…)"
    else
      bad "$name" "renderer accepted settings it must refuse"
    fi
    continue
  fi
  if [ "$nerrors" -gt 0 ]; then
    bad "$name" "renderer reported errors: $(tr '\n' ' ' <"$case_dir/errors")"
    continue
  fi

  flags=()
  [ "$expect" = pass ] && flags=(--strict)
  set +e
  env "${env_for_case[@]}" "$oxidex" check-config "${flags[@]}" "$case_dir/config.json" >"$case_dir/check.out" 2>&1
  rc=$?
  set -e
  case "$expect:$rc" in
    pass:0) ok "$name" "check-config --strict accepted it" ;;
    pass:*) bad "$name" "check-config rejected it (rc $rc): $(tr '\n' ' ' <"$case_dir/check.out" | cut -c1-400)" ;;
    check-config-fails:0) bad "$name" "check-config accepted a configuration it must reject" ;;
    check-config-fails:*) ok "$name" "check-config rejected it (rc $rc): $(grep -m1 -v '^\s*$' "$case_dir/check.out" | cut -c1-90)" ;;
    *) bad "$name" "unknown expect value '$expect'" ;;
  esac
  if [ "$expect" = pass ] && [ "$rc" = 0 ] && grep -q -e 'test-value-for-' -e 'test-secret-from-env' "$case_dir/check.out"; then
    bad "$name" "check-config printed a secret value"
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
