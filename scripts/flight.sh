#!/usr/bin/env bash
# Start or stop a barecount-flight server for a cluster.
#   flight.sh start NAME DATABASE_URL  -> starts on an ephemeral port; prints it once ready
#                                         (the web app's port is in $BC_STATE/NAME/web.port)
#   flight.sh stop NAME
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd="${1:-}"; name="${2:-}"
dir="$BC_STATE/$name"
bin="$CARGO_TARGET_DIR/debug/barecount-flight"

case "$cmd" in
start)
    url="${3:?database url}"
    mkdir -p "$dir"
    rm -f "$dir/flight.port" "$dir/web.port"
    [ -x "$bin" ] || die "$bin is missing; build it with cargo build -p barecount-flight"
    "$bin" serve --listen 127.0.0.1:0 --database-url "$url" --port-file "$dir/flight.port" \
        --cache-dir "$dir/flight-cache" --export-dir "$dir/exports" \
        --web-listen 127.0.0.1:0 --web-port-file "$dir/web.port" \
        >"$dir/flight.log" 2>&1 &
    echo $! >"$dir/flight.pid"
    # Readiness: the server writes its port file after binding the socket.
    for _ in $(seq 1 600); do
        if [ -s "$dir/flight.port" ]; then cat "$dir/flight.port"; exit 0; fi
        kill -0 "$(cat "$dir/flight.pid")" 2>/dev/null || { cat "$dir/flight.log" >&2; die "barecount-flight exited"; }
        sleep 0.1
    done
    die "barecount-flight did not become ready in 60s"
    ;;
stop)
    if [ -s "$dir/flight.pid" ]; then
        pid="$(cat "$dir/flight.pid")"
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/flight.pid"
    fi
    ;;
*)
    die "usage: flight.sh start|stop NAME [DATABASE_URL]"
    ;;
esac
