#!/usr/bin/env bash
# Soak test: ringway under a modest mixed load (keep-alive and new-connection
# GETs, POSTs with Content-Length and chunked bodies, WebSocket sessions)
# while routes and backends churn through the admin API and a backend is
# SIGKILLed and restarted every 20 s. Samples ringway's RSS, fds and the
# /api/v1/stats levels every second into a CSV and a PNG chart; fails on
# growth or on any unexpected error. Details: scripts/soak.py.
#   scripts/soak.sh [MINUTES]            # default 30; fractions allowed (0.5)
#   scripts/soak.sh --seconds 60 [--out FILE.csv] [--workers N] [--rate X]
# Binary: $RINGWAY_BIN if set, else target/debug/ringway (built here with
# `cargo build`, the profile CI uses). Python 3 standard library only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${RINGWAY_BIN:-}" ]; then
  cargo build --quiet
  export RINGWAY_BIN=target/debug/ringway
fi
# Room for every connection ringway, the backends and the clients hold.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
exec python3 scripts/soak.py "$@"
