#!/usr/bin/env bash
# Schemathesis (PyPI, pinned) against a real vdesk-controller: it reads /api/openapi.json and
# sends generated requests to every operation, once with the admin token and once with a viewer
# link's token; it fails on any 5xx and on any response that does not match the document (status,
# content type, body schema). Bounded: few examples per operation, and `timeout` on each run.
# Installs its own venv under target/ on first use. Usage: scripts/schemathesis.sh [BIN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
bin_dir=${1:-$PWD/target/debug}
venv=$PWD/target/schemathesis-venv
st=$venv/bin/st
if ! "$st" --version 2>/dev/null | grep -q " $version\$"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
secret=schemathesis-secret-0123456789
admin=schemathesis-admin-0123456789
log=$(mktemp)
# No --vm: every VM is unknown, so a well-formed offer gets 404 vm_not_found rather than the
# designed 503 agent_offline (which the "no 5xx" check would count against us).
"$bin_dir/vdesk-controller" --listen "127.0.0.1:$port" --secret "$secret" \
  --admin-token "$admin" --session-rate-limit 0 --candidate-rate-limit 0 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { cat "$log" >&2; echo "controller did not start" >&2; exit 1; }
viewer=$("$bin_dir/vdesk-controller" mint-link --secret "$secret" --vm demo --ttl 1h --token-only)
[ -n "$viewer" ] || { echo "could not mint a viewer token" >&2; exit 1; }

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run() {
  local who=$1 token=$2
  echo "--- schemathesis as $who"
  # From target/, so its cache (.schemathesis/) stays out of the work tree.
  (cd target && timeout 120 "$st" run "$base/api/openapi.json" --url "$base" \
    -H "Authorization: Bearer $token" --checks "$checks" \
    --max-examples "${VDESK_SCHEMATHESIS_EXAMPLES:-15}" --seed 1 \
    --request-timeout 5 --no-color)
}
rc=0
run admin "$admin" || rc=$?
run viewer "$viewer" || rc=$?
if [ $rc -ne 0 ]; then
  echo "--- controller log" >&2
  tail -50 "$log" >&2
fi
exit $rc
