#!/usr/bin/env bash
# Offline Nix checks, as CI runs them: install Debian's nix (2.8) if missing, then run the
# shared checker (../shared/tools/nix-offline/check, next to this repository's clone) on the
# repository root: parse every tracked .nix file, check flake.lock against flake.nix and, when
# NIXPKGS_LIB points at a checkout of nix-community/nixpkgs.lib, `nix flake check` against the
# stand-in nixpkgs.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# CI clones the repository next to shared/; a git worktree may sit one level deeper.
checker=""
for shared in ${OXIDEX_SHARED:-} "$root/../shared" "$root/../../shared"; do
  if [ -x "$shared/tools/nix-offline/check" ]; then checker="$shared/tools/nix-offline/check"; break; fi
done
[ -n "$checker" ] || { echo "nix-offline: shared/tools/nix-offline/check not found next to $root (set OXIDEX_SHARED)" >&2; exit 2; }

if ! command -v nix-instantiate >/dev/null; then
  echo "nix-offline: installing nix-bin"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y nix-bin >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nix-bin >/dev/null; }
fi

exec "$checker" "$root"
