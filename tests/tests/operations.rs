//! Running barecount-flight: a YAML configuration file under flags, TLS with a CA the client
//! trusts (in process and through the CLI), and reconnecting after Postgres drops the
//! server's connections without a wrong answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow_flight::sql::client::FlightSqlServiceClient;
use barecount_flight::client::{self, Auth};
use barecount_flight::{Application, Config};
use barecount_tests::{api_token, cli_ok, flight_bin, fresh_db, temp_dir, Flight};
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

async fn sum(url: &str, auth: &Auth, sql: &str) -> i64 {
    let (_, b) = client::query(url, auth, sql).await.unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_starts_the_server() {
    let db = fresh_db().await;
    db.client
        .batch_execute("SELECT barecount.publish('cfg', 'SELECT g::bigint AS n FROM generate_series(1, 10) g')")
        .await
        .unwrap();
    let dir = temp_dir("bc-config");
    let file = dir.join("flight.yaml");
    let port_file = dir.join("port");
    std::fs::write(
        &file,
        format!(
            "database-url: {}\nlisten: 127.0.0.1:0\nport_file: {}\ncache-dir: {}\nticket-ttl-secs: 30\n",
            db.url,
            port_file.display(),
            dir.join("cache").display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(flight_bin())
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("BARECOUNT_DATABASE_URL")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Readiness: the port file appears once the socket is bound.
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            if !p.is_empty() {
                break p;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("barecount-flight exited: {status}");
        }
        tokio::task::yield_now().await;
    };
    let url = format!("http://127.0.0.1:{port}");
    let auth = Auth::Token(api_token(&db.client, "default", &["read"]).await);
    assert_eq!(sum(&url, &auth, "SELECT sum(n) FROM cfg").await, 55);
    assert!(dir.join("cache").is_dir(), "the file's cache-dir was used");
    child.kill().await.unwrap();

    // A file with an unknown setting is refused by name.
    std::fs::write(&file, "databse-url: x\n").unwrap();
    let out = tokio::process::Command::new(flight_bin())
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("databse-url"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_ca() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "SELECT barecount.publish('sec', 'SELECT g::bigint AS n FROM generate_series(1, 4) g')",
        )
        .await
        .unwrap();
    let dir = temp_dir("bc-tls");
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    // A CA, and a server certificate it signs (webpki refuses a CA as the end entity).
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=barecount test CA",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &d("key.pem"),
            "-out",
            &d("leaf.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &d("leaf.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &d("cert.pem"),
            "-extfile",
            &d("leaf.ext"),
        ],
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut config = Config::local(&db.url);
    config.tls_cert = Some(cert.clone());
    config.tls_key = Some(key.clone());
    let app = Application::build(config).await.unwrap();
    let port = app.port();
    let server = tokio::spawn(app.run_until_stopped());
    let token = api_token(&db.client, "default", &["read"]).await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(token.clone());
    let info = c
        .execute("SELECT sum(n) FROM sec".into(), None)
        .await
        .unwrap();
    let b: Vec<arrow::record_batch::RecordBatch> = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 10);

    // Plain HTTP/2 gets nothing from a TLS server.
    let e = client::query(
        &format!("http://127.0.0.1:{port}"),
        &Auth::Token(token.clone()),
        "SELECT 1",
    )
    .await;
    assert!(e.is_err());
    // The CLI trusts the CA named by BARECOUNT_FLIGHT_CA.
    let url = format!("https://localhost:{port}");
    let ca = ca.to_str().unwrap();
    let stdout = cli_ok(
        &["query", "--url", &url, "SELECT sum(n) AS s FROM sec"],
        &[("BARECOUNT_TOKEN", &token), ("BARECOUNT_FLIGHT_CA", ca)],
    )
    .await;
    assert!(stdout.contains("| 10 |"), "{stdout}");
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reconnects_when_postgres_drops_it() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "SELECT barecount.publish('r', 'SELECT g::bigint AS n FROM generate_series(1, 100) g')",
        )
        .await
        .unwrap();
    let flight = Flight::start(&db.url).await;
    assert_eq!(
        sum(&flight.url, &flight.auth, "SELECT sum(n) FROM r").await,
        5050
    );
    for round in 0..3 {
        let killed: i64 = db
            .superuser
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = current_database() AND usename = 'bc_gateway' AND backend_type = 'client backend'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            killed >= 1,
            "round {round}: the server's connection was there to drop"
        );
        // Same answer after the drop: the catalog is read again on a new connection.
        db.client
            .batch_execute(&format!(
                "SELECT barecount.publish('r', 'SELECT {round}::bigint AS n')"
            ))
            .await
            .unwrap();
        assert_eq!(
            sum(&flight.url, &flight.auth, "SELECT sum(n) FROM r").await,
            round
        );
        assert_eq!(
            sum(&flight.url, &flight.auth, "SELECT sum(n) FROM r__v1").await,
            5050
        );
    }
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_calls_in_flight_finish() {
    let db = fresh_db().await;
    db.client
        .batch_execute("SELECT barecount.publish('big', 'SELECT g::bigint AS n FROM generate_series(1, 300000) g')")
        .await
        .unwrap();
    let mut flight = Flight::start(&db.url).await;
    let mut c = client::sql_client(&flight.url, &flight.auth).await.unwrap();
    let info = c.execute("SELECT n FROM big".into(), None).await.unwrap();
    let mut stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let first = stream.try_next().await.unwrap().unwrap();
    let mut rows = first.num_rows();
    assert!(
        rows < 300_000,
        "the stream is still going when shutdown begins"
    );

    let url = flight.url.clone();
    flight.begin_shutdown();
    while let Some(b) = stream.try_next().await.unwrap() {
        rows += b.num_rows();
    }
    assert_eq!(rows, 300_000, "the call in flight finished");
    flight.stop().await; // returns once the server has stopped
    let e = client::query(
        &url,
        &Auth::Token(api_token(&db.client, "default", &["read"]).await),
        "SELECT 1",
    )
    .await;
    assert!(e.is_err(), "no new calls after shutdown");
}
