#!/usr/bin/env bash
# The end-to-end tests alone, against the installed extension: a throwaway Postgres cluster, a
# standalone barecount-flight, then `cargo test -p barecount-tests [ARGS]`. `make test` runs it
# after set-up, lint, unit and pgrx tests; run it directly to iterate on one test:
#   scripts/e2e.sh --test flight_sql
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

step "build barecount-flight" cargo build --quiet -p barecount-flight --bin barecount-flight
step "build end-to-end tests" cargo test --quiet -p barecount-tests --no-run

cleanup() {
    "$ROOT/scripts/flight.sh" stop test || true
    "$ROOT/scripts/cluster.sh" stop test || true
}
trap cleanup EXIT

"$ROOT/scripts/cluster.sh" stop test
rm -rf "$BC_STATE/test"
port="$("$ROOT/scripts/cluster.sh" start test)"
say "test cluster on 127.0.0.1:$port"
psql -X -q -v ON_ERROR_STOP=1 "$("$ROOT/scripts/cluster.sh" url test postgres)" \
    -c "CREATE DATABASE barecount_test" >/dev/null
export BARECOUNT_TEST_PG_URL="$("$ROOT/scripts/cluster.sh" url test barecount_test)"
psql -X -q -v ON_ERROR_STOP=1 "$BARECOUNT_TEST_PG_URL" -c "CREATE EXTENSION barecount" >/dev/null
fport="$("$ROOT/scripts/flight.sh" start test "$BARECOUNT_TEST_PG_URL")"
export BARECOUNT_FLIGHT_URL="http://127.0.0.1:$fport"
export BARECOUNT_FLIGHT_BIN="$CARGO_TARGET_DIR/debug/barecount-flight"
export BARECOUNT_DBT="${BARECOUNT_DBT_VENV:-$HOME/.cache/barecount/dbt-venv}/bin/dbt"
export BARECOUNT_DBT_PROJECT="$ROOT/sql/dbt"
export BARECOUNT_PYTHON="${BARECOUNT_PY_VENV:-$HOME/.cache/barecount/py-venv}/bin/python"
say "barecount-flight on $BARECOUNT_FLIGHT_URL"

step "end-to-end tests" cargo test --quiet -p barecount-tests "$@"
