//! KPI materialization in a real Postgres: per period and dimension, ratios of aggregates,
//! idempotent runs with the same per-period content hashes, verification of a period against
//! its receipt, calendar grains.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{count, fresh_db, refused, strings};
use serde_json::Value;

const SALES: &str = r#"{"source": "gdp.orders", "time": "order_date", "grain": "month", "dimensions": ["region"],
  "measures": {"net": "sum(amount)", "orders": "count(*)", "aov": {"ratio": ["sum(amount)", "count(*)"]}}}"#;

#[tokio::test]
async fn kpis_materialize_idempotently_and_verify_per_period() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders AS
           SELECT 'default'::text AS tenant_id, (DATE '2023-12-20' + i % 110) AS order_date,
                  (ARRAY['east', 'west'])[1 + i % 2] AS region, (i % 7 + 1)::numeric AS amount
             FROM generate_series(1, 2000) i;",
    )
    .await
    .unwrap();
    let v: i32 = c
        .query_one(
            "SELECT barecount.kpi_define('sales', $1::text::jsonb)",
            &[&SALES],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
    let r = c.query_one("SELECT periods, row_count, ledger_seq FROM barecount.kpi_materialize('sales', '2024-01-01', '2024-03-31')", &[]).await.unwrap();
    let (periods, rows, seq1): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((periods, rows), (3, 6));
    // the numbers are the source's, per period and region; the ratio is of the aggregates
    let direct = count(c, "SELECT sum(amount)::bigint FROM gdp.orders WHERE order_date BETWEEN '2024-02-01' AND '2024-02-29' AND region = 'east'").await;
    assert_eq!(
        count(
            c,
            "SELECT net::bigint FROM kpi.sales WHERE period = '2024-02' AND region = 'east'"
        )
        .await,
        direct
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM kpi.sales WHERE aov <> net / orders"
        )
        .await,
        0
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM kpi.sales WHERE period = '2023-12'").await,
        0,
        "only the requested periods"
    );

    // a second run over the same inputs: same rows, same hashes, no duplicates
    let seq2: i64 = c
        .query_one(
            "SELECT ledger_seq FROM barecount.kpi_materialize('sales', '2024-01-01', '2024-03-31')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let hashes = |s: i64| async move {
        c.query_one(
            "SELECT inputs->'periods' FROM barecount.ledger WHERE seq = $1",
            &[&s],
        )
        .await
        .unwrap()
        .get::<_, Value>(0)
    };
    assert_eq!(hashes(seq1).await, hashes(seq2).await);
    assert_eq!(count(c, "SELECT count(*) FROM kpi.sales").await, 6);

    let ok: bool = c
        .query_one(
            "SELECT ok FROM barecount.verify_kpi_period('sales', '2024-02')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);
    c.batch_execute(
        "UPDATE kpi.sales SET net = net + 1 WHERE period = '2024-02' AND region = 'west'",
    )
    .await
    .unwrap();
    let r = c.query_one("SELECT ok, recorded_hash, computed_hash FROM barecount.verify_kpi_period('sales', '2024-02')", &[]).await.unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_ne!(r.get::<_, Option<String>>(1), Some(r.get::<_, String>(2)));
    assert!(
        c.query_one(
            "SELECT ok FROM barecount.verify_kpi_period('sales', '2024-03')",
            &[]
        )
        .await
        .unwrap()
        .get::<_, bool>(0),
        "other periods still verify"
    );

    // calendar grains
    c.batch_execute(
        "SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         SELECT barecount.kpi_define('sales_nrf', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"calendar\": \"nrf\",
                                                   \"grain\": \"period\", \"measures\": {\"net\": \"sum(amount)\"}}');
         SELECT * FROM barecount.kpi_materialize('sales_nrf', '2024-01-01', '2024-03-31');",
    )
    .await
    .unwrap();
    let labels: Vec<String> = c
        .query(
            "SELECT period FROM kpi.sales_nrf ORDER BY period_start",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        labels,
        ["FY2024-P01", "FY2024-P02"],
        "NRF periods starting in the range"
    );

    assert_eq!(
        refused(
            c,
            "SELECT * FROM barecount.kpi_materialize('nope', '2024-01-01', '2024-01-31')"
        )
        .await,
        "42704"
    );
    assert_eq!(
        refused(
            c,
            "SELECT barecount.kpi_define('bad', '{\"source\": \"gdp.orders\"}')"
        )
        .await,
        "22023"
    );
    assert_eq!(
        refused(
            c,
            "SELECT * FROM barecount.verify_kpi_period('nope', '2024-01')"
        )
        .await,
        "42704"
    );
    assert!(c
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    // materializations are metered per tenant and day: sales twice, sales_nrf once
    assert_eq!(
        count(
            c,
            "SELECT events FROM barecount.usage WHERE kind = 'materialize'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn refresh_recomputes_exactly_the_changed_periods_however_old() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders AS
           SELECT 'default'::text AS tenant_id, (DATE '2024-01-01' + i % 91) AS order_date,
                  (ARRAY['east', 'west'])[1 + i % 2] AS region, 1::numeric AS amount
             FROM generate_series(1, 910) i;",
    )
    .await
    .unwrap();
    c.query(
        "SELECT barecount.kpi_define('sales', $1::text::jsonb)",
        &[&SALES],
    )
    .await
    .unwrap();
    c.query(
        "SELECT * FROM barecount.kpi_materialize('sales', '2024-01-01', '2024-03-31')",
        &[],
    )
    .await
    .unwrap();
    let jan_run = count(
        c,
        "SELECT max(run_seq) FROM kpi.sales WHERE period = '2024-01'",
    )
    .await;

    // a late backfill into February and into a period three years back, and a March update
    c.batch_execute(
        "INSERT INTO gdp.orders VALUES ('default', '2024-02-10', 'east', 100), ('default', '2021-06-15', 'west', 5);
         UPDATE gdp.orders SET amount = 2 WHERE order_date = '2024-03-05';",
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT periods, row_count FROM barecount.kpi_refresh('sales')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 3, "2021-06, 2024-02 and 2024-03");
    assert_eq!(
        count(
            c,
            "SELECT net::bigint FROM kpi.sales WHERE period = '2021-06' AND region = 'west'"
        )
        .await,
        5
    );
    let direct = count(c, "SELECT sum(amount)::bigint FROM gdp.orders WHERE order_date BETWEEN '2024-02-01' AND '2024-02-29' AND region = 'east'").await;
    assert_eq!(
        count(
            c,
            "SELECT net::bigint FROM kpi.sales WHERE period = '2024-02' AND region = 'east'"
        )
        .await,
        direct
    );
    assert_eq!(
        count(
            c,
            "SELECT max(run_seq) FROM kpi.sales WHERE period = '2024-01'"
        )
        .await,
        jan_run,
        "January was not recomputed"
    );
    assert_eq!(
        count(c, "SELECT periods FROM barecount.kpi_refresh('sales')").await,
        0,
        "nothing stale any more"
    );
    assert!(c
        .query_one(
            "SELECT ok FROM barecount.verify_kpi_period('sales', '2021-06')",
            &[]
        )
        .await
        .unwrap()
        .get::<_, bool>(0));
}

#[tokio::test]
async fn thresholds_write_breach_and_recovery_events() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, region text, amount numeric);
         INSERT INTO gdp.orders (order_date, region, amount) VALUES
           ('2024-01-10', 'east', 20), ('2024-02-10', 'east', 8), ('2024-03-10', 'east', 3);
         SELECT barecount.kpi_define('net', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"month\",
             \"dimensions\": [\"region\"], \"measures\": {\"net\": \"sum(amount)\"},
             \"thresholds\": [{\"measure\": \"net\", \"direction\": \"below\", \"warn\": 10, \"critical\": 5}]}');
         SELECT * FROM barecount.kpi_materialize('net', '2024-01-01', '2024-03-31');",
    )
    .await
    .unwrap();
    let events = |sql: &'static str| async move {
        c.query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                )
            })
            .collect::<Vec<_>>()
    };
    let first =
        events("SELECT period, level, kind FROM barecount.kpi_events ORDER BY event_id").await;
    assert_eq!(
        first,
        [
            ("2024-02".into(), "warn".into(), "breach".into()),
            ("2024-03".into(), "critical".into(), "breach".into())
        ]
    );
    let dims: Value = c
        .query_one("SELECT dims FROM barecount.kpi_events LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dims, serde_json::json!({"region": "east"}));
    // an unchanged rerun raises nothing new; a recovery is an event too
    c.query(
        "SELECT * FROM barecount.kpi_materialize('net', '2024-01-01', '2024-03-31')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.kpi_events").await,
        2
    );
    // each is also in the platform's events outbox, for the consumers of events_claim
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.events e JOIN barecount.kpi_events k \
               ON (e.payload->>'event_id')::bigint = k.event_id WHERE e.kind = 'threshold'"
        )
        .await,
        2
    );
    c.batch_execute("UPDATE gdp.orders SET amount = 30 WHERE order_date = '2024-03-10'")
        .await
        .unwrap();
    c.query("SELECT * FROM barecount.kpi_refresh('net')", &[])
        .await
        .unwrap();
    let last = events(
        "SELECT period, level, kind FROM barecount.kpi_events ORDER BY event_id DESC LIMIT 1",
    )
    .await;
    assert_eq!(last, [("2024-03".into(), "ok".into(), "recovery".into())]);
    assert_eq!(
        refused(c, "SELECT barecount.kpi_define('bad', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"measures\": {\"n\": \"count(*)\"}, \"thresholds\": [{\"measure\": \"x\", \"direction\": \"below\", \"warn\": 1}]}')").await,
        "22023"
    );
}

#[tokio::test]
async fn kpis_on_kpis_refresh_in_order_and_closed_periods_need_a_restatement() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, amount numeric);
         INSERT INTO gdp.orders (order_date, amount) SELECT DATE '2024-02-04' + i % 56, 1 FROM generate_series(1, 560) i;
         SELECT barecount.kpi_define('daily', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"day\", \"measures\": {\"net\": \"sum(amount)\"}}');
         SELECT * FROM barecount.kpi_materialize('daily', '2024-02-01', '2024-03-31');
         SELECT barecount.kpi_define('monthly', '{\"source\": \"kpi.daily\", \"time\": \"period_start\", \"grain\": \"month\", \"measures\": {\"net\": \"sum(net)\"}}');
         SELECT * FROM barecount.kpi_materialize('monthly', '2024-02-01', '2024-03-31');",
    )
    .await
    .unwrap();
    let before = count(
        c,
        "SELECT net::bigint FROM kpi.monthly WHERE period = '2024-03'",
    )
    .await;
    c.batch_execute("INSERT INTO gdp.orders VALUES ('default', '2024-03-15', 100)")
        .await
        .unwrap();
    // refreshing the downstream KPI refreshes the one it reads first
    c.query("SELECT * FROM barecount.kpi_refresh('monthly')", &[])
        .await
        .unwrap();
    assert_eq!(
        count(
            c,
            "SELECT net::bigint FROM kpi.monthly WHERE period = '2024-03'"
        )
        .await,
        before + 100
    );

    // a cycle is refused when defined
    c.batch_execute(
        "SELECT barecount.kpi_define('again', '{\"source\": \"kpi.monthly\", \"time\": \"period_start\", \"grain\": \"year\", \"measures\": {\"net\": \"sum(net)\"}}');
         SELECT * FROM barecount.kpi_materialize('again', '2024-01-01', '2024-12-31');",
    )
    .await
    .unwrap();
    assert_eq!(
        refused(c, "SELECT barecount.kpi_define('daily', '{\"source\": \"kpi.again\", \"time\": \"period_start\", \"grain\": \"day\", \"measures\": {\"net\": \"sum(net)\"}}')").await,
        "42P19"
    );

    // calendar KPIs: a closed period is changed only through a restatement
    c.batch_execute(
        "SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         SELECT barecount.kpi_define('nrf_net', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"calendar\": \"nrf\", \"grain\": \"period\", \"measures\": {\"net\": \"sum(amount)\"}}');
         SELECT * FROM barecount.kpi_materialize('nrf_net', '2024-02-01', '2024-03-31');
         SELECT barecount.period_close('nrf', 'period', '2024-02-10');",
    )
    .await
    .unwrap();
    assert_eq!(
        refused(
            c,
            "SELECT * FROM barecount.kpi_materialize('nrf_net', '2024-02-01', '2024-02-10')"
        )
        .await,
        "55000"
    );
    c.batch_execute("SELECT barecount.restatement('late orders', $$SELECT * FROM barecount.kpi_materialize('nrf_net', '2024-02-01', '2024-02-10')$$)")
        .await
        .unwrap();
}

#[tokio::test]
async fn threshold_events_are_sent_on_notify() {
    use futures::StreamExt;
    let db = fresh_db().await;
    let (listener, mut conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(messages.for_each(move |m| {
        if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = m {
            let _ = tx.send(n.payload().to_owned());
        }
        futures::future::ready(())
    }));
    listener
        .batch_execute("LISTEN barecount_kpi_events")
        .await
        .unwrap();

    db.client
        .batch_execute(
            "CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, amount numeric);
             INSERT INTO gdp.orders (order_date, amount) VALUES ('2024-05-10', 1);
             SELECT barecount.kpi_define('low', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"measures\": {\"net\": \"sum(amount)\"},
                 \"thresholds\": [{\"measure\": \"net\", \"direction\": \"below\", \"critical\": 10}]}');
             SELECT * FROM barecount.kpi_materialize('low', '2024-05-01', '2024-05-31');",
        )
        .await
        .unwrap();
    let payload = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .expect("listener ended");
    // LISTEN is open to every role: the channel carries a wake-up, the event is read back
    // through row-level security
    assert_eq!(payload, "");
    let row = listener
        .query_one("SELECT kpi, level, kind FROM barecount.kpi_events", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        ("low".into(), "critical".into(), "breach".into())
    );
}

#[tokio::test]
async fn a_quarterly_kpi_materializes_and_forecasts_its_next_quarters() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, region text, amount numeric);
         INSERT INTO gdp.orders (order_date, amount) SELECT date '2022-01-15' + 30 * i, 10 + i FROM generate_series(0, 35) i;
         SELECT barecount.kpi_define('q', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"quarter\", \"measures\": {\"net\": \"sum(amount)\"}}');
         SELECT * FROM barecount.kpi_materialize('q', '2022-01-01', '2024-12-31');",
    )
    .await
    .unwrap();
    assert_eq!(
        strings(
            c,
            "SELECT period || ' ' || period_end FROM kpi.q ORDER BY period_start LIMIT 2"
        )
        .await,
        ["2022-Q1 2022-03-31", "2022-Q2 2022-06-30"]
    );
    let last: String = c
        .query_one("SELECT max(period) FROM kpi.q", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, "2024-Q4");
    assert_eq!(
        strings(c, "SELECT period || ' ' || period_start FROM barecount.kpi_forecast('q', 3, 'drift') ORDER BY step").await,
        ["2025-Q1 2025-01-01", "2025-Q2 2025-04-01", "2025-Q3 2025-07-01"]
    );
}
