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

# Under pipefail (the VM-test driver runs every command with set -euo pipefail) a pipeline
# ending in `grep -q` fails exactly when grep matches: grep exits at the first match and the
# writer dies of SIGPIPE (141), so fail("… | grep -q SECRET") passes on a leak. Read the output
# and test it in the script instead.
quiet_greps=$(git -C "$root" grep -nE '\|[[:space:]]*grep[[:space:]]+(-[A-Za-z]*q|--quiet)' -- '*.nix' '*.sh' '*.py' \
  | grep -vE '^[^:]+:[0-9]+:[[:space:]]*#' || true)
if [ -n "$quiet_greps" ]; then
  printf '%s\n' "$quiet_greps" >&2
  echo "nix-offline: pipelines ending in grep -q (above) fail on a match under pipefail" >&2
  exit 1
fi

exec "$checker" "$root"
