#!/usr/bin/env bash
# SQLsmith against BareCount: a throwaway cluster with the installed extension and the demo
# data, SQLsmith (Debian `sqlsmith`) generating random queries — over every table, view and
# function it can see — as a login role holding barecount_engineer and barecount_publisher
# (the real roles, never a superuser). Fails on any backend crash, and on any XX000 (internal
# error) raised while running a statement that calls a BareCount function.
#   scripts/fuzz.sh [QUERIES] [SEED]      (default 20000 queries, seed 1)
# The extension must be installed (cargo pgrx install); `make test` runs a short round.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
queries="${1:-20000}"
seed="${2:-1}"

if ! command -v sqlsmith >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    say "installing sqlsmith (Debian)"
    $SUDO apt-get install -y -qq --no-install-recommends sqlsmith >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends sqlsmith >/dev/null; }
fi

trap '"$ROOT/scripts/cluster.sh" stop fuzz' EXIT
"$ROOT/scripts/cluster.sh" stop fuzz
rm -rf "$BC_STATE/fuzz"
port="$("$ROOT/scripts/cluster.sh" start fuzz)"
admin="$("$ROOT/scripts/cluster.sh" url fuzz postgres)"
log="$BC_STATE/fuzz/postgres.log"
# every error in the log with its SQLSTATE and the statement that raised it
psql -X -q -v ON_ERROR_STOP=1 "$admin" <<'SQL' >/dev/null
ALTER SYSTEM SET log_line_prefix = '%m [%p] [%e] ';
ALTER SYSTEM SET log_min_error_statement = 'error';
ALTER SYSTEM SET log_error_verbosity = 'default';
SELECT pg_reload_conf();
CREATE DATABASE fuzz;
SQL
db="$("$ROOT/scripts/cluster.sh" url fuzz fuzz)"
P=(psql -X -q -v ON_ERROR_STOP=1 "$db")
"${P[@]}" -c "CREATE EXTENSION barecount" >/dev/null
"${P[@]}" -v contract="$(cat contracts/orders.yaml)" <<<"SELECT barecount.contract_register(:'contract');" >/dev/null
"${P[@]}" -f sql/demo/01_sample_orders.sql >/dev/null
"${P[@]}" -f sql/demo/02_gdp_kpi_publish.sql >/dev/null
"${P[@]}" >/dev/null <<'SQL'
SELECT barecount.calendar_create('nrf', '{"kind": "retail_454", "end_month": 1, "weekday": "sat", "year_end": "nearest", "year_label": "start"}');
SELECT barecount.kpi_define('sales', '{"source": "gdp.orders", "time": "order_date", "grain": "month", "dimensions": ["region"], "measures": {"net": "sum(amount)", "orders": "count(*)"}}');
SELECT * FROM barecount.kpi_materialize('sales', '2023-01-01', '2024-12-31');
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bc_fuzzer') THEN CREATE ROLE bc_fuzzer LOGIN; END IF;
END $$;
GRANT barecount_engineer, barecount_publisher TO bc_fuzzer;
ALTER ROLE bc_fuzzer SET statement_timeout = '2s';
SELECT barecount.tenant_add_member('default', 'bc_fuzzer');
SQL
start_line=$(($(wc -l <"$log") + 1))
say "SQLsmith: $queries queries as bc_fuzzer (engineer, publisher), seed $seed"
t0=$SECONDS
out="$BC_STATE/fuzz/sqlsmith.out"
sqlsmith --target="host=127.0.0.1 port=$port dbname=fuzz user=bc_fuzzer" \
    --max-queries="$queries" --seed="$seed" --verbose >"$out" 2>&1 \
    || { tail -n 20 "$out" >&2; die "sqlsmith stopped early (see $out)"; }
elapsed=$((SECONDS - t0))
tail -n +"$start_line" "$log" >"$BC_STATE/fuzz/run.log"
python3 - "$BC_STATE/fuzz/run.log" "$queries" "$elapsed" <<'PY'
import re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
crashes = [l for l in lines if "terminated by signal" in l or "was terminated by" in l
           or "PANIC:" in l or "server process" in l and "exited with exit code" in l]
internal, errors = [], 0
for i, l in enumerate(lines):
    m = re.search(r"\[(\w{5})\] (ERROR|FATAL):", l)
    if not m:
        continue
    errors += 1
    if m.group(1) != "XX000":
        continue
    stmt = ""
    for nxt in lines[i + 1:i + 6]:
        if "STATEMENT:" in nxt:
            stmt = nxt.split("STATEMENT:", 1)[1].strip()
            break
    if "barecount." in stmt or "barecount" in l:
        internal.append((l, stmt[:300]))
print(f"fuzz: {sys.argv[2]} queries in {sys.argv[3]} s, {errors} statements refused with an error, "
      f"{len(internal)} internal errors (XX000) from BareCount functions, {len(crashes)} crash lines")
for l, s in internal[:20]:
    print("  XX000:", l, "\n    statement:", s)
for l in crashes[:20]:
    print("  crash:", l)
sys.exit(1 if internal or crashes else 0)
PY
