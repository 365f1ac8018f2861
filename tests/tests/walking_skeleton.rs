//! Raw rows to a Flight SQL client, through every layer, against a real Postgres and a real
//! barecount-flight on an ephemeral port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{Criteria, FlightDescriptor};
use barecount_flight::client;
use barecount_tests::{fresh_db, sample_orders, Flight, ORDERS_CONTRACT};
use futures::TryStreamExt;
use prost::Message;
use serde_json::json;

const GDP_AND_KPI: &str = "
    CREATE TABLE gdp.orders AS
      SELECT tenant_id, payload->>'order_id' AS order_id, (payload->>'order_date')::date AS order_date,
             payload->>'region' AS region, (payload->>'amount')::numeric(12,2) AS amount,
             (payload->>'quantity')::int AS quantity
        FROM raw.orders__accepted;
    CREATE TABLE kpi.sales_by_region AS
      SELECT tenant_id, region, count(*) AS orders, sum(amount)::numeric(14,2) AS net_sales
        FROM gdp.orders GROUP BY tenant_id, region;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_rows_reach_a_flight_sql_client() {
    let db = fresh_db().await;
    let pg = &db.client;

    // contract
    let row = pg
        .query_one(
            "SELECT contract, version, created FROM barecount.contract_register($1)",
            &[&ORDERS_CONTRACT],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2)
        ),
        ("orders".into(), "1.0.0".into(), true)
    );

    // ingest: 500 good rows and three bad ones
    let mut rows = sample_orders(500);
    rows.push(json!({"order_id": "B1", "order_date": "2024-02-30", "store_id": "S1", "region": "east", "amount": 1, "quantity": 1}));
    rows.push(json!({"order_id": "B2", "order_date": "2024-03-01", "region": "mars", "amount": -5, "quantity": 1}));
    rows.push(json!("not an object"));
    let rows = serde_json::Value::Array(rows);
    let r = pg
        .query_one(
            "SELECT batch_id, accepted, quarantined FROM barecount.ingest('orders', $1)",
            &[&rows],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(1), r.get::<_, i64>(2)), (500, 3));
    let q = pg
        .query("SELECT row_no, jsonb_array_length(errors), errors::text FROM barecount.quarantine ORDER BY row_no", &[])
        .await
        .unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(q[0].get::<_, i32>(0), 501);
    assert!(
        q[0].get::<_, String>(2).contains("format"),
        "bad date is reported: {}",
        q[0].get::<_, String>(2)
    );
    assert!(
        q[1].get::<_, i32>(1) >= 3,
        "B2 has a missing store_id, a bad region and a negative amount"
    );

    // GDP, KPI, publish
    pg.batch_execute(GDP_AND_KPI).await.unwrap();
    let p = pg
        .query_one("SELECT version, row_count, content_hash, ledger_seq FROM barecount.publish('sales_by_region', 'kpi.sales_by_region')", &[])
        .await
        .unwrap();
    let (version, row_count, hash, seq): (i32, i64, String, i64) =
        (p.get(0), p.get(1), p.get(2), p.get(3));
    assert_eq!((version, row_count), (1, 4));

    // the ledger is one unbroken chain: register, ingest, quarantine, the two tables made by
    // hand in gdp and kpi (store_write receipts), publish
    let chain = pg
        .query(
            "SELECT seq, event_type, prev_hash, entry_hash FROM barecount.ledger ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let events: Vec<String> = chain.iter().map(|r| r.get(1)).collect();
    assert_eq!(
        events,
        [
            "contract_register",
            "ingest",
            "quarantine",
            "store_write",
            "store_write",
            "publish"
        ]
    );
    for pair in chain.windows(2) {
        assert_eq!(pair[1].get::<_, String>(2), pair[0].get::<_, String>(3));
    }
    assert_eq!(chain.last().unwrap().get::<_, i64>(0), seq);

    let expected_cents: i64 = pg
        .query_one(
            "SELECT (sum(net_sales) * 100)::bigint FROM published.sales_by_region",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);

    // Flight SQL
    let flight = Flight::start(&db.url).await;
    let (schema, batches) = client::query(
        &flight.url,
        &flight.auth,
        "SELECT region, orders, net_sales FROM sales_by_region ORDER BY region",
    )
    .await
    .unwrap();
    assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(14, 2));
    let tenant_col: String = pg
        .query_one(
            "SELECT string_agg(DISTINCT tenant_id, ',') FROM published.sales_by_region",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant_col, "default", "published rows carry their tenant");
    let total_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total_rows, 4);
    let mut cents = 0_i64;
    let mut orders = 0_i64;
    for b in &batches {
        assert_eq!(
            b.schema().as_ref(),
            &schema,
            "stream schema is the advertised schema"
        );
        let amounts = b.column(2).as_primitive::<Decimal128Type>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            cents += amounts.value(i) as i64;
            orders += counts.value(i);
        }
        let regions = b.column(0).as_string::<i32>();
        assert!(!regions.is_null(0));
    }
    assert_eq!(cents, expected_cents);
    assert_eq!(orders, 500);

    // plain Flight: ListFlights carries the receipt, GetFlightInfo + DoGet by path
    let listings = client::list(&flight.url, &flight.auth).await.unwrap();
    assert_eq!(listings.len(), 1);
    assert_eq!(listings[0].dataset, "sales_by_region");
    assert_eq!(listings[0].content_hash, hash);
    assert_eq!(listings[0].ledger_seq, seq);

    let mut plain = client::plain_client(&flight.url, &flight.token)
        .await
        .unwrap();
    let info = plain
        .get_flight_info(FlightDescriptor::new_path(vec!["sales_by_region".into()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.total_records, 4);
    let advertised = info.clone().try_decode_schema().unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut sql_client = client::sql_client(&flight.url, &flight.auth).await.unwrap();
    let got: Vec<arrow::record_batch::RecordBatch> = sql_client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    assert_eq!(got[0].schema().as_ref(), &advertised);
    let names: Vec<&str> = advertised
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        ["region", "orders", "net_sales"],
        "tenant_id is implied, not served"
    );
    let listed: Vec<_> = plain
        .list_flights(Criteria::default())
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_pinned_and_errors_are_specific() {
    let db = fresh_db().await;
    let pg = &db.client;
    pg.batch_execute(
        "CREATE TABLE gdp.t AS SELECT 'default'::text AS tenant_id, g AS n, 'r' || (g % 3) AS region FROM generate_series(1, 10) g;
         SELECT barecount.publish('tiny', 'gdp.t');
         SELECT barecount.publish('tiny', 'SELECT tenant_id, n, region FROM gdp.t WHERE n <= 3');",
    )
    .await
    .unwrap();
    let flight = Flight::start(&db.url).await;

    let count = |sql: &'static str| {
        let url = flight.url.clone();
        let auth = flight.auth.clone();
        async move {
            let (_, b) = client::query(&url, &auth, sql).await.unwrap();
            b[0].column(0).as_primitive::<Int64Type>().value(0)
        }
    };
    assert_eq!(count("SELECT count(*) FROM tiny").await, 3);
    assert_eq!(count("SELECT count(*) FROM tiny__v1").await, 10);
    assert_eq!(count("SELECT count(*) FROM published.tiny__v2").await, 3);

    let err = client::query(&flight.url, &flight.auth, "SELECT * FROM no_such_dataset")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no_such_dataset"), "{err:#}");
    let err = client::query(&flight.url, &flight.auth, "SELEC nonsense")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").to_lowercase().contains("sql"), "{err:#}");

    let mut plain = client::plain_client(&flight.url, &flight.token)
        .await
        .unwrap();
    let status = plain
        .get_flight_info(FlightDescriptor::new_path(vec!["tiny".into(), "9".into()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = plain
        .get_flight_info(FlightDescriptor::new_path(vec!["nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // a forged ticket is refused
    let mut sql_client = client::sql_client(&flight.url, &flight.auth).await.unwrap();
    let forged = TicketStatementQuery {
        statement_handle: b"eyJ0IjoiYSJ9.00".to_vec().into(),
    };
    let status = sql_client
        .do_get(arrow_flight::Ticket::new(forged.as_any().encode_to_vec()))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(status.to_string().contains("ticket"), "{status}");

    flight.stop().await;
}
