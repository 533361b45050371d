#!/usr/bin/env bash
# The one test command (README.md and .ci/run both call it).
# Installs what the tests need, then: format check, clippy, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The dashboard's browser test: Debian's chromium, driven from node.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The OpenAPI test runs ringway in a network namespace of its own.
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# ACME end to end: Let's Encrypt's test CA (pebble, pebble-challtestsrv).
command -v pebble >/dev/null 2>&1 || need+=(pebble)
# Binary upgrades are proven under wrk load.
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# Cluster mode: the etcd client's build needs protoc; the tests run etcd.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (run as root to install)" >&2
  fi
fi
# gRPC end-to-end tests: a real grpcio client and server.
if ! python3 -c "import grpc" >/dev/null 2>&1; then
  echo "== installing grpcio"
  python3 -m pip install -q grpcio 2>/dev/null || python3 -m pip install -q --break-system-packages grpcio
fi
# The OpenAPI contract test: schemathesis.
if ! command -v st >/dev/null 2>&1; then
  echo "== installing schemathesis"
  python3 -m pip install -q schemathesis 2>/dev/null || python3 -m pip install -q --break-system-packages schemathesis
fi
# playwright-core (no browser download: it drives the chromium above).
if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  echo "== installing playwright-core"
  (cd tests/dashboard && npm install --no-audit --no-fund --no-package-lock --silent)
fi

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
else
  echo "== rustfmt is not installed: format check skipped" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets --features cluster -- -D warnings
else
  echo "== clippy is not installed: lint skipped" >&2
fi
# Cluster mode is a feature (protoc at build time); the tests cover it.
echo "== cargo test --features cluster (unit, integration, and every bench in smoke mode)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --features cluster --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# Fuzz smoke: every target for a few seconds, when a nightly toolchain is
# here (cargo fuzz needs it). Long runs are manual: scripts/fuzz.sh.
if cargo +nightly --version >/dev/null 2>&1; then
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet || status=1
  fi
  if command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== fuzz smoke (${FUZZ_SECONDS:-30} s per target)"
    for t in $(cargo +nightly fuzz list); do
      if ! cargo +nightly fuzz run -O "$t" -- -max_total_time="${FUZZ_SECONDS:-30}" >"$log.fuzz" 2>&1; then
        tail -40 "$log.fuzz"
        echo "fuzz target $t failed" >&2
        status=1
      else
        echo "fuzz $t: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log.fuzz" | tail -1)"
      fi
    done
    rm -f "$log.fuzz"
  fi
else
  echo "== nightly is not installed: fuzz smoke run skipped"
fi
# Soak smoke: mixed load, API churn and backend restarts against the debug
# binary the tests just built (scripts/soak.sh runs longer; SOAK_SECONDS
# changes the length, 0 skips). The CSV and chart stay only on failure.
soak_seconds="${SOAK_SECONDS:-60}"
if [ "$soak_seconds" = 0 ]; then
  echo "== soak skipped (SOAK_SECONDS=0)"
else
  echo "== soak (${soak_seconds} s)"
  soak_dir=$(mktemp -d)
  if RINGWAY_BIN=target/debug/ringway scripts/soak.sh --seconds "$soak_seconds" --out "$soak_dir/soak.csv"; then
    rm -rf "$soak_dir"
  else
    echo "soak failed: CSV, chart and error log in $soak_dir" >&2
    status=1
  fi
fi

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
