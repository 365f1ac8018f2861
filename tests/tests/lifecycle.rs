//! Published versions over time: pins, deprecation, retirement (never pinned, never the
//! latest), receipts; publishing a KPI leaves out its run bookkeeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_flight::client;
use barecount_tests::{count, fresh_db, refused, Flight};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_pinned_deprecated_and_retired_explicitly() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "SELECT barecount.publish('d', 'SELECT 1 AS x');
         SELECT barecount.publish('d', 'SELECT 2 AS x');
         SELECT barecount.publish('d', 'SELECT 3 AS x');
         SELECT barecount.dataset_pin('d', 1, 'finance dashboard');",
    )
    .await
    .unwrap();
    assert_eq!(
        refused(c, "SELECT barecount.dataset_retire('d', 1)").await,
        "55006"
    );
    assert_eq!(
        refused(c, "SELECT barecount.dataset_retire('d', 3)").await,
        "55000",
        "never the latest"
    );
    assert_eq!(
        refused(c, "SELECT barecount.dataset_deprecate('d', 9)").await,
        "42704"
    );
    c.batch_execute("SELECT barecount.dataset_deprecate('d', 1); SELECT barecount.dataset_unpin('d', 1, 'finance dashboard');").await.unwrap();
    c.batch_execute("SELECT barecount.dataset_retire('d', 1)")
        .await
        .unwrap();
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.dataset_versions WHERE status = 'retired'"
        )
        .await,
        1
    );
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type IN ('dataset_deprecate', 'dataset_retire')").await, 2);
    assert_eq!(
        refused(c, "SELECT barecount.dataset_pin('d', 1, 'late')").await,
        "55000"
    );
    // still verifiable, no longer served
    assert!(c
        .query_one("SELECT ok FROM barecount.verify_dataset('d', 1)", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    let flight = Flight::start(&db.url).await;
    let err = client::query(&flight.url, &flight.auth, "SELECT * FROM d__v1")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("d__v1"), "{err:#}");
    let (_, b) = client::query(&flight.url, &flight.auth, "SELECT x FROM d__v2")
        .await
        .unwrap();
    assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    flight.stop().await;
}

#[tokio::test]
async fn publishing_a_kpi_leaves_out_its_run_bookkeeping() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, amount numeric);
         INSERT INTO gdp.orders (order_date, amount) VALUES ('2024-05-10', 1), ('2024-06-10', 2);
         SELECT barecount.kpi_define('net', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"measures\": {\"net\": \"sum(amount)\"}}');
         SELECT * FROM barecount.kpi_materialize('net', '2024-01-01', '2024-12-31');
         SELECT barecount.publish('net_pub', 'kpi.net');
         SELECT * FROM barecount.kpi_materialize('net', '2024-01-01', '2024-12-31');
         SELECT barecount.publish('net_pub', 'kpi.net');",
    )
    .await
    .unwrap();
    assert_eq!(count(c, "SELECT count(DISTINCT content_hash) FROM barecount.dataset_versions WHERE dataset = 'net_pub'").await, 1);
    assert_eq!(count(c, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'net_pub__v1' AND column_name IN ('run_seq', 'computed_at')").await, 0);
}
