//! barecount-flight reaches Postgres over TLS when the database URL asks for it: the test
//! cluster has `ssl = on` with a CA of its own (set up by scripts/e2e.sh), and the server
//! connects as a gateway role (a member of barecount_admin with BYPASSRLS, not a superuser).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use barecount_flight::client::{self, Auth};
use barecount_flight::Config;
use barecount_tests::{api_token, code_of, count, fresh_db, Flight};
use tonic::Code;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through `make test`, which turns TLS on for the test cluster")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_connects_to_postgres_over_verified_tls() {
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute(
        "SELECT * FROM barecount.publish('tls_n', 'SELECT g AS n FROM generate_series(1, 3) g')",
    )
    .await
    .unwrap();
    let (gw, base) = barecount_tests::gateway_role(&db.superuser, &db.url).await;
    let ca = env("BARECOUNT_TEST_PG_CA");
    let other = env("BARECOUNT_TEST_OTHER_CA");
    let auth = Auth::Token(api_token(su, "default", &["read"]).await);
    let ssl_backends = format!(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = '{gw}' AND s.ssl"
    );
    let plain_backends = format!(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = '{gw}' AND NOT s.ssl"
    );

    // verify-full against the cluster's CA (the certificate names 127.0.0.1): served, and every
    // connection the server holds is encrypted
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{base}?sslmode={mode}&sslrootcert={ca}");
        let flight = Flight::start_with(Config::local(&url)).await;
        let (_, b) = client::query(&flight.url, &auth, "SELECT count(*) FROM tls_n")
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:#}"));
        assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 3);
        assert!(count(&db.superuser, &ssl_backends).await >= 1, "{mode}");
        assert_eq!(count(&db.superuser, &plain_backends).await, 0, "{mode}");
        flight.stop().await;
    }
    // a CA that did not sign the server's certificate: no connection, and the error says so
    // without being taken for a bad query
    for mode in ["verify-full", "verify-ca"] {
        let url = format!("{base}?sslmode={mode}&sslrootcert={other}");
        let flight = Flight::start_with(Config::local(&url)).await;
        let e = client::query(&flight.url, &auth, "SELECT count(*) FROM tls_n")
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), Code::Unavailable, "{mode}: {e:#}");
        flight.stop().await;
    }
    // an unknown sslmode is refused when the server starts
    let e =
        barecount_flight::Application::build(Config::local(format!("{base}?sslmode=sometimes")))
            .await
            .err()
            .expect("an unknown sslmode was accepted");
    assert!(format!("{e:#}").contains("sometimes"), "{e:#}");
}
