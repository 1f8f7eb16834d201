#!/usr/bin/env bash
# The long graceful-shutdown run: N SIGTERMs (default 20) of the real oxidex at
# random moments while 64 clients rotate refresh tokens on SQLite. Prints per-run
# figures and the total; fails when a request the server processed went
# unanswered, the exit status is not 0, or a held token no longer refreshes.
#   bash checks/faults/shutdown-soak.sh 20
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}
OXIDEX_SHUTDOWN_RUNS=$runs cargo test --locked --test it \
  faults::sigterm_under_load_answers_every_accepted_request \
  -- --include-ignored --nocapture --exact 2>&1 | grep -E '^shutdown|test result|panicked|FAILED|left|right'
