#!/usr/bin/env bash
# The whole test suite: lint, types, unit/service/integration/end-to-end tests on SQLite and a
# throwaway PostgreSQL, then schemathesis against the live server's OpenAPI document.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export PATH="$BIN:$PATH"

if ! command -v chromium >/dev/null && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "could not install chromium" >&2
fi

echo "== ruff"; "$BIN/ruff" check src tests bench
echo "== mypy"; "$BIN/mypy"
echo "== import contracts"; "$BIN/lint-imports" --no-cache
if [ -x scripts/schemathesis.sh ]; then
    echo "== schemathesis"; scripts/schemathesis.sh
fi
echo "== pytest"
scripts/with-postgres.sh "$BIN/python" -m pytest -q -n 2 --dist loadfile -p no:cacheprovider "$@"
