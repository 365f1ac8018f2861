//! Harness for BareCount's end-to-end tests: a real Postgres (the cluster `make test` starts,
//! named by `BARECOUNT_TEST_PG_URL`), a fresh database per test with the installed extension,
//! and real barecount-flight servers on ephemeral ports.
//!
//! A missing server is a failure, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod webdriver;

use barecount_flight::client::Auth;
use barecount_flight::{Application, Config};
use rand::Rng;
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls};

pub const ORDERS_CONTRACT: &str = include_str!("../../contracts/orders.yaml");

/// The URL of the test cluster's database, from the environment `make test` sets.
pub fn base_url() -> String {
    std::env::var("BARECOUNT_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("BARECOUNT_TEST_PG_URL is not set: run the end-to-end tests through `make test`, which starts Postgres")
    })
}

/// The standalone barecount-flight `make test` starts against `BARECOUNT_TEST_PG_URL`.
pub fn standalone_flight_url() -> String {
    std::env::var("BARECOUNT_FLIGHT_URL").unwrap_or_else(|_| {
        panic!("BARECOUNT_FLIGHT_URL is not set: run the end-to-end tests through `make test`, which starts barecount-flight")
    })
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of its own for one test, with `CREATE EXTENSION barecount` done.
///
/// `client` is a BareCount admin — a login role granted `barecount_admin` (with CREATEROLE, to
/// make the other roles a test needs), not a superuser — so tests run as the real roles.
/// `superuser` is for the tests that are about what a superuser can do (tampering with the
/// ledger, switching triggers off) and for set-up only a superuser may do.
pub struct TestDb {
    /// The database as the superuser `postgres` (connect_as switches the role).
    pub url: String,
    pub client: Client,
    pub superuser: Client,
    /// The admin role `client` is connected as.
    pub admin: String,
}

/// The login role every test database's `client` uses: a BareCount admin, never a superuser.
pub const TEST_ADMIN: &str = "bc_test_admin";

pub async fn fresh_db() -> TestDb {
    fresh_db_with("CREATE EXTENSION barecount").await
}

/// [`fresh_db`] with another `CREATE EXTENSION` statement (an older version, for the upgrade
/// tests).
pub async fn fresh_db_with(create_extension: &str) -> TestDb {
    let base = base_url();
    let root = connect(&base).await;
    let name = format!("bc_e2e_{:016x}", rand::rng().random::<u64>());
    root.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = match base.rsplit_once('/') {
        Some((prefix, _db)) => format!("{prefix}/{name}"),
        None => panic!("BARECOUNT_TEST_PG_URL must end in /<database>"),
    };
    let superuser = connect(&url).await;
    superuser
        .batch_execute(create_extension)
        .await
        .unwrap_or_else(|e| panic!("{create_extension}: {e}"));
    // the admin role is cluster-wide and made once by scripts/e2e.sh
    let client = connect_as(&url, TEST_ADMIN).await;
    let is_super: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!is_super, "{TEST_ADMIN} must not be a superuser");
    TestDb {
        url,
        client,
        superuser,
        admin: TEST_ADMIN.to_owned(),
    }
}

/// A BareCount API token for `tenant` with `scopes`, valid for a day.
pub async fn api_token(client: &Client, tenant: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    client
        .query_one(
            "SELECT token FROM barecount.token_create($1, $2, now() + interval '1 day')",
            &[&tenant, &scopes],
        )
        .await
        .unwrap_or_else(|e| panic!("token_create for {tenant}: {e}"))
        .get(0)
}

/// `url` (of the superuser `postgres`, as the test cluster gives it) with `role` as the user;
/// a URL of another user is left alone.
pub fn url_as(url: &str, role: &str) -> String {
    url.replacen(
        "postgresql://postgres@",
        &format!("postgresql://{role}@"),
        1,
    )
}

/// The gateway role's URL for a URL of the superuser `postgres` (others are left alone).
pub fn gateway_url(url: &str) -> String {
    url_as(url, "bc_gateway")
}

/// A barecount-flight on an ephemeral loopback port, stopped when dropped. `auth` and `token`
/// hold an API token of the tenant `default` with scopes read and export.
pub struct Flight {
    pub url: String,
    /// `host:port` of the metrics endpoint, when the config turned it on.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `host:port` of the web app, when the config turned it on.
    pub web_addr: Option<std::net::SocketAddr>,
    pub token: String,
    pub auth: Auth,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Flight {
    pub async fn start(database_url: &str) -> Flight {
        Flight::start_with(Config::local(database_url)).await
    }

    /// Starts a server; a URL naming the superuser `postgres` is changed to the gateway role
    /// `bc_gateway` (made by scripts/e2e.sh: barecount_admin with BYPASSRLS, not a
    /// superuser), so the server under test never runs as a superuser.
    pub async fn start_with(mut config: Config) -> Flight {
        config.database_url = gateway_url(&config.database_url);
        let database_url = config.database_url.clone();
        let database_url = database_url.as_str();
        let app = Application::build(config).await.unwrap();
        let metrics_addr = app.metrics_addr();
        let web_addr = app.web_addr();
        // build() has bound the socket, so the port accepts connections from here on.
        let url = format!("http://{}", app.addr());
        // the harness's own connection is plain: the server's TLS settings are the server's
        let plain = barecount_flight::pgtls::split(database_url)
            .map(|(rest, _)| rest)
            .unwrap_or_else(|e| panic!("{database_url}: {e}"));
        let token = api_token(&connect(&plain).await, "default", &["read", "export"]).await;
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Flight {
            url,
            metrics_addr,
            web_addr,
            auth: Auth::Token(token.clone()),
            token,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Signals shutdown without waiting: the server stops taking calls and lets the ones in
    /// flight finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of one Prometheus sample (`name` with its labels, as printed) from `GET /metrics`.
pub async fn metric(addr: std::net::SocketAddr, sample: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// A fresh, empty directory under the system temporary directory.
pub fn temp_dir(prefix: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{:016x}", rand::rng().random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The gRPC status code inside a client error.
pub fn code_of(e: &dyn std::fmt::Display) -> tonic::Code {
    status_code(&format!("{e:#}"))
}

/// The barecount-flight binary `make test` built.
pub fn flight_bin() -> String {
    std::env::var("BARECOUNT_FLIGHT_BIN").unwrap_or_else(|_| {
        panic!("BARECOUNT_FLIGHT_BIN is not set: run the end-to-end tests through `make test`")
    })
}

/// Runs the barecount-flight CLI with extra environment and returns its stdout, failing the
/// test (with stderr) if it fails.
pub async fn cli_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new(flight_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "barecount-flight {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The gRPC status code a client error's text reports (tonic prints codes by description).
pub fn status_code(text: &str) -> tonic::Code {
    use tonic::Code;
    for code in [
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::NotFound,
        Code::InvalidArgument,
        Code::ResourceExhausted,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::Unavailable,
        Code::Internal,
        Code::Unimplemented,
    ] {
        if text.contains(code.description()) || text.contains(&format!("{code:?}")) {
            return code;
        }
    }
    panic!("no gRPC status code in: {text}");
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Deterministic sample orders: `n` valid rows plus the listed invalid ones.
pub fn sample_orders(n: usize) -> Vec<serde_json::Value> {
    let regions = ["east", "west", "north", "south"];
    (0..n)
        .map(|i| {
            let day = i % 730;
            let date = chrono_like_date(2023, day);
            serde_json::json!({
                "order_id": format!("A{i}"),
                "order_date": date,
                "store_id": format!("S{}", i % 17),
                "region": regions[i % 4],
                "amount": ((i * 37) % 10_000) as f64 / 100.0,
                "quantity": 1 + i % 5,
            })
        })
        .collect()
}

/// `day` days after January 1 of `year`, as YYYY-MM-DD (no calendar crate needed).
fn chrono_like_date(year: i32, mut day: usize) -> String {
    let mut y = year;
    loop {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = if leap { 366 } else { 365 };
        if day < len {
            let months = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let mut m = 0;
            while day >= months[m] {
                day -= months[m];
                m += 1;
            }
            return format!("{y:04}-{:02}-{:02}", m + 1, day + 1);
        }
        day -= len;
        y += 1;
    }
}

/// Connects to `url` as another role (the test cluster trusts loopback connections).
pub async fn connect_as(url: &str, role: &str) -> Client {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.user(role);
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url} as {role}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Creates a login role (cluster-wide, so the name is made unique), grants it BareCount roles
/// and maps it to a tenant. Returns its name.
pub async fn login_role(
    admin: &Client,
    prefix: &str,
    grants: &[&str],
    tenant: Option<&str>,
) -> String {
    let name = format!("{prefix}_{:08x}", rand::rng().random::<u32>());
    admin
        .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
        .await
        .unwrap();
    for g in grants {
        admin
            .batch_execute(&format!("GRANT {g} TO {name}"))
            .await
            .unwrap();
    }
    if let Some(t) = tenant {
        admin
            .execute(
                "SELECT barecount.tenant_add_member($1, $2::text::regrole)",
                &[&t, &name],
            )
            .await
            .unwrap();
    }
    name
}

/// A gateway login role of its own — a member of barecount_admin with BYPASSRLS, not a
/// superuser (BYPASSRLS is granted by `superuser`) — and `url` with it as the user.
pub async fn gateway_role(superuser: &Client, url: &str) -> (String, String) {
    let gw = login_role(superuser, "gateway", &["barecount_admin"], None).await;
    superuser
        .batch_execute(&format!("ALTER ROLE {gw} BYPASSRLS"))
        .await
        .unwrap();
    let as_gw = url_as(url, &gw);
    assert!(as_gw.contains(&gw), "{url} does not name the user postgres");
    (gw, as_gw)
}

/// The first column of every row a query returns, as text.
pub async fn strings(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The single bigint a query returns.
pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The SQLSTATE of a statement that must fail.
pub async fn refused(c: &Client, sql: &str) -> String {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => sqlstate(&e),
    }
}

/// "ok", or the SQLSTATE of the error: for tables of statements and what each must come to.
pub async fn outcome(c: &Client, sql: &str) -> String {
    match c.batch_execute(sql).await {
        Ok(()) => "ok".into(),
        Err(e) => sqlstate(&e),
    }
}

/// Whether the whole ledger chain verifies (`barecount.ledger_verify()`), as `c` sees it.
pub async fn chain_verifies(c: &Client) -> bool {
    c.query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get(0)
}

/// One valid row of the sample orders contract.
pub fn order(id: &str, region: &str, amount: f64) -> serde_json::Value {
    serde_json::json!({"order_id": id, "order_date": "2024-05-01", "store_id": "S1", "region": region, "amount": amount, "quantity": 1})
}
