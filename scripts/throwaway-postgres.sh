#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the tests: initdb in a temporary directory, as a non-root user, on a free
# loopback port, trust authentication (loopback only), fsync off. Prints lines for the caller to eval:
#   export SCOPEGATE_TEST_POSTGRES_URL=postgres://scopegate@127.0.0.1:PORT/postgres
#   export SCOPEGATE_TEST_POSTGRES_STOP='...'   (the command that stops the cluster and removes its files)
#   export SCOPEGATE_TEST_POSTGRES_DOWN='...'   (stops the server, keeping its files: a database outage)
#   export SCOPEGATE_TEST_POSTGRES_UP='...'     (starts it again on the same port)
# Usage: eval "$(scripts/throwaway-postgres.sh)"; trap 'eval "$SCOPEGATE_TEST_POSTGRES_STOP"' EXIT
set -euo pipefail

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$bin" ] && command -v pg_ctl >/dev/null 2>&1; then
  bin="$(dirname "$(command -v pg_ctl)")"
fi
if [ -z "$bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL (apt-get install postgresql)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  else
    echo "PostgreSQL is not installed (no initdb/pg_ctl) and cannot be installed here" >&2
    exit 1
  fi
fi

dir="$(mktemp -d /tmp/scopegate-pg.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# initdb refuses to run as root: run the cluster as an unprivileged user.
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown nobody "$dir"
  as_user=(runuser -u nobody --)
fi
"${as_user[@]}" "$bin/initdb" -D "$dir/data" -U scopegate --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; exit 1; }
options="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
"${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$options" start >&2 ||
  { cat "$dir/server.log" >&2; exit 1; }

stop="${as_user[*]} $bin/pg_ctl -D $dir/data -m immediate -w stop >/dev/null 2>&1; rm -rf $dir"
printf 'export SCOPEGATE_TEST_POSTGRES_URL=%q\n' "postgres://scopegate@127.0.0.1:$port/postgres"
printf 'export SCOPEGATE_TEST_POSTGRES_STOP=%q\n' "$stop"
printf 'export SCOPEGATE_TEST_POSTGRES_DOWN=%q\n' "${as_user[*]} $bin/pg_ctl -D $dir/data -m fast -w stop >/dev/null"
printf 'export SCOPEGATE_TEST_POSTGRES_UP=%q\n' \
  "${as_user[*]} $bin/pg_ctl -D $dir/data -l $dir/server.log -w -t 30 -o '$options' start >/dev/null"
