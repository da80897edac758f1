#!/usr/bin/env bash
# A private PostgreSQL cluster for the fault tests (outbox-faults), so they can crash a server
# without touching the shared one: pg-private.sh init|start|crash|stop DIR PORT.
# `crash` is `pg_ctl stop -m immediate`: no shutdown checkpoint, as if the machine lost power.
set -euo pipefail
cmd="$1" dir="$2" port="$3"
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
bin="/usr/lib/postgresql/$version/bin"
# initdb and the server refuse to run as root: run them as the postgres user when we are root.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
  init)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
    ;;
  start)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
    ;;
  crash) as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null ;;
  stop) as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null ;;
  *) echo "usage: $0 init|start|crash|stop DIR PORT" >&2; exit 2 ;;
esac
