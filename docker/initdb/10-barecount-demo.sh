#!/usr/bin/env bash
# Runs once when the container's cluster is created: the same steps as scripts/demo.sh.
set -euo pipefail
psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB")
"${psql[@]}" -c "CREATE EXTENSION barecount"
"${psql[@]}" -v contract="$(cat /demo/contracts/orders.yaml)" <<<"SELECT * FROM barecount.contract_register(:'contract');"
"${psql[@]}" -f /demo/sql/demo/01_sample_orders.sql
"${psql[@]}" -f /demo/sql/demo/02_gdp_kpi_publish.sql
# barecount-flight connects as a gateway role: barecount_admin with BYPASSRLS, not a superuser
"${psql[@]}" -c "CREATE ROLE barecount_gateway LOGIN PASSWORD 'gateway' BYPASSRLS" \
             -c "GRANT barecount_admin TO barecount_gateway"
