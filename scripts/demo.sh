#!/usr/bin/env bash
# The end-to-end demo: contract -> ingest (with quarantine) -> GDP -> KPI -> publish ->
# barecount-flight -> a Flight SQL client. Shuts everything down unless BARECOUNT_KEEP_RUNNING=1.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

step "set-up" "$ROOT/scripts/setup.sh"
step "build and install the extension" install_extension
step "build barecount-flight" cargo build --quiet -p barecount-flight --bin barecount-flight
FLIGHT_BIN="$CARGO_TARGET_DIR/debug/barecount-flight"

keep="${BARECOUNT_KEEP_RUNNING:-0}"
cleanup() {
    if [ "$keep" != 1 ]; then
        "$ROOT/scripts/flight.sh" stop demo || true
        "$ROOT/scripts/cluster.sh" stop demo || true
    fi
}
trap cleanup EXIT

# A fresh demo database every run.
"$ROOT/scripts/flight.sh" stop demo
"$ROOT/scripts/cluster.sh" stop demo
rm -rf "$BC_STATE/demo"
port="$("$ROOT/scripts/cluster.sh" start demo)"
admin_url="$("$ROOT/scripts/cluster.sh" url demo postgres)"
psql -X -q -v ON_ERROR_STOP=1 "$admin_url" -c "CREATE DATABASE barecount" >/dev/null
DB_URL="$("$ROOT/scripts/cluster.sh" url demo barecount)"
PSQL=(psql -X -v ON_ERROR_STOP=1 "$DB_URL")

say "Postgres 15 on 127.0.0.1:$port: CREATE EXTENSION barecount"
"${PSQL[@]}" -q -c "CREATE EXTENSION barecount" -c "SELECT barecount.version()"

say "register the sample contract (contracts/orders.yaml)"
# psql interpolates :'contract' only in scripts, not in -c
"${PSQL[@]}" -v contract="$(cat contracts/orders.yaml)" <<<"SELECT * FROM barecount.contract_register(:'contract');"

say "ingest the sample retail feed (deliberately invalid rows go to quarantine)"
"${PSQL[@]}" -q -f sql/demo/01_sample_orders.sql
"${PSQL[@]}" -c "SELECT q.row_no, q.payload->>'order_id' AS order_id, e->>'instance_path' AS path,
                        e->>'keyword' AS keyword, e->>'message' AS message
                   FROM barecount.quarantine q, jsonb_array_elements(q.errors) e
                  ORDER BY q.row_no, path"

say "build GDP and KPI tables, publish the KPI"
"${PSQL[@]}" -q -f sql/demo/02_gdp_kpi_publish.sql
"${PSQL[@]}" -c "SELECT seq, event_type, subject, left(entry_hash, 16) AS entry_hash,
                        left(prev_hash, 16) AS prev_hash FROM barecount.ledger ORDER BY seq"
say "verify the ledger; lineage downstream of the first batch"
"${PSQL[@]}" -c "SELECT ok, checked, last_seq, first_broken_seq FROM barecount.ledger_verify()"
"${PSQL[@]}" -c "SELECT depth, object, via_event FROM barecount.lineage_downstream('batch:1') ORDER BY depth, object"

# barecount-flight connects as a gateway role: barecount_admin with BYPASSRLS, not a superuser
"${PSQL[@]}" -q >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'barecount_gateway') THEN
    CREATE ROLE barecount_gateway LOGIN NOSUPERUSER BYPASSRLS;
  END IF;
END $$;
GRANT barecount_admin TO barecount_gateway;
SQL
fport="$("$ROOT/scripts/flight.sh" start demo "${DB_URL/postgres@/barecount_gateway@}")"
FLIGHT_URL="http://127.0.0.1:$fport"
say "barecount-flight on $FLIGHT_URL"
say "an API token for the default tenant (shown once; only its salted hash is stored)"
BARECOUNT_TOKEN="$("${PSQL[@]}" -At -c "SELECT token FROM barecount.token_create('default', ARRAY['read','export'], now() + interval '30 days', 'demo')")"
export BARECOUNT_TOKEN
echo "$BARECOUNT_TOKEN" >"$BC_STATE/demo/token"

say "Flight: list published datasets with their ledger receipts"
"$FLIGHT_BIN" list --url "$FLIGHT_URL"
say "Flight SQL: net sales by region and year"
"$FLIGHT_BIN" query --url "$FLIGHT_URL" \
    "SELECT region, date_part('year', month) AS year, sum(orders) AS orders, sum(net_sales) AS net_sales
       FROM monthly_sales GROUP BY 1, 2 ORDER BY 1, 2"
say "Flight SQL: the first rows of monthly_sales, pinned to version 1"
"$FLIGHT_BIN" query --url "$FLIGHT_URL" "SELECT * FROM monthly_sales__v1 ORDER BY month, region LIMIT 5"
say "Flight export: monthly_sales as Parquet, with a ledger receipt"
"$FLIGHT_BIN" export --url "$FLIGHT_URL" --dataset monthly_sales --format parquet --name monthly_sales_demo

WEB_URL="http://127.0.0.1:$(cat "$BC_STATE/demo/web.port")"
say "web app on $WEB_URL: its JSON API lists the published datasets for the same token"
python3 - "$WEB_URL" "$BARECOUNT_TOKEN" <<'PY'
import json, sys, urllib.request
r = urllib.request.Request(sys.argv[1] + "/api/v1/catalog?kind=dataset", headers={"Authorization": "Bearer " + sys.argv[2]})
names = [i["name"] for i in json.load(urllib.request.urlopen(r, timeout=30))["items"]]
assert "monthly_sales" in names, names
print("  datasets:", ", ".join(names))
PY
echo
if [ "$keep" = 1 ]; then
    say "the stack keeps running (stop it with: make down)"
else
    say "demo done; shutting down (run 'make up' to keep the stack running)"
fi
cat <<TXT
  web app:           $WEB_URL/ (sign in with the API token below)
  psql:              psql "$DB_URL"
  API token:         export BARECOUNT_TOKEN=\$(cat $BC_STATE/demo/token)
  Flight SQL:        $FLIGHT_BIN query --url $FLIGHT_URL "SELECT * FROM monthly_sales"
  list datasets:     $FLIGHT_BIN list --url $FLIGHT_URL
  pyarrow / ADBC:    adbc_driver_flightsql.dbapi.connect("grpc://127.0.0.1:$fport",
                       db_kwargs={"adbc.flight.sql.authorization_header": "Bearer <token>"})
TXT
