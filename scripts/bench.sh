#!/usr/bin/env bash
# Side-by-side benchmark: ringway vs nginx vs HAProxy (and HAProxy mode tcp
# as the L4 floor) on this machine, one proxy core each, alternating rounds.
# Installs what it needs, builds ringway in release mode, writes results to
# bench-results/ (JSON, CSV, PNG charts) and prints a table of ratios to nginx.
#   scripts/bench.sh [--rounds N] [--duration S] [--scenarios small,4k,...]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "bench: need root to install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# nginx-light may start a system nginx on port 80; we never use it.
systemctl stop nginx >/dev/null 2>&1 || true

ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 || true
cargo build --release --quiet
exec python3 scripts/bench.py "$@"
