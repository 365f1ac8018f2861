//! The example dbt project (sql/dbt, dbt-core 1.11 with dbt-postgres) against a real Postgres:
//! its model feeds a BareCount KPI, and its macros define, materialize and publish it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{count, fresh_db, sample_orders, ORDERS_CONTRACT};

#[tokio::test]
async fn the_dbt_example_builds_a_published_kpi() {
    let dbt = std::env::var("BARECOUNT_DBT")
        .expect("BARECOUNT_DBT is not set: run through `make test`, which installs dbt");
    let project = std::env::var("BARECOUNT_DBT_PROJECT")
        .expect("BARECOUNT_DBT_PROJECT is not set: run through `make test`");
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&serde_json::Value::Array(sample_orders(300))],
    )
    .await
    .unwrap();

    let cfg: tokio_postgres::Config = db.url.parse().unwrap();
    let port = match cfg.get_ports() {
        [p, ..] => p.to_string(),
        [] => "5432".into(),
    };
    let dbname = cfg.get_dbname().unwrap().to_owned();
    let target = tempfile_dir();
    let run = || {
        std::process::Command::new(&dbt)
            .args([
                "run",
                "--project-dir",
                &project,
                "--profiles-dir",
                &project,
                "--target-path",
                &target,
                "--log-path",
                &target,
            ])
            .env("BARECOUNT_DBT_PORT", &port)
            .env("BARECOUNT_DBT_DBNAME", &dbname)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {dbt}: {e}"))
    };
    for _ in 0..2 {
        let out = run();
        assert!(
            out.status.success(),
            "dbt run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(count(c, "SELECT count(*) FROM gdp.dbt_orders").await, 300);
    assert!(count(c, "SELECT count(*) FROM kpi.dbt_daily_sales").await > 0);
    assert_eq!(
        count(c, "SELECT sum(orders)::bigint FROM kpi.dbt_daily_sales").await,
        300
    );
    // two runs on the same data: two versions with the same content hash
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.dataset_versions WHERE dataset = 'dbt_sales'"
        )
        .await,
        2
    );
    assert_eq!(count(c, "SELECT count(DISTINCT content_hash) FROM barecount.dataset_versions WHERE dataset = 'dbt_sales'").await, 1);
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type = 'kpi_materialize' AND subject = 'kpi.dbt_daily_sales'").await, 2);
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!("barecount-dbt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}
