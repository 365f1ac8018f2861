#!/usr/bin/env bash
# The README's pipeline walkthrough, runnable: a retail pipeline (file connector -> contract ->
# model -> KPI on the NRF calendar -> publish), scheduled through pg_cron, a backfill of FY2024
# P01-P06, its history, a transient failure retried, and a backend killed with SIGKILL in the
# middle of a run (nothing of the run is kept; the rerun completes). Every check that fails
# stops the script. Uses the installed extension; its own cluster, stopped at the end.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

trap '"$ROOT/scripts/cluster.sh" stop walk' EXIT
"$ROOT/scripts/cluster.sh" stop walk
rm -rf "$BC_STATE/walk"
BC_CRON_DB=barecount "$ROOT/scripts/cluster.sh" start walk >/dev/null
SU_URL="$("$ROOT/scripts/cluster.sh" url walk barecount)"
ENG_URL="${SU_URL/postgres@/walk_eng@}"
FEEDS="$BC_STATE/walk/feeds"
mkdir -p "$FEEDS"
chown postgres:postgres "$FEEDS" 2>/dev/null || true

su_sql() { psql -X -q -v ON_ERROR_STOP=1 "$SU_URL" "$@"; }
eng() { psql -X -v ON_ERROR_STOP=1 "$ENG_URL" "$@"; }
eng_value() { psql -X -q -At -v ON_ERROR_STOP=1 "$ENG_URL" -c "$1"; }
expect() { # expect WHAT ACTUAL WANTED
    [ "$2" = "$3" ] || die "walkthrough: $1: got '$2', expected '$3'"
    printf '    ok: %s = %s\n' "$1" "$2"
}

# KPI rows that a plain GROUP BY of the model does not give, or the other way round
kpi_diff() {
    eng_value "SELECT count(*) FROM (
        SELECT barecount.fiscal_period(order_date, 'nrf') AS period, region, sum(amount) AS net, count(*) AS orders
          FROM gdp.orders_clean GROUP BY 1, 2
        EXCEPT SELECT period, region, net, orders FROM kpi.sales) d"
}
# batches / raw rows / KPI orders / last receipt
state() {
    eng_value "SELECT (SELECT count(*) FROM barecount.batches) || '/' || (SELECT count(*) FROM raw.orders) || '/' ||
                      (SELECT sum(orders) FROM kpi.sales) || '/' || (SELECT max(seq) FROM barecount.ledger)"
}

# the model of the walkthrough, with an optional WHERE clause (a flaky or a slow function)
define_model() {
    eng -q -c "SELECT barecount.model_define('orders_clean', \$m\$
  SELECT payload->>'order_id' AS order_id, (payload->>'order_date')::date AS order_date,
         payload->>'region' AS region, (payload->>'amount')::numeric AS amount
    FROM raw.orders__accepted $1 \$m\$) AS model_version"
}

say "a database with BareCount and pg_cron; an engineer of tenant 'default'; a feeds directory"
psql -X -q -v ON_ERROR_STOP=1 "$("$ROOT/scripts/cluster.sh" url walk postgres)" -c "CREATE DATABASE barecount"
su_sql <<SQL
CREATE EXTENSION barecount;
CREATE EXTENSION pg_cron;
GRANT USAGE ON SCHEMA cron TO barecount_engineer, barecount_owner;
CREATE ROLE walk_eng LOGIN IN ROLE barecount_engineer, barecount_publisher;
SELECT barecount.tenant_add_member('default', 'walk_eng');
CREATE SCHEMA staging AUTHORIZATION walk_eng;
-- the one directory file connectors may read (only a superuser sets it)
ALTER DATABASE barecount SET barecount.load_directory = '$FEEDS';
SQL

# today's feed: 2,400 orders over FY2024 P01-P06 (2024-02-04 .. 2024-08-03), 12 of them invalid
feed() { # feed FIRST_ID COUNT FIRST_DAY DAYS
    su_sql -c "COPY (SELECT 'W' || g AS order_id, DATE '$3' + g % $4 AS order_date, 'S' || g % 7 AS store_id,
                            CASE WHEN g % 200 = 0 THEN 'mars' ELSE (ARRAY['east','west','north','south'])[1 + g % 4] END AS region,
                            (g % 97 + 0.5)::numeric(12,2) AS amount, 1 + g % 3 AS quantity
                       FROM generate_series($1, $1 + $2 - 1) g)
               TO '$FEEDS/current.csv' WITH (FORMAT csv, HEADER)"
}
feed 1 2400 2024-02-04 182

say "1. contract, calendar, model, KPI on the NRF calendar, and the pipeline (as the engineer)"
eng -q -v contract="$(cat contracts/orders.yaml)" <<'SQL'
SELECT barecount.contract_register(:'contract') IS NOT NULL AS contract_registered;
SELECT barecount.calendar_create('nrf', '{"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}');
SQL
define_model ""
eng -q <<'SQL'
SELECT * FROM barecount.model_run('orders_clean');
SELECT barecount.kpi_define('sales', '{"source": "gdp.orders_clean", "time": "order_date",
  "grain": "period", "calendar": "nrf", "dimensions": ["region"],
  "measures": {"net": "sum(amount)", "orders": "count(*)"}}');
SELECT barecount.pipeline_define('retail', '{
  "calendar": "nrf", "grain": "period",
  "retry": {"attempts": 3, "backoff_ms": 50, "max_backoff_ms": 1000},
  "steps": [
    {"name": "load",  "kind": "ingest",  "dataset": "orders",
     "source": {"file": "current.csv", "format": "csv"},
     "quarantine": {"max_share": 0.05, "on_breach": "fail"}},
    {"name": "clean", "kind": "model",   "model": "orders_clean", "after": ["load"]},
    {"name": "sales", "kind": "kpi",     "kpi": "sales",          "after": ["clean"]},
    {"name": "pub",   "kind": "publish", "dataset": "sales_by_period", "source": "kpi.sales", "after": ["sales"]},
    {"name": "tell",  "kind": "hook",    "event": "sales_ready",  "after": ["pub"]}]}') AS pipeline_version;
SQL

say "2. schedule it: the first working day after each NRF period closes, 06:00"
eng -c "SELECT barecount.pipeline_schedule('retail', '0 6 * * *', calendar_aware => true)" \
    -c "SELECT jobname, schedule, command FROM cron.job"
expect "pg_cron jobs" "$(eng_value "SELECT count(*) FROM cron.job WHERE jobname LIKE '%retail%'")" 1

say "3. backfill FY2024 P01-P06, once"
eng -c "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P06', 'backfill-2024-h1')"
eng -c "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P06', 'backfill-2024-h1')"
expect "runs after the same key twice" "$(eng_value "SELECT count(*) FROM barecount.pipeline_runs")" 1
expect "periods materialized" "$(eng_value "SELECT string_agg(DISTINCT period, ',' ORDER BY period) FROM kpi.sales")" \
    "FY2024-P01,FY2024-P02,FY2024-P03,FY2024-P04,FY2024-P05,FY2024-P06"
expect "KPI = GROUP BY" "$(kpi_diff)" 0
expect "rows quarantined" "$(eng_value "SELECT count(*) FROM barecount.quarantine")" 12
eng -c "SELECT period, region, net, orders FROM kpi.sales WHERE region = 'east' ORDER BY period"

say "4. history: runs (keyset-paged) and each step with its attempts, rows and receipts"
eng -c "SELECT run_id, status, period_from, period_to, started_by FROM barecount.pipeline_runs_page('retail')" \
    -c "SELECT step, status, attempts, rows_in, rows_out, receipts FROM barecount.pipeline_run_steps ORDER BY run_id, started_at"
expect "ledger verifies" "$(eng_value "SELECT ok FROM barecount.ledger_verify()")" t

say "5. a transient failure: the model fails twice with a serialization failure, the step retries"
eng -q <<'SQL'
CREATE SEQUENCE staging.flaky_calls;
CREATE FUNCTION staging.flaky() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  IF nextval('staging.flaky_calls') <= 2 THEN
    RAISE EXCEPTION 'simulated serialization failure' USING ERRCODE = '40001';
  END IF;
  RETURN true;
END $f$;
SQL
define_model "WHERE staging.flaky()"
feed 5001 40 2024-07-01 7   # late rows for P06 arrive in today's feed
eng -c "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P06', 'FY2024-P06', 'p06-late')"
eng -c "SELECT s.step, s.status, s.attempts, s.attempt_errors FROM barecount.pipeline_run_steps s
          JOIN barecount.pipeline_runs r USING (run_id) WHERE r.idempotency_key = 'p06-late' AND s.step = 'clean'"
expect "attempts of the model step" "$(eng_value "SELECT s.attempts FROM barecount.pipeline_run_steps s JOIN barecount.pipeline_runs r USING (run_id)
    WHERE r.idempotency_key = 'p06-late' AND s.step = 'clean'")" 3
expect "the late rows counted in P06" "$(eng_value "SELECT sum(orders) FROM kpi.sales WHERE period = 'FY2024-P06'")" \
    "$(eng_value "SELECT count(*) FROM gdp.orders_clean WHERE barecount.fiscal_period(order_date, 'nrf') = 'FY2024-P06'")"

say "6. a backend killed (SIGKILL) in the middle of a run: nothing of the run is kept, the rerun completes"
eng -q <<'SQL'
CREATE FUNCTION staging.slow() RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(600) IS NOT NULL';
SQL
define_model "WHERE staging.slow()"
feed 6001 30 2024-06-02 7
before="$(state)"
psql -X -q "$ENG_URL" -c "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P05', 'FY2024-P05', 'p05-late')" \
    >"$BC_STATE/walk/killed.out" 2>&1 &
client=$!
pid=""
for _ in $(seq 1 600); do   # the run lands the feed, then sleeps in the model step
    pid="$(psql -X -q -At "$SU_URL" -c "SELECT pid FROM pg_stat_activity WHERE usename = 'walk_eng' AND wait_event = 'PgSleep'")"
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || die "walkthrough: the run never reached its model step"
printf '    kill -9 %s (the backend running the pipeline)\n' "$pid"
run_as_postgres kill -9 "$pid"
wait "$client" || true
for _ in $(seq 1 600); do   # Postgres restarts every backend after one dies
    psql -X -q -At "$SU_URL" -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done
expect "batches/raw rows/KPI orders/last receipt after the kill" "$(state)" "$before"
expect "runs recorded for the killed key" "$(eng_value "SELECT count(*) FROM barecount.pipeline_runs WHERE idempotency_key = 'p05-late'")" 0
define_model ""
eng -c "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P05', 'FY2024-P05', 'p05-late')"
expect "the rerun" "$(eng_value "SELECT status FROM barecount.pipeline_runs WHERE idempotency_key = 'p05-late'")" succeeded
expect "KPI = GROUP BY after the rerun" "$(kpi_diff)" 0
expect "ledger verifies" "$(eng_value "SELECT ok FROM barecount.ledger_verify()")" t
eng -c "SELECT kind, subject FROM barecount.events ORDER BY event_id DESC LIMIT 6"
say "walkthrough complete"
