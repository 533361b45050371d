#!/usr/bin/env bash
# Runs schemathesis against a live ringway inside a network namespace of its
# own (run under `unshare --net`): generated routes name random hosts, and in
# here no name resolves and nothing leaves loopback. Usage:
#   unshare --net tests/openapi/run.sh RINGWAY_BIN CONFIG ADMIN_PORT TOKEN [st options]
set -uo pipefail
bin=$1 config=$2 port=$3 token=$4
shift 4
dir=$(cd "$(dirname "$0")" && pwd)
ip link set lo up
"$bin" run --config "$config" --reset-state &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
ready=
for _ in $(seq 100); do
  if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then ready=1; break; fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || { echo "ringway did not start"; exit 2; }
cd "$dir"
timeout 300 st run "http://127.0.0.1:$port/api/v1/openapi.json" \
  -H "Authorization: Bearer $token" --checks all --workers 1 --no-color "$@"
status=$?
# ringway must still be up and answering after all of it.
curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/info" || { echo "ringway stopped answering"; status=3; }
exit $status
