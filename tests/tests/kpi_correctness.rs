//! KPI correctness under change: a randomized oracle (inserts, updates, deletes and late rows,
//! then kpi_refresh, always equal to a plain GROUP BY), two concurrent materializations of
//! overlapping periods, KPIs over views, a new version with other measures, and a backend
//! killed with SIGKILL in the middle of a pipeline run (on a cluster of its own, since Postgres
//! restarts every backend after one dies).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{
    connect, connect_as, count, fresh_db, login_role, order, strings, TestDb, ORDERS_CONTRACT,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const RK: &str = r#"{"source": "gdp.src", "time": "d", "grain": "month", "dimensions": ["region"],
  "measures": {"s": "sum(amount)", "n": "count(*)"}}"#;

/// Rows of the KPI that a plain GROUP BY does not give, and the other way round.
const DIFF: &str = "WITH oracle AS (
    SELECT date_trunc('month', d)::date AS period_start, region, sum(amount) AS s, count(*) AS n FROM gdp.src GROUP BY 1, 2),
  kpi AS (SELECT period_start, region, s, n FROM kpi.rk)
  SELECT (SELECT count(*) FROM (SELECT * FROM oracle EXCEPT ALL SELECT * FROM kpi) a)
       + (SELECT count(*) FROM (SELECT * FROM kpi EXCEPT ALL SELECT * FROM oracle) b)";

async fn engineer(db: &TestDb) -> Client {
    let eng = login_role(
        &db.client,
        "kc_eng",
        &["barecount_engineer", "barecount_publisher"],
        Some("default"),
    )
    .await;
    connect_as(&db.url, &eng).await
}

async fn source(e: &Client) {
    e.batch_execute(&format!(
        "CREATE TABLE gdp.src (tenant_id text NOT NULL DEFAULT 'default', id int, d date, region text, amount numeric);
         INSERT INTO gdp.src (id, d, region, amount)
           SELECT i, DATE '2022-01-01' + (i * 7919) % 1095, (ARRAY['east','west','north'])[1 + i % 3], (i % 97)::numeric
             FROM generate_series(1, 3000) i;
         SELECT barecount.kpi_define('rk', '{RK}');
         SELECT * FROM barecount.kpi_materialize('rk', '2022-01-01', '2024-12-31');"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn refresh_after_random_changes_always_equals_a_group_by() {
    let db = fresh_db().await;
    let e = engineer(&db).await;
    source(&e).await;
    assert_eq!(count(&e, DIFF).await, 0);
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_id = 10_000;
    for round in 0..25 {
        for _ in 0..rng.random_range(1..6) {
            let day: i32 = rng.random_range(0..1095);
            let sql = match rng.random_range(0..4) {
                // new rows, some of them late (old dates)
                0 => {
                    next_id += 10;
                    format!("INSERT INTO gdp.src (id, d, region, amount) SELECT {next_id} + g, DATE '2022-01-01' + {day} + g, \
                             (ARRAY['east','west','north','south'])[1 + g % 4], {}::numeric FROM generate_series(0, {}) g",
                            rng.random_range(0..500), rng.random_range(0..5))
                }
                // amounts change
                1 => format!("UPDATE gdp.src SET amount = amount + {} WHERE id % 53 = {}", rng.random_range(1..9), rng.random_range(0..53)),
                // rows move to another date (and so to another period) or region
                2 => format!("UPDATE gdp.src SET d = DATE '2022-01-01' + {day}, region = 'west' WHERE id % 97 = {}", rng.random_range(0..97)),
                _ => format!("DELETE FROM gdp.src WHERE id % 89 = {}", rng.random_range(0..89)),
            };
            e.batch_execute(&sql)
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
        }
        e.batch_execute("SELECT * FROM barecount.kpi_refresh('rk')")
            .await
            .unwrap();
        assert_eq!(count(&e, DIFF).await, 0, "round {round}, seed {seed}");
    }
    // and every refreshed period still verifies against its receipt
    for p in strings(&e, "SELECT DISTINCT period FROM kpi.rk ORDER BY 1 LIMIT 6").await {
        let ok: bool = e
            .query_one(
                "SELECT ok FROM barecount.verify_kpi_period('rk', $1)",
                &[&p],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ok, "{p}");
    }
}

/// A KPI's source table owner can drop or disable the change-capture triggers, or drop the table
/// and create it again; kpi_refresh must not then miss changes (a stale number that looks fresh).
#[tokio::test]
async fn refresh_is_right_after_change_capture_was_removed() {
    let db = fresh_db().await;
    let e = engineer(&db).await;
    source(&e).await;
    // the table belongs to barecount_owner, so a tenant role cannot touch its triggers: the
    // careless admin (the superuser) does it
    for (how, copy, sabotage) in [
        ("trigger disabled", "", "ALTER TABLE gdp.src DISABLE TRIGGER barecount_kpi_default_rk_ins"),
        ("trigger dropped", "", "DROP TRIGGER barecount_kpi_default_rk_upd ON gdp.src"),
        (
            "table created again",
            "CREATE TABLE gdp.src2 (LIKE gdp.src INCLUDING DEFAULTS); INSERT INTO gdp.src2 SELECT * FROM gdp.src",
            "DROP TABLE gdp.src; ALTER TABLE gdp.src2 RENAME TO src",
        ),
    ] {
        e.batch_execute(copy).await.unwrap_or_else(|err| panic!("{how}: {err:?}"));
        db.superuser.batch_execute(sabotage).await.unwrap_or_else(|err| panic!("{how}: {err:?}"));
        e.batch_execute(
            "UPDATE gdp.src SET amount = amount + 1000 WHERE id % 7 = 0;
             INSERT INTO gdp.src (id, d, region, amount) VALUES (99999, '2022-02-02', 'south', 5)",
        )
        .await
        .unwrap_or_else(|err| panic!("{how}: {err:?}"));
        assert!(count(&e, DIFF).await > 0, "{how}: the change shows before the refresh");
        let periods: i64 = e
            .query_one("SELECT periods FROM barecount.kpi_refresh('rk')", &[])
            .await
            .unwrap()
            .get(0);
        assert!(periods > 0, "{how}");
        assert_eq!(count(&e, DIFF).await, 0, "{how}: the KPI equals a GROUP BY after the refresh");
        // and the capture is back: the next change is noted, refreshed, and nothing else
        e.batch_execute("DELETE FROM gdp.src WHERE id = 99999").await.unwrap();
        let periods: i64 = e
            .query_one("SELECT periods FROM barecount.kpi_refresh('rk')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(periods, 1, "{how}: one changed month after the capture was put back");
        assert_eq!(count(&e, DIFF).await, 0, "{how}");
    }
}

#[tokio::test]
async fn concurrent_materializations_of_overlapping_periods_neither_double_nor_lose_a_period() {
    let db = fresh_db().await;
    let e = engineer(&db).await;
    source(&e).await;
    let eng: String = e
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    let a = connect_as(&db.url, &eng).await;
    let b = connect_as(&db.url, &eng).await;
    e.batch_execute("UPDATE gdp.src SET amount = amount * 2 WHERE d < '2023-06-01'")
        .await
        .unwrap();
    a.batch_execute(
        "BEGIN; SELECT * FROM barecount.kpi_materialize('rk', '2022-01-01', '2023-06-30')",
    )
    .await
    .unwrap();
    let b_pid: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let second = tokio::spawn(async move {
        b.batch_execute("BEGIN; SELECT * FROM barecount.kpi_materialize('rk', '2023-01-01', '2024-12-31'); COMMIT").await
    });
    // wait until the second is blocked behind the first (readiness, not a sleep)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = count(&e, &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {b_pid} AND wait_event_type = 'Lock'")).await;
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second materialization never waited for the first"
        );
        tokio::task::yield_now().await;
    }
    a.batch_execute("COMMIT").await.unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(count(&e, "SELECT count(*) FROM (SELECT period, region FROM kpi.rk GROUP BY 1, 2 HAVING count(*) > 1) d").await, 0);
    assert_eq!(count(&e, DIFF).await, 0);
}

#[tokio::test]
async fn kpis_over_views_refresh_and_new_versions_materialize() {
    let db = fresh_db().await;
    let e = engineer(&db).await;
    e.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let rows = serde_json::json!([order("A1", "east", 10.0), order("A2", "west", 5.0)]);
    e.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows])
        .await
        .unwrap();
    // over raw.<dataset>__accepted (a view): Postgres allows no transition-table triggers there
    e.batch_execute(
        r#"SELECT barecount.kpi_define('arrivals', '{"source": "raw.orders__accepted", "time": "received_at", "grain": "day",
             "dimensions": ["contract"], "measures": {"n": "count(*)"}}');
           SELECT * FROM barecount.kpi_materialize('arrivals', '2000-01-01', '2100-01-01');"#,
    )
    .await
    .unwrap();
    assert_eq!(
        count(&e, "SELECT sum(n)::bigint FROM kpi.arrivals").await,
        2
    );
    let rows = serde_json::json!([order("A3", "east", 1.0)]);
    e.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows])
        .await
        .unwrap();
    let r = e
        .query_one(
            "SELECT periods, row_count FROM barecount.kpi_refresh('arrivals')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 1, "only the changed period");
    assert_eq!(
        count(&e, "SELECT sum(n)::bigint FROM kpi.arrivals").await,
        3
    );
    // nothing changed: nothing recomputed
    let r = e
        .query_one("SELECT periods FROM barecount.kpi_refresh('arrivals')", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 0);

    // over a published view
    e.batch_execute(
        r#"SELECT * FROM barecount.publish('order_amounts', $$SELECT payload->>'region' AS region, (payload->>'amount')::numeric AS amount,
                                                            (payload->>'order_date')::date AS d FROM raw.orders__accepted$$);
           SELECT barecount.kpi_define('published_sales', '{"source": "published.order_amounts", "time": "d", "grain": "month",
             "dimensions": ["region"], "measures": {"net": "sum(amount)"}}');
           SELECT * FROM barecount.kpi_materialize('published_sales', '2024-01-01', '2024-12-31');"#,
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &e,
            "SELECT (sum(net) * 10)::bigint FROM kpi.published_sales"
        )
        .await,
        160
    );

    // a new version with another measure materializes into a new table; the old one is kept
    e.batch_execute(
        r#"SELECT barecount.kpi_define('published_sales', '{"source": "published.order_amounts", "time": "d", "grain": "month",
             "dimensions": ["region"], "measures": {"net": "sum(amount)", "orders": "count(*)"}}');
           SELECT * FROM barecount.kpi_materialize('published_sales', '2024-01-01', '2024-12-31');"#,
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &e,
            "SELECT sum(orders)::bigint FROM kpi.published_sales WHERE definition_version = 2"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM kpi.published_sales__v1 WHERE definition_version = 1"
        )
        .await,
        2
    );
}

/// psql-free helper: the scripts' cluster tool, for a cluster this test may crash.
fn cluster(args: &[&str]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let out = std::process::Command::new(root.join("scripts/cluster.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_backend_killed_mid_run_leaves_no_partial_period_and_a_rerun_completes() {
    cluster(&["stop", "kpicrash"]);
    cluster(&["start", "kpicrash"]);
    let url = cluster(&["url", "kpicrash", "postgres"]);
    let root = connect(&url).await;
    root.batch_execute("DROP DATABASE IF EXISTS crash")
        .await
        .unwrap();
    root.batch_execute("CREATE DATABASE crash").await.unwrap();
    let url = format!("{}/crash", url.rsplit_once('/').unwrap().0);
    let su = connect(&url).await;
    su.batch_execute(
        "CREATE EXTENSION barecount;
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crash_eng') THEN CREATE ROLE crash_eng LOGIN; END IF; END $$;
         GRANT barecount_engineer, barecount_publisher TO crash_eng;
         SELECT barecount.tenant_add_member('default', 'crash_eng');
         CREATE SCHEMA staging AUTHORIZATION crash_eng;",
    )
    .await
    .unwrap();
    let e = connect_as(&url, "crash_eng").await;
    e.batch_execute(&format!(
        "CREATE TABLE gdp.src (tenant_id text NOT NULL DEFAULT 'default', id int, d date, region text, amount numeric);
         INSERT INTO gdp.src (id, d, region, amount)
           SELECT i, DATE '2022-01-01' + i % 1095, (ARRAY['east','west'])[1 + i % 2], 1 FROM generate_series(1, 5000) i;
         SELECT barecount.kpi_define('rk', '{RK}');
         CREATE FUNCTION staging.slow() RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(60) IS NOT NULL';
         SELECT barecount.model_define('after_kpi', 'SELECT 1 AS x WHERE staging.slow()');
         SELECT barecount.pipeline_define('crashy', '{{\"steps\": [
            {{\"name\": \"kpi\", \"kind\": \"kpi\", \"kpi\": \"rk\"}},
            {{\"name\": \"slow\", \"kind\": \"model\", \"model\": \"after_kpi\", \"after\": [\"kpi\"]}}]}}');"
    ))
    .await
    .unwrap();
    let pid: i32 = e
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let running = tokio::spawn(async move {
        e.query(
            "SELECT * FROM barecount.pipeline_run('crashy', '2022-01-01', '2024-12-31', 'once')",
            &[],
        )
        .await
    });
    // the KPI step is done (inside the run's transaction) once the next step sleeps
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count(&su, &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND wait_event = 'PgSleep'")).await;
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached its second step"
        );
        tokio::task::yield_now().await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        running.await.unwrap().is_err(),
        "the killed backend's client sees an error"
    );
    // Postgres restarts every backend; reconnect once it accepts connections again
    let deadline = Instant::now() + Duration::from_secs(60);
    let su = loop {
        let mut cfg: tokio_postgres::Config = url.parse().unwrap();
        cfg.connect_timeout(Duration::from_secs(2));
        if let Ok((c, conn)) = cfg.connect(tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            if c.simple_query("SELECT 1").await.is_ok() {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Postgres did not come back after the kill"
        );
        tokio::task::yield_now().await;
    };
    // nothing of the run survived: no KPI rows, no run, no receipt of a materialization
    // (the KPI's table was created inside the killed transaction: it is gone with it)
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM pg_class WHERE oid = to_regclass('kpi.rk')"
        )
        .await,
        0
    );
    assert_eq!(
        count(&su, "SELECT count(*) FROM barecount.pipeline_runs").await,
        0
    );
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'kpi_materialize'"
        )
        .await,
        0
    );
    assert!(su
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    // the rerun (same key: the first never committed) completes
    let e = connect_as(&url, "crash_eng").await;
    e.batch_execute("SELECT barecount.model_define('after_kpi', 'SELECT 1 AS x')")
        .await
        .unwrap();
    let status: String = e
        .query_one("SELECT status FROM barecount.pipeline_run('crashy', '2022-01-01', '2024-12-31', 'once')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "succeeded");
    assert_eq!(
        count(&e, "SELECT count(DISTINCT period) FROM kpi.rk").await,
        36
    );
    assert_eq!(count(&e, "SELECT sum(n)::bigint FROM kpi.rk").await, 5000);
    drop(e);
    drop(su);
    cluster(&["stop", "kpicrash"]);
}
