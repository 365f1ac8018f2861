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
# pg_cron keeps its jobs in barecount_test (the scheduling test runs there)
port="$(BC_CRON_DB=barecount_test "$ROOT/scripts/cluster.sh" start test)"
say "test cluster on 127.0.0.1:$port"
# TLS on the test cluster, with a CA of its own, so the Flight server's sslmode=verify-full is
# tested for real; plain connections keep working.
tls="$BC_STATE/test/tls"
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=BareCount test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/san.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 2 -extfile "$tls/san.ext" -out "$tls/server.pem" >/dev/null 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Some other CA" \
    -keyout "$tls/other.key" -out "$tls/other-ca.pem" >/dev/null 2>&1
chown postgres:postgres "$tls/server.key" "$tls/server.pem"
chmod 600 "$tls/server.key"
psql -X -q -v ON_ERROR_STOP=1 "$("$ROOT/scripts/cluster.sh" url test postgres)" >/dev/null <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$tls/server.pem';
ALTER SYSTEM SET ssl_key_file = '$tls/server.key';
SELECT pg_reload_conf();
SQL
export BARECOUNT_TEST_PG_CA="$tls/ca.pem" BARECOUNT_TEST_OTHER_CA="$tls/other-ca.pem"
psql -X -q -v ON_ERROR_STOP=1 "$("$ROOT/scripts/cluster.sh" url test postgres)" \
    -c "CREATE DATABASE barecount_test" >/dev/null
export BARECOUNT_TEST_PG_URL="$("$ROOT/scripts/cluster.sh" url test barecount_test)"
psql -X -q -v ON_ERROR_STOP=1 "$BARECOUNT_TEST_PG_URL" -c "CREATE EXTENSION barecount" \
    -c "CREATE EXTENSION pg_cron" -c "GRANT USAGE ON SCHEMA cron TO barecount_engineer, barecount_owner" >/dev/null
# barecount-flight connects as a gateway role, as a deployment should: a member of
# barecount_admin with BYPASSRLS, never a superuser (the harness does the same per test).
psql -X -q -v ON_ERROR_STOP=1 "$BARECOUNT_TEST_PG_URL" >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bc_gateway') THEN
    CREATE ROLE bc_gateway LOGIN NOSUPERUSER BYPASSRLS;
  END IF;
END $$;
GRANT barecount_admin TO bc_gateway;
-- the tests' admin: a BareCount admin that can make roles, not a superuser
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bc_test_admin') THEN
    CREATE ROLE bc_test_admin LOGIN NOSUPERUSER CREATEROLE;
  END IF;
END $$;
GRANT barecount_admin TO bc_test_admin WITH ADMIN OPTION;
GRANT barecount_reader, barecount_engineer, barecount_publisher TO bc_test_admin WITH ADMIN OPTION;
SQL
GATEWAY_URL="${BARECOUNT_TEST_PG_URL/postgres@/bc_gateway@}"
fport="$("$ROOT/scripts/flight.sh" start test "$GATEWAY_URL")"
export BARECOUNT_FLIGHT_URL="http://127.0.0.1:$fport"
export BARECOUNT_ARTIFACTS="$BC_STATE/test/artifacts"   # screenshots of the browser tests
export BARECOUNT_FLIGHT_BIN="$CARGO_TARGET_DIR/debug/barecount-flight"
export BARECOUNT_DBT="${BARECOUNT_DBT_VENV:-$HOME/.cache/barecount/dbt-venv}/bin/dbt"
export BARECOUNT_DBT_PROJECT="$ROOT/sql/dbt"
export BARECOUNT_PYTHON="${BARECOUNT_PY_VENV:-$HOME/.cache/barecount/py-venv}/bin/python"
say "barecount-flight on $BARECOUNT_FLIGHT_URL"

step "end-to-end tests" cargo test --quiet -p barecount-tests "$@"
