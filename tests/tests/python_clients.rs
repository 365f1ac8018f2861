//! Python clients from PyPI against a real barecount-flight: adbc-driver-flightsql (username and
//! password, adbc_get_objects, a query, a parameterized prepared statement, fetch_arrow_table)
//! and pyarrow.flight (Basic handshake, ListFlights, DoGet by path over several endpoints),
//! ingest (pyarrow do_put, ADBC adbc_ingest), plus tenant isolation and a bad token. The checks live in tests/python/flight_clients.py.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_flight::Config;
use barecount_tests::{api_token, fresh_db, login_role, Flight};

const ROWS: i64 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_and_pyarrow_clients_work() {
    let python = std::env::var("BARECOUNT_PYTHON").unwrap_or_else(|_| {
        panic!("BARECOUNT_PYTHON is not set: run the end-to-end tests through `make test`, which installs the Python clients")
    });
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute(&format!(
        "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('globex', 'Globex');
         SELECT barecount.act_as_tenant('acme');
         SELECT barecount.publish('sales', $$SELECT g::bigint AS id, (ARRAY['east','west'])[1 + g % 2] AS region,
                                            (g % 1000 * 1.25)::numeric(10,2) AS amount,
                                            DATE '2024-01-01' + (g % 366) AS day
                                       FROM generate_series(1, {ROWS}) g$$);
         SELECT barecount.act_as_tenant('globex');
         SELECT barecount.publish('globex_secret', 'SELECT 1 AS x');"
    ))
    .await
    .unwrap();
    let user = login_role(su, "pyuser", &["barecount_reader"], Some("acme")).await;
    su.batch_execute(&format!("ALTER ROLE {user} PASSWORD 'py secret'"))
        .await
        .unwrap();
    let token = api_token(su, "acme", &["read"]).await;
    let ingest = api_token(su, "acme", &["ingest"]).await;
    let eng = login_role(su, "pyeng", &["barecount_engineer"], Some("acme")).await;
    let e = barecount_tests::connect_as(&db.url, &eng).await;
    e.query(
        "SELECT barecount.contract_register($1)",
        &[&barecount_tests::ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let other = api_token(su, "globex", &["read"]).await;

    let mut config = Config::local(&db.url);
    config.endpoint_rows = 65_536; // several endpoints for the DoGet-by-path checks
    let flight = Flight::start_with(config).await;
    let uri = flight.url.replace("http://", "grpc://");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/flight_clients.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("BARECOUNT_FLIGHT_URI", &uri)
        .env("BARECOUNT_USER", &user)
        .env("BARECOUNT_PASSWORD", "py secret")
        .env("BARECOUNT_TOKEN", &token)
        .env("BARECOUNT_OTHER_TOKEN", &other)
        .env("BARECOUNT_ROWS", ROWS.to_string())
        .env("BARECOUNT_INGEST_TOKEN", &ingest)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Python clients failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all Python client checks passed"),
        "{stdout}"
    );
    // what the Python puts landed: pyarrow's 2 and ADBC's 3 accepted, pyarrow's third row
    // quarantined, nothing from the refused calls
    assert_eq!(
        barecount_tests::count(&e, "SELECT count(*) FROM raw.orders__accepted").await,
        5
    );
    assert_eq!(
        barecount_tests::count(&e, "SELECT count(*) FROM barecount.quarantine").await,
        1
    );
    flight.stop().await;
}
