#!/usr/bin/env bash
# A throw-away PostgreSQL server for the `postgres` tests: 127.0.0.1 only, trust auth, its own folder.
#   bash scripts/pg-test-server.sh start DIR   # prints the SQLAlchemy URL of database autoprompt_test
#   bash scripts/pg-test-server.sh stop DIR
set -euo pipefail
action=${1:?start or stop}
dir=${2:?a folder for the server}
port=${PG_TEST_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] && [ "$action" = start ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql > /dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
[ -n "$bin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_owner() {  # the server refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres > /dev/null
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/data" start > /dev/null
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres autoprompt_test
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/autoprompt_test"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop > /dev/null || true
    rm -rf "$dir"
    ;;
esac
