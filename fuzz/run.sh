#!/usr/bin/env bash
# Builds the fuzz targets (cargo fuzz, nightly) and runs each one for SECONDS
# (default 30), then prints per target: executions, executions per second and
# crashes found. Exits non-zero when any target crashed, timed out, ran out of
# memory or failed to build or run.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      every target (or the ones named)
#   FUZZ_RUNS=10000000 fuzz/run.sh 0 jwt    a number of executions instead of a time
#
# Seeds are read from fuzz/corpus/<target> (committed, never written to); what a
# run discovers goes to fuzz/work/corpus/<target> and is reused by later runs.
# A crashing input is saved under fuzz/work/artifacts/<target>/; reproduce it
# with `cargo +nightly fuzz run -s none <target> <file>`, fix the library, add a
# regression test, and copy the input into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-30}
shift || true
runs=${FUZZ_RUNS:-}
# Longest a single input may take before it counts as a hang (a crash), and the
# memory a target may use before it counts as a leak or blow-up (a crash).
per_input_timeout=10
rss_limit_mb=2048
# cargo-fuzz, pinned so every machine builds the same way.
cargo_fuzz_version=0.13.2

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz ${cargo_fuzz_version} (into ~/.cargo/bin)"
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# The committed Cargo.lock must be complete (as `--locked` would insist).
cargo +nightly metadata --locked --format-version 1 >/dev/null

# Sanitizers only instrument Rust code, and the fuzzed code is safe Rust: without
# ASan the targets run several times faster. Debug assertions and overflow
# checks stay on (cargo fuzz's default).
build_flags=(-s none)
echo "==> building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build "${build_flags[@]}"

declare -A executions rate crashes status
failed=0
for target in "${targets[@]}"; do
  work="work/corpus/$target"
  artifacts="work/artifacts/$target"
  log="work/logs/$target.log"
  mkdir -p "$work" "$artifacts" "work/logs"
  rm -f "$artifacts"/*
  args=(
    "-timeout=$per_input_timeout"
    "-rss_limit_mb=$rss_limit_mb"
    "-max_len=16384"
    "-artifact_prefix=$artifacts/"
    "-print_final_stats=1"
  )
  if [ -f "dicts/$target.dict" ]; then
    args+=("-dict=dicts/$target.dict")
  fi
  if [ -n "$runs" ]; then
    args+=("-runs=$runs")
    limit=0
  else
    args+=("-max_total_time=$seconds")
    # libFuzzer stops itself; this is the backstop should it not.
    limit=$((seconds * 2 + 120))
  fi
  echo "==> $target"
  set +e
  if [ "$limit" -gt 0 ]; then
    timeout --kill-after=10 "$limit" \
      cargo +nightly fuzz run "${build_flags[@]}" "$target" "$work" "corpus/$target" -- "${args[@]}" \
      >"$log" 2>&1
  else
    cargo +nightly fuzz run "${build_flags[@]}" "$target" "$work" "corpus/$target" -- "${args[@]}" \
      >"$log" 2>&1
  fi
  code=$?
  set -e
  executions[$target]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate[$target]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  found=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  crashes[$target]=$found
  if [ "$code" -eq 0 ] && [ "$found" -eq 0 ]; then
    status[$target]=ok
  else
    failed=1
    if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
      status[$target]="killed after ${limit}s"
    else
      status[$target]="FAILED (exit $code)"
    fi
    echo "--- $target: last lines of $log"
    tail -n 40 "$log"
    for file in "$artifacts"/*; do
      [ -f "$file" ] && echo "input: fuzz/$file"
    done
  fi
done

echo
printf '%-16s %14s %10s %8s  %s\n' target executions exec/s crashes status
for target in "${targets[@]}"; do
  printf '%-16s %14s %10s %8s  %s\n' "$target" "${executions[$target]:-?}" "${rate[$target]:-?}" \
    "${crashes[$target]}" "${status[$target]}"
done
exit "$failed"
