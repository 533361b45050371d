#!/usr/bin/env bash
# Memory per idle keep-alive client connection: 5,000 connections, one
# request each, RSS growth ÷ connections, for ringway, nginx and HAProxy.
#   scripts/idle-memory.sh [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SKIP_BUILD=0 scripts/bench.sh --idle-memory "${1:-5000}" --subjects ringway,nginx,haproxy,ringway-epoll
