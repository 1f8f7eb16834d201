#!/usr/bin/env bash
# The long crash-consistency run: N SIGKILLs (default 100) of the real oxidex at
# random moments while 16 clients rotate refresh tokens on SQLite, each followed by
# a restart. Prints per-run figures and the total; fails on any loss other than a
# committed rotation whose answer never reached the client, or a damaged database.
#   bash checks/faults/crash-soak.sh 100
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-100}
OXIDEX_CRASH_RUNS=$runs cargo test --locked --test it \
  faults::sigkill_during_refresh_rotation_loses_only_unanswered_rotations \
  -- --include-ignored --nocapture --exact 2>&1 | grep -E '^crash|test result|panicked|FAILED|left|right'
