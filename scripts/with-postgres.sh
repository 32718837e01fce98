#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL on 127.0.0.1 (Debian's packages), exporting
# OPTFLOW_TEST_POSTGRES_URL for it. Installs the server when it is missing and we may (root).
# Without PostgreSQL and outside CI the command still runs: its PostgreSQL tests skip.
set -euo pipefail

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

if [ -z "$(pg_bin)" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL from Debian's packages..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
        || echo "could not install PostgreSQL" >&2
fi

PGBIN=$(pg_bin || true)
if [ -z "$PGBIN" ]; then
    if [ -n "${CI:-}" ]; then echo "CI needs PostgreSQL but it could not be installed" >&2; exit 1; fi
    echo "no PostgreSQL here: its tests will skip" >&2
    exec "$@"
fi

PGPORT=${PGPORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
PGDATA=$(mktemp -d -t optflow-pg.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = "0" ]; then
    chown postgres:postgres "$PGDATA"
    RUN_AS=(su postgres -s /bin/sh -c)
else
    RUN_AS=(sh -c)
fi
"${RUN_AS[@]}" "$PGBIN/initdb -D $PGDATA -U postgres --auth=trust -E UTF8 --no-locale -N" >/dev/null
"${RUN_AS[@]}" "$PGBIN/pg_ctl -D $PGDATA -l $PGDATA/server.log -w -t 60 start -o '-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200'" >/dev/null
cleanup() {
    "${RUN_AS[@]}" "$PGBIN/pg_ctl -D $PGDATA -m fast -w stop" >/dev/null 2>&1 || true
    rm -rf "$PGDATA"
}
trap cleanup EXIT
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres optflow_test
export OPTFLOW_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/optflow_test"
echo "PostgreSQL ready at 127.0.0.1:$PGPORT" >&2
"$@"
