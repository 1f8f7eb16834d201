#!/usr/bin/env bash
# Offline Nix checks, as CI runs them: install Debian's nix (2.8) and flake8 if missing, then
# run the shared checker (../shared/tools/nix-offline/check, next to this repository's clone) on
# the repository root: parse every tracked .nix file, check flake.lock against flake.nix, and
# run `nix flake check` against the stand-in nixpkgs (the real nixpkgs lib, shipped with the
# checker or taken from NIXPKGS_LIB, with typed stubs): module evaluation with checked systemd
# directives, VM-test scripts checked for undefined names and Machine methods, flake8 on writers.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# CI clones the repository next to shared/; a git worktree may sit one level deeper.
checker=""
for shared in ${OXIDEX_SHARED:-} "$root/../shared" "$root/../../shared"; do
  if [ -x "$shared/tools/nix-offline/check" ]; then checker="$shared/tools/nix-offline/check"; break; fi
done
[ -n "$checker" ] || { echo "nix-offline: shared/tools/nix-offline/check not found next to $root (set OXIDEX_SHARED)" >&2; exit 2; }

# flake8: the checker lints pkgs.writers.writePython3* scripts with it, as nixpkgs does.
missing=()
command -v nix-instantiate >/dev/null || missing+=(nix-bin)
command -v flake8 >/dev/null || missing+=(flake8)
if [ ${#missing[@]} -gt 0 ]; then
  echo "nix-offline: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
fi

exec "$checker" "$root"
