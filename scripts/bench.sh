#!/usr/bin/env bash
# Runs the side-by-side benchmarks (release build) against a throwaway cluster.
#   scripts/bench.sh read   [--rows 1000000 --iterations 5]
#   scripts/bench.sh ingest [--rows 1000000 --batch 10000]
#   scripts/bench.sh ledger [--seconds 5]
#   scripts/bench.sh validate [--rows 1000000]
#   scripts/bench.sh rls [--rows 3000000 --runs 5]
#   scripts/bench.sh ingest-invalid [--rows 40000 --rows 100000 --runs 3]
#   scripts/bench.sh kpi [--rows 5000000 --runs 5]
#   scripts/bench.sh fiscal [--rows 10000000 --runs 5]
#   scripts/bench.sh pipeline [--steps 20 --runs 5]
#   scripts/bench.sh read10m [--rows 10000000 --runs 5 [--cold-only]]   (Python ADBC clients, ROAPI from PyPI)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" >/dev/null
step "install extension" install_extension --release
trap '"$ROOT/scripts/cluster.sh" stop bench' EXIT
"$ROOT/scripts/cluster.sh" stop bench
rm -rf "$BC_STATE/bench"
"$ROOT/scripts/cluster.sh" start bench >/dev/null
psql -X -q "$("$ROOT/scripts/cluster.sh" url bench postgres)" -c "CREATE DATABASE bench" >/dev/null
url="$("$ROOT/scripts/cluster.sh" url bench bench)"
psql -X -q "$url" -c "CREATE EXTENSION barecount" >/dev/null
bench="${1:?which benchmark: read, read10m, ingest, ingest-invalid, ledger, validate, rls, kpi, fiscal, pipeline, deliver, breach-latency, forecast or web}"; shift
if [ "$bench" = read10m ]; then
    step "build barecount-flight (release)" cargo build --quiet --release -p barecount-flight
    ROAPI_VENV="${BARECOUNT_ROAPI_VENV:-$HOME/.cache/barecount/roapi-venv}"
    if ! "$ROAPI_VENV/bin/roapi" --version 2>/dev/null | grep -q "0.12.7"; then
        say "installing roapi 0.12.7 into $ROAPI_VENV"
        python3 -m venv "$ROAPI_VENV"
        "$ROAPI_VENV/bin/pip" install --quiet "roapi==0.12.7"
    fi
    PY="${BARECOUNT_PY_VENV:-$HOME/.cache/barecount/py-venv}/bin/python"
    "$PY" "$ROOT/bench/python/read_10m.py" --pg-url "$url" \
        --flight-bin "$CARGO_TARGET_DIR/release/barecount-flight" --roapi-bin "$ROAPI_VENV/bin/roapi" "$@"
    exit
fi
step "build barecount-bench (release)" cargo build --quiet --release -p barecount-bench
if [ "$bench" = forecast ]; then
    # the baseline, statsforecast's AutoETS, from PyPI in a venv of its own
    STATS_VENV="${BARECOUNT_STATS_VENV:-$HOME/.cache/barecount/stats-venv}"
    if ! "$STATS_VENV/bin/python" -c "import statsforecast, statsmodels" 2>/dev/null; then
        say "installing statsforecast 2.1.1 and statsmodels 0.15.0 into $STATS_VENV"
        python3 -m venv "$STATS_VENV"
        "$STATS_VENV/bin/pip" install --quiet "statsforecast==2.1.1" "statsmodels==0.15.0" scipy
    fi
    "$CARGO_TARGET_DIR/release/barecount-bench" forecast --python "$STATS_VENV/bin/python" "$@"
    exit
fi
"$CARGO_TARGET_DIR/release/barecount-bench" "$bench" --pg-url "$url" "$@"
