//! Ingest and quarantine end to end: every received row lands in the raw store, received =
//! accepted + quarantined for every batch, error text is capped, rows arrive as a jsonb array,
//! an array of jsonb or a staging table, and a replay against a fixed contract releases what
//! now passes, with a receipt naming each released row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{connect_as, count, fresh_db, login_role, order, sqlstate, ORDERS_CONTRACT};
use serde_json::{json, Value};

#[tokio::test]
async fn every_row_is_kept_and_replay_releases_what_now_passes() {
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let batches = [
        json!([
            order("A1", "east", 1.0),
            order("A2", "central", 2.0),
            order("A3", "west", -1.0)
        ]),
        json!([order("A4", "north", 4.0), {"order_id": "A5"}, "not even an object"]),
        json!([order("A6", "south", 6.0)]),
    ];
    for b in &batches {
        c.query("SELECT * FROM barecount.ingest('orders', $1)", &[b])
            .await
            .unwrap();
    }
    // received = accepted + quarantined, batch by batch, and in the stores
    let bad = count(c, "SELECT count(*) FROM barecount.batches WHERE rows_total <> rows_accepted + rows_quarantined").await;
    assert_eq!(bad, 0);
    for r in c
        .query(
            "SELECT batch_id, rows_total, rows_accepted, rows_quarantined FROM barecount.batches",
            &[],
        )
        .await
        .unwrap()
    {
        let (id, total, accepted, quarantined): (i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let raw = c.query_one("SELECT count(*), count(*) FILTER (WHERE valid) FROM raw.orders WHERE batch_id = $1", &[&id]).await.unwrap();
        assert_eq!(
            (raw.get::<_, i64>(0), raw.get::<_, i64>(1)),
            (total, accepted),
            "batch {id}"
        );
        let q = c
            .query_one(
                "SELECT count(*) FROM barecount.quarantine WHERE batch_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(q.get::<_, i64>(0), quarantined, "batch {id}");
    }
    assert_eq!(
        count(c, "SELECT count(*) FROM raw.orders").await,
        7,
        "every received row lands in raw"
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM raw.orders__accepted").await,
        3
    );
    let row: (String, String) = {
        let r = c
            .query_one(
                "SELECT contract, contract_version FROM raw.orders LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(row, ("orders".to_owned(), "1.0.0".to_owned()));
    assert_eq!(
        sqlstate(
            &db.superuser
                .batch_execute("DELETE FROM raw.orders")
                .await
                .unwrap_err()
        ),
        "2F002"
    );
    assert_eq!(
        sqlstate(
            &db.superuser
                .batch_execute("UPDATE raw.orders SET valid = true")
                .await
                .unwrap_err()
        ),
        "2F002"
    );

    // replay under the same contract releases nothing
    let r = c
        .query_one(
            "SELECT released, still_quarantined FROM barecount.quarantine_replay('orders')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (0, 4));

    // a new contract version admits region 'central'; replay releases exactly that row
    let v2 = ORDERS_CONTRACT
        .replace("version: 1.0.0", "version: 1.1.0")
        .replace(
            "enum: [east, west, north, south]",
            "enum: [east, west, north, south, central]",
        );
    assert_ne!(v2, ORDERS_CONTRACT);
    c.query("SELECT barecount.contract_register($1)", &[&v2])
        .await
        .unwrap();
    let r = c.query_one("SELECT released, still_quarantined, ledger_seq FROM barecount.quarantine_replay('orders')", &[]).await.unwrap();
    let (released, still, seq): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((released, still), (1, 3));
    let receipt: Value = c
        .query_one(
            "SELECT inputs FROM barecount.ledger WHERE seq = $1 AND event_type = 'replay'",
            &[&seq],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(receipt["contract_version"], "1.1.0");
    assert_eq!(
        receipt["released"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap(),
        &json!([2])
    );
    let q = c
        .query_one("SELECT payload->>'order_id', released_by_contract_version, released_seq FROM barecount.quarantine WHERE released_at IS NOT NULL", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            q.get::<_, String>(0),
            q.get::<_, String>(1),
            q.get::<_, i64>(2)
        ),
        ("A2".to_owned(), "1.1.0".to_owned(), seq)
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM raw.orders__accepted").await,
        4
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM raw.orders").await,
        7,
        "replay appends nothing to raw"
    );
    assert_eq!(
        sqlstate(
            &db.superuser
                .batch_execute("DELETE FROM barecount.quarantine")
                .await
                .unwrap_err()
        ),
        "2F002"
    );
    let e = c
        .query("SELECT * FROM barecount.quarantine_replay('nope')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
    assert!(c
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
}

#[tokio::test]
async fn error_text_is_capped_per_row_and_per_batch() {
    let db = fresh_db().await;
    // the caps are superuser settings (PGC_SUSET)
    let c = &db.superuser;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let awful = json!({"order_id": 1, "order_date": 2, "store_id": 3, "region": 4, "amount": "x", "quantity": "y"});
    c.batch_execute("SET barecount.max_errors_per_row = 2")
        .await
        .unwrap();
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([awful])],
    )
    .await
    .unwrap();
    let errors: Value = c
        .query_one("SELECT errors FROM barecount.quarantine", &[])
        .await
        .unwrap()
        .get(0);
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[2]["keyword"], "_truncated");

    c.batch_execute(
        "RESET barecount.max_errors_per_row; SET barecount.max_error_bytes_per_batch = 2048",
    )
    .await
    .unwrap();
    let rows: Vec<Value> = (0..200).map(|_| awful.clone()).collect();
    let r = c
        .query_one(
            "SELECT batch_id, quarantined FROM barecount.ingest('orders', $1)",
            &[&Value::Array(rows)],
        )
        .await
        .unwrap();
    let (batch, quarantined): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(
        quarantined, 200,
        "every bad row is still quarantined, whole"
    );
    let (bytes, truncated): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT sum(length(errors::text))::bigint, count(*) FILTER (WHERE errors->0->>'keyword' = '_truncated')
                   FROM barecount.quarantine WHERE batch_id = $1",
                &[&batch],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(truncated > 150, "{truncated} rows kept only the note");
    assert!(
        bytes < 2048 + 200 * 160,
        "error text stays bounded: {bytes} bytes"
    );
    assert_eq!(
        count(
            c,
            &format!("SELECT count(*) FROM raw.orders WHERE batch_id = {batch}")
        )
        .await,
        200
    );

    // only superusers move the caps
    let eng = login_role(c, "capper", &["barecount_engineer"], Some("default")).await;
    let e = connect_as(&db.url, &eng).await;
    e.batch_execute("SELECT barecount.version()").await.unwrap(); // loads the library and its settings
    assert_eq!(
        sqlstate(
            &e.batch_execute("SET barecount.max_errors_per_row = 100000")
                .await
                .unwrap_err()
        ),
        "42501"
    );
}

#[tokio::test]
async fn rows_arrive_as_array_of_jsonb_or_from_a_staging_table() {
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT accepted, quarantined FROM barecount.ingest_rows('orders', ARRAY[$1::jsonb, $2::jsonb])",
            &[&order("B1", "east", 1.0), &order("B2", "mars", 1.0)],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (1, 1));
    let e = c
        .query(
            "SELECT * FROM barecount.ingest_rows('orders', ARRAY[NULL::jsonb])",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22004");

    c.batch_execute(
        "CREATE TEMP TABLE staging (order_id text, order_date text, store_id text, region text, amount numeric, quantity int);
         INSERT INTO staging VALUES ('C1', '2024-01-01', 'S1', 'east', 5.5, 1), ('C2', '2024-01-02', 'S1', 'west', 7, 2),
                                    ('C3', 'yesterday', 'S1', 'west', 7, 2);",
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT accepted, quarantined FROM barecount.ingest_table('orders', 'staging')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (2, 1));
    let e = c
        .query(
            "SELECT * FROM barecount.ingest_table('orders', 'no_such_staging')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
}

const QUALITY: &str = "    description: One row per order.
    quality:
      - rule: unique
        property: order_id
        severity: blocking
      - rule: range
        property: amount
        max: 1000
      - rule: references
        property: store_id
        table: gdp.stores
        column: store_id
      - rule: rowCount
        min: 2
      - rule: freshness
        property: order_date
        maxAgeDays: 100000
";

#[tokio::test]
async fn quality_rules_record_results_and_a_blocking_failure_quarantines_the_batch() {
    let db = fresh_db().await;
    let c = &db.client;
    let contract = ORDERS_CONTRACT.replace("    description: One row per order.\n", QUALITY);
    assert_ne!(contract, ORDERS_CONTRACT);
    c.query("SELECT barecount.contract_register($1)", &[&contract])
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE gdp.stores AS SELECT 'default'::text AS tenant_id, 'S1'::text AS store_id",
    )
    .await
    .unwrap();

    let mut far = order("A2", "east", 2000.0);
    far["store_id"] = json!("S9");
    let r = c
        .query_one(
            "SELECT batch_id, accepted, quarantined FROM barecount.ingest('orders', $1)",
            &[&json!([order("A1", "east", 10.0), far])],
        )
        .await
        .unwrap();
    let (batch, accepted): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(accepted, 2, "warnings only record");
    let results: Vec<(String, bool, i64, Value)> = c
        .query("SELECT rule_name, passed, failing_count, failing_sample FROM barecount.quality_results WHERE batch_id = $1 ORDER BY rule_name", &[&batch])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let names: Vec<&str> = results.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "freshness:order_date",
            "range:amount",
            "references:store_id",
            "rowCount",
            "unique:order_id"
        ]
    );
    assert_eq!(
        (results[1].1, results[1].2, &results[1].3),
        (false, 1, &json!([2]))
    );
    assert_eq!(
        (results[2].1, results[2].2, &results[2].3),
        (false, 1, &json!(["S9"]))
    );
    assert!(results[0].1 && results[3].1 && results[4].1);

    // A1 again: unique against what is stored fails, and that rule blocks the whole batch
    let r = c
        .query_one(
            "SELECT batch_id, accepted, quarantined FROM barecount.ingest('orders', $1)",
            &[&json!([order("A1", "east", 1.0), order("A3", "east", 1.0)])],
        )
        .await
        .unwrap();
    let (batch2, accepted, quarantined): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((accepted, quarantined), (0, 2));
    let keyword: String = c
        .query_one("SELECT errors->0->>'keyword' FROM barecount.quarantine WHERE batch_id = $1 AND row_no = 2", &[&batch2])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keyword, "quality");
    let unique_failing = count(c, &format!("SELECT failing_count FROM barecount.quality_results WHERE batch_id = {batch2} AND rule_name = 'unique:order_id'")).await;
    assert_eq!(unique_failing, 1);
    assert_eq!(
        count(c, "SELECT count(*) FROM raw.orders__accepted").await,
        2
    );

    // a contract with a rule BareCount cannot evaluate is refused at registration
    let bad = ORDERS_CONTRACT.replace("version: 1.0.0", "version: 1.1.0").replace(
        "    description: One row per order.\n",
        "    description: One row per order.\n    quality:\n      - rule: references\n        property: store_id\n        table: pg_catalog.pg_authid\n        column: rolname\n",
    );
    assert_eq!(
        sqlstate(
            &c.batch_execute(&format!("SELECT barecount.contract_register($${bad}$$)"))
                .await
                .unwrap_err()
        ),
        "22023"
    );
}

#[tokio::test]
async fn a_row_serde_cannot_hold_is_quarantined_alone() {
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let batch = format!(
        r#"[{}, {{"order_id": "D2", "amount": 1e400}}, {deep}, {}]"#,
        order("D1", "east", 1.0),
        order("D3", "west", 2.0)
    );
    let r = c
        .query_one(
            "SELECT batch_id, accepted, quarantined FROM barecount.ingest('orders', $1::text::jsonb)",
            &[&batch],
        )
        .await
        .unwrap();
    let batch_id: i64 = r.get(0);
    assert_eq!((r.get::<_, i64>(1), r.get::<_, i64>(2)), (2, 2));
    // every row is kept, the two unreadable ones as sent and with the reason
    assert_eq!(
        count(
            c,
            &format!("SELECT count(*) FROM raw.orders WHERE batch_id = {batch_id}")
        )
        .await,
        4
    );
    let q = c
        .query(
            "SELECT row_no, payload->>'order_id', errors->0->>'keyword', errors->0->>'message', jsonb_typeof(payload) \
               FROM barecount.quarantine WHERE batch_id = $1 ORDER BY row_no",
            &[&batch_id],
        )
        .await
        .unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].get::<_, i32>(0), 2);
    assert_eq!(q[0].get::<_, Option<String>>(1).as_deref(), Some("D2"));
    assert_eq!(q[0].get::<_, String>(2), "json");
    assert!(
        q[0].get::<_, String>(3).contains("out of range"),
        "{}",
        q[0].get::<_, String>(3)
    );
    assert_eq!(q[1].get::<_, i32>(0), 3);
    assert_eq!(q[1].get::<_, String>(4), "array");
    assert!(
        q[1].get::<_, String>(3).contains("nested"),
        "{}",
        q[1].get::<_, String>(3)
    );
    // the receipt counts them
    let received = count(
        c,
        &format!("SELECT rows_total FROM barecount.batches WHERE batch_id = {batch_id}"),
    )
    .await;
    assert_eq!(received, 4);

    // the same through an array of jsonb, and in validate_batch
    let r = c
        .query_one(
            "SELECT accepted, quarantined FROM barecount.ingest_rows('orders', ARRAY[$1::jsonb, '{\"amount\": -1e999}'::jsonb])",
            &[&order("D4", "east", 1.0)],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (1, 1));
    let verdicts: Vec<bool> = c
        .query(
            "SELECT valid FROM barecount.validate_batch('orders', $1::text::jsonb) ORDER BY row_no",
            &[&batch],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(verdicts, [true, false, false, true]);

    // a replay reads them again and keeps them in quarantine, without an internal error
    let r = c
        .query_one(
            "SELECT released, still_quarantined FROM barecount.quarantine_replay('orders')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (0, 3));
}

/// Every raw row's batch exists for its tenant: checked once per statement (a trigger over the
/// inserted rows) since a per-row foreign key cost ~40 % of an ingest. Rows written past
/// BareCount — by a superuser here — with a batch that does not exist, or another tenant's, are
/// refused with 23503, the whole statement.
#[tokio::test]
async fn raw_rows_without_their_batch_are_refused_per_statement() {
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT batch_id FROM barecount.ingest('orders', $1)",
            &[&json!([order("A1", "east", 10.0)])],
        )
        .await
        .unwrap();
    let batch: i64 = r.get(0);
    let su = &db.superuser;
    su.batch_execute("SELECT barecount.tenant_create('acme', 'Acme')")
        .await
        .unwrap();
    let insert = |tenant: &str, batch: i64, row: i32| {
        format!(
            "INSERT INTO raw.orders (tenant_id, batch_id, row_no, payload, contract, contract_version, valid)
             VALUES ('{tenant}', {batch}, {row}, '{{}}', 'orders', '1.0.0', true)"
        )
    };
    for sql in [
        insert("default", 999_999, 1),
        insert("acme", batch, 7),
        format!(
            "{}, ('default', {batch}, 9, '{{}}', 'orders', '1.0.0', true)",
            insert("default", 424_242, 8)
        ),
    ] {
        let e = su.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "23503", "{sql}: {e:?}");
        let msg = e.as_db_error().unwrap().message().to_owned();
        assert!(
            msg.contains("raw.orders") && msg.contains("does not exist"),
            "{msg}"
        );
    }
    assert_eq!(
        count(su, "SELECT count(*) FROM raw.orders").await,
        1,
        "nothing half-written"
    );
    // the quarantine likewise
    let e = su
        .batch_execute(
            "INSERT INTO barecount.quarantine (tenant_id, batch_id, dataset, row_no, payload, errors)
             VALUES ('default', 777777, 'orders', 1, '{}', '[]')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23503", "{e:?}");
    // a row of an existing batch of its own tenant is accepted (the check is not a blanket refusal)
    su.batch_execute(&insert("default", batch, 2))
        .await
        .unwrap();
    assert_eq!(count(su, "SELECT count(*) FROM raw.orders").await, 2);
}

/// Quarantined rows keep their own error documents (bound as one array, matched by position),
/// and the quarantine receipt lists them as ranges.
#[tokio::test]
async fn quarantined_rows_keep_their_own_errors_and_the_receipt_lists_ranges() {
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let rows = json!([
        order("A1", "east", 10.0),
        {"order_id": "B2"},
        order("A3", "nowhere", 10.0),
        order("A4", "west", 10.0),
        order("A5", "east", -1.0),
    ]);
    let r = c
        .query_one(
            "SELECT batch_id, quarantined FROM barecount.ingest('orders', $1)",
            &[&rows],
        )
        .await
        .unwrap();
    let (batch, quarantined): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(quarantined, 3);
    let q = c
        .query(
            "SELECT row_no, payload->>'order_id', errors::text FROM barecount.quarantine WHERE batch_id = $1 ORDER BY row_no",
            &[&batch],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String)> = q.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(2, "B2".into()), (3, "A3".into()), (5, "A5".into())]);
    let errors: Vec<String> = q.iter().map(|r| r.get(2)).collect();
    assert!(errors[0].contains("required"), "{}", errors[0]);
    assert!(errors[1].contains("region"), "{}", errors[1]);
    assert!(errors[2].contains("amount"), "{}", errors[2]);
    let receipt: Value = c
        .query_one(
            "SELECT inputs FROM barecount.ledger WHERE event_type = 'quarantine' AND subject = $1",
            &[&format!("quarantine:batch:{batch}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(receipt["row_ranges"], json!([[2, 3], [5, 5]]));
    assert_eq!(receipt["count"], json!(3));
}
