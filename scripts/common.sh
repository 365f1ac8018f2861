# Shared settings for BareCount's scripts. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
# Build output lives outside the clone so fresh clones on this machine reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/barecount/target}"
export PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
export PG_BIN="/usr/lib/postgresql/15/bin"
# State of local clusters and servers (data directories, logs, ports). Outside the checkout,
# because Postgres runs as user postgres, which may not be able to enter the checkout (a clone
# under /root, or in a mode-700 temporary directory); one directory per checkout.
export BC_STATE="${BARECOUNT_STATE_DIR:-/tmp/barecount-state/$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)}"
mkdir -p "$BC_STATE"
chmod 755 /tmp/barecount-state "$BC_STATE" 2>/dev/null || true
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: runs a command and reports how long it took.
step() {
    local name="$1"; shift
    local t0=$SECONDS
    say "$name"
    "$@"
    printf '    (%s: %ss)\n' "$name" "$((SECONDS - t0))"
}

# install_extension [--release]: cargo pgrx install (the current version's script and the update
# scripts sql/barecount--A--B.sql), then the released versions' own scripts
# (pg_extension/sql/upgrade/), so `CREATE EXTENSION barecount VERSION '0.1.0'` and the update
# path from it work here (tests/tests/upgrade.rs). Released scripts never change.
install_extension() {
    env -C "$ROOT/pg_extension" cargo pgrx install "$@" --pg-config "$PG_CONFIG"
    local dir; dir="$("$PG_CONFIG" --sharedir)/extension"
    local sudo=""; [ -w "$dir" ] || sudo="sudo"
    $sudo cp "$ROOT"/pg_extension/sql/upgrade/barecount--*.sql "$dir/"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

# run_as_postgres CMD...: Postgres refuses to run as root.
run_as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        sudo -u postgres -- "$@"
    else
        "$@"
    fi
}
