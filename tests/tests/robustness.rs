//! Killing BareCount calls while parallel workers run BareCount code, under load, and running
//! them again: every killed call ends with its cancel or terminate error (never XX000), no
//! backend crashes (a crash would restart the cluster and drop every connection, among them
//! the watching one), and the rerun gives the numbers a clean run gives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{connect_as, count, fresh_db, sqlstate};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Settings that make Postgres plan parallel workers even for modest tables.
const PARALLEL: &str = "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0;
     SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; SET statement_timeout = '120s';";

/// The backend pid of a session.
async fn pid(c: &Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until `leader` runs with parallel workers (polling pg_stat_activity, bounded).
async fn wait_for_workers(watch: &Client, leader: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let n = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parallel worker' AND leader_pid = $1",
                &[&leader],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if n > 0 {
            return true;
        }
        let idle = watch
            .query_one(
                "SELECT coalesce((SELECT state <> 'active' FROM pg_stat_activity WHERE pid = $1), true)",
                &[&leader],
            )
            .await
            .unwrap()
            .get::<_, bool>(0);
        if idle {
            return false; // finished before we saw its workers
        }
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_parallel_barecount_work_under_load_leaves_the_cluster_clean() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders AS
           SELECT 'default'::text AS tenant_id, (DATE '2022-01-01' + i % 1000) AS order_date,
                  (ARRAY['east', 'west', 'north'])[1 + i % 3] AS region, (i % 97 + 1)::numeric AS amount
             FROM generate_series(1, 300000) i;
         ANALYZE gdp.orders;
         SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         SELECT barecount.kpi_define('sales_nrf', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"calendar\": \"nrf\",
                                                   \"grain\": \"period\", \"dimensions\": [\"region\"],
                                                   \"measures\": {\"net\": \"sum(amount)\", \"n\": \"count(*)\"}}');",
    )
    .await
    .unwrap();
    // the watching connection: a crash anywhere in the cluster would terminate it
    let watch = &db.superuser;
    let mut saw_workers = 0;
    for round in 0..3 {
        // load: parallel scans that call PARALLEL SAFE BareCount functions in their workers
        let mut load = Vec::new();
        for _ in 0..2 {
            let s = connect_as(&db.url, &db.admin).await;
            s.batch_execute(PARALLEL).await.unwrap();
            let p = pid(&s).await;
            let task = tokio::spawn(async move {
                for _ in 0..2 {
                    let r = s
                        .query_one(
                            "SELECT count(*) FROM gdp.orders
                              WHERE barecount.fiscal_period(order_date, 'nrf') LIKE '%P%'
                                AND barecount.is_working_day(order_date, 'nrf')",
                            &[],
                        )
                        .await;
                    if let Err(e) = r {
                        return Some(e);
                    }
                }
                None
            });
            load.push((p, task));
        }
        let m = connect_as(&db.url, &db.admin).await;
        m.batch_execute(PARALLEL).await.unwrap();
        let m_pid = pid(&m).await;
        let run = tokio::spawn(async move {
            m.query_one(
                "SELECT row_count FROM barecount.kpi_materialize('sales_nrf', '2022-01-01', '2024-09-30')",
                &[],
            )
            .await
            .map(|_| ())
        });
        // kill while workers run: the materialization's own, or else a load session's
        let (victim, leader, seen) = if wait_for_workers(watch, m_pid).await {
            ("kpi_materialize", m_pid, true)
        } else {
            let l = load[round % 2].0;
            ("a load session", l, wait_for_workers(watch, l).await)
        };
        if seen {
            saw_workers += 1;
        }
        let signal = if round % 2 == 0 {
            "pg_cancel_backend"
        } else {
            "pg_terminate_backend"
        };
        watch
            .query_one(&format!("SELECT {signal}($1)"), &[&leader])
            .await
            .unwrap();
        // the cancelled or terminated side ends with its error (or had just finished)
        let outcome = if leader == m_pid {
            run.await.unwrap().err()
        } else {
            let killed = load.iter().position(|(p, _)| *p == leader).unwrap();
            let (_, t) = load.remove(killed);
            let out = t.await.unwrap();
            run.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            out
        };
        if let Some(e) = outcome {
            let code = e.code().map(|c| c.code().to_owned());
            assert!(
                matches!(code.as_deref(), Some("57014") | Some("57P01") | None),
                "round {round}: {victim} killed by {signal} ended with {:?}: {e}",
                code
            );
            assert_ne!(code.as_deref(), Some("XX000"), "{e}");
        }
        for (_, t) in load {
            if let Some(e) = t.await.unwrap() {
                assert_ne!(sqlstate(&e), "XX000", "round {round}: load: {e}");
            }
        }
        // nothing crashed: the watching connection is still there
        assert_eq!(count(watch, "SELECT 1::bigint").await, 1, "round {round}");
    }
    println!("{saw_workers} of 3 rounds killed a call while its parallel workers ran");
    assert!(
        saw_workers > 0,
        "no round ran BareCount code in parallel workers"
    );

    // the rerun gives what a direct computation gives, and the ledger still verifies
    c.batch_execute(PARALLEL).await.unwrap();
    c.query_one(
        "SELECT row_count FROM barecount.kpi_materialize('sales_nrf', '2022-01-01', '2024-09-30')",
        &[],
    )
    .await
    .unwrap();
    let mismatched = count(
        c,
        "WITH direct AS (
             SELECT * FROM (
                 SELECT barecount.fiscal_period(order_date, 'nrf') AS period, region,
                        sum(amount) AS net, count(*) AS n
                   FROM gdp.orders
                  WHERE order_date >= (SELECT min(period_start) FROM kpi.sales_nrf)
                  GROUP BY 1, 2) g
              WHERE period IN (SELECT period FROM kpi.sales_nrf))
         SELECT count(*) FROM direct d FULL JOIN kpi.sales_nrf k USING (period, region)
          WHERE d.net IS DISTINCT FROM k.net OR d.n IS DISTINCT FROM k.n",
    )
    .await;
    assert_eq!(
        mismatched, 0,
        "the rerun's numbers differ from a direct computation"
    );
    assert!(count(c, "SELECT count(DISTINCT period) FROM kpi.sales_nrf").await >= 30);
    let ok: bool = c
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ok, "the ledger no longer verifies");
    assert_eq!(count(watch, "SELECT 1::bigint").await, 1);
}
