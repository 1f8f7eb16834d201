#!/usr/bin/env bash
# Installs what the checks need on a fresh Debian machine. Safe to re-run.
set -euo pipefail

need_apt=()
command -v nix-instantiate >/dev/null 2>&1 || need_apt+=(nix-bin)
# checks/nix-offline.sh lints Python writers with it, as nixpkgs does when it builds them
command -v flake8 >/dev/null 2>&1 || need_apt+=(flake8)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# checks/postgres/run.sh starts its own throwaway cluster from these binaries.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need_apt[*]} — run as root or install them with apt-get" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# Not `rustup … | grep -q`: under pipefail grep's early exit makes that pipeline fail on a match.
components=$(rustup component list --installed 2>/dev/null || true)
grep -q '^clippy' <<<"$components" || rustup component add clippy rustfmt >/dev/null 2>&1 || true
echo "prerequisites present"
