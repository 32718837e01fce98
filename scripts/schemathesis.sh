#!/usr/bin/env bash
# Fuzz the REST API against its own OpenAPI document: start `optflow serve` on a free port with a
# fresh SQLite database and an admin token made through the CLI, run schemathesis with every
# check, stop the server. Exits non-zero when schemathesis finds a problem (or cannot run).
#
# Uses `optflow`, `python` and `schemathesis` from PATH (scripts/test.sh puts the venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

WORK=$(mktemp -d -t optflow-schemathesis.XXXXXX)
SERVER_PID=""
cleanup() {
    # The server leads its own process group (setsid below): stop it and its workers together.
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

export DATABASE_URL="sqlite:///$WORK/schemathesis.db"
export OPTFLOW_FLOWS_DIR="$REPO/flows"
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"

optflow init >/dev/null
TOKEN=$(optflow agents add schemathesis --role admin | sed -n 's/^API token (shown once): //p')
if [ -z "$TOKEN" ]; then
    echo "could not create an admin token" >&2
    exit 2
fi
# Contact 1, with a number and an email: scripts/schemathesis.toml points the fuzzer at it.
optflow contacts add --name "Fuzz Target" --phone "+14155552671" --email "fuzz@example.com" >/dev/null
# Org 2, a sub-org of the token's org: the sub-org routes' `org_id` (scripts/schemathesis.toml).
optflow orgs add "Fuzz Branch" --parent 1 >/dev/null

setsid optflow serve --host 127.0.0.1 --port "$PORT" --workers 1 --no-scheduler >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ready=""
for _ in $(seq 1 300); do
    if python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/healthz" \
            2>/dev/null; then
        ready=1
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "optflow serve did not answer /healthz:" >&2; cat "$WORK/server.log" >&2; exit 2
fi

status=0
# The same requests every run: a fixed seed, Hypothesis derandomized (also in the stateful phase),
# which also keeps no example database between runs; one worker, so the order is fixed.
timeout 300 schemathesis --config-file scripts/schemathesis.toml \
    run "$BASE/docs/openapi.json" --checks all --max-examples 20 --seed 1 --workers 1 \
    --generation-deterministic \
    -H "Authorization: Bearer $TOKEN" || status=$?

# A 500 is already a schemathesis failure; this also catches one whose response never arrived.
if grep -q "unexpected error on" "$WORK/server.log"; then
    echo "the server hit unexpected errors while being fuzzed:" >&2
    grep -A20 "unexpected error on" "$WORK/server.log" >&2
    [ "$status" -ne 0 ] || status=1
fi
exit "$status"
