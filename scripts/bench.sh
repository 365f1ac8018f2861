#!/usr/bin/env bash
# Runs the side-by-side benchmarks (release build) against a throwaway cluster.
#   scripts/bench.sh read   [--rows 1000000 --iterations 5]
#   scripts/bench.sh ingest [--rows 1000000 --batch 10000]
#   scripts/bench.sh ledger [--seconds 5]
#   scripts/bench.sh validate [--rows 1000000]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" >/dev/null
step "install extension" env -C pg_extension cargo pgrx install --release --pg-config "$PG_CONFIG"
step "build barecount-bench (release)" cargo build --quiet --release -p barecount-bench
trap '"$ROOT/scripts/cluster.sh" stop bench' EXIT
"$ROOT/scripts/cluster.sh" stop bench
rm -rf "$BC_STATE/bench"
"$ROOT/scripts/cluster.sh" start bench >/dev/null
psql -X -q "$("$ROOT/scripts/cluster.sh" url bench postgres)" -c "CREATE DATABASE bench" >/dev/null
url="$("$ROOT/scripts/cluster.sh" url bench bench)"
psql -X -q "$url" -c "CREATE EXTENSION barecount" >/dev/null
bench="${1:?which benchmark: read, ingest, ledger or validate}"; shift
"$CARGO_TARGET_DIR/release/barecount-bench" "$bench" --pg-url "$url" "$@"
