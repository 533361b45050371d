#!/usr/bin/env bash
# Long fuzz runs: every target (or those named) for MINUTES each, one after
# another; needs a nightly toolchain; installs cargo-fuzz if missing. New
# corpus entries land in fuzz/corpus/TARGET, crashes in fuzz/artifacts/.
#   scripts/fuzz.sh [MINUTES] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
  echo "== $t ($minutes min)"
  cargo +nightly fuzz run -O "$t" -- -max_total_time=$((minutes * 60)) -print_final_stats=1 2>&1 \
    | grep -E "DONE|Done|panicked|ERROR|SUMMARY|stat::(number_of_executed_units|average_exec_per_sec|peak_rss)"
done
