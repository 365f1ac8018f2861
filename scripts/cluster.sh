#!/usr/bin/env bash
# A throwaway Postgres 15 cluster, owned by user postgres, on a free loopback port.
#   cluster.sh start NAME   -> initdb (once) and start; prints the port
#   cluster.sh stop NAME    -> fast shutdown (no error when not running)
#   cluster.sh url NAME DB  -> the connection URL
# pg_cron is preloaded; its jobs live in database $BC_CRON_DB (default postgres).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd="${1:-}"; name="${2:-}"
[ -n "$cmd" ] && [ -n "$name" ] || die "usage: cluster.sh start|stop|url NAME [DB]"
dir="$BC_STATE/$name"
data="$dir/data"

case "$cmd" in
start)
    mkdir -p "$dir"
    chown postgres:postgres "$dir" 2>/dev/null || true
    if [ ! -s "$data/PG_VERSION" ]; then
        run_as_postgres "$PG_BIN/initdb" -D "$data" --auth=trust --username=postgres \
            --locale=C.UTF-8 --encoding=UTF8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    fi
    if run_as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        cat "$dir/port"
        exit 0
    fi
    port="$(free_port)"
    echo "$port" >"$dir/port"
    # -w waits until the server accepts connections: readiness, not a sleep.
    # RUST_BACKTRACE=1 as a careless deployment might set it: no backtrace may reach a client.
    run_as_postgres env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off \
            -c shared_preload_libraries=pg_cron -c cron.database_name=${BC_CRON_DB:-postgres} \
            -c cron.use_background_workers=on -c cron.max_running_jobs=4 -c max_worker_processes=16" >/dev/null \
        || { tail -n 30 "$dir/postgres.log" >&2; die "postgres did not start"; }
    echo "$port"
    ;;
stop)
    if [ -s "$data/PG_VERSION" ]; then
        run_as_postgres "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
url)
    db="${3:-postgres}"
    echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/$db"
    ;;
*)
    die "unknown command $cmd"
    ;;
esac
