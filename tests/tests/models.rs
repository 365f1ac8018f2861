//! GDP models in a real Postgres: dependency order, contract checks on output, receipts naming
//! inputs, lineage from a published version back through models to raw batches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{count, fresh_db, order, refused, ORDERS_CONTRACT};
use serde_json::{json, Value};

const GDP_CONTRACT: &str = r#"{"apiVersion": "v3.0.2", "kind": "DataContract", "id": "gdp_orders", "version": "1.0.0",
  "schema": [{"name": "gdp_orders", "properties": [
     {"name": "order_id", "logicalType": "string", "required": true},
     {"name": "region", "logicalType": "string", "required": true, "logicalTypeOptions": {"enum": ["east", "west", "north", "south"]}},
     {"name": "amount", "logicalType": "number", "required": true, "logicalTypeOptions": {"minimum": 0}}]}]}"#;

#[tokio::test]
async fn models_run_in_dependency_order_with_contracts_and_receipts() {
    let db = fresh_db().await;
    let c = &db.client;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    c.query("SELECT barecount.contract_register($1)", &[&GDP_CONTRACT])
        .await
        .unwrap();
    let rows = json!([order("A1", "east", 10.0), order("A2", "west", 5.0), order("A3", "east", 1.0), {"order_id": "bad"}]);
    c.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows])
        .await
        .unwrap();

    c.batch_execute(
        "SELECT barecount.model_define('orders_clean',
            $m$SELECT payload->>'order_id' AS order_id, payload->>'region' AS region, (payload->>'amount')::numeric AS amount
                 FROM raw.orders__accepted$m$, 'gdp_orders');
         SELECT * FROM barecount.model_run('orders_clean');
         SELECT barecount.model_define('region_totals', 'SELECT region, sum(amount) AS total FROM gdp.orders_clean GROUP BY region');",
    )
    .await
    .unwrap();
    // running the downstream model runs what it reads first
    let ran: Vec<(String, i64)> = c
        .query(
            "SELECT model, row_count FROM barecount.model_run('region_totals')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        ran,
        [
            ("orders_clean".to_owned(), 3),
            ("region_totals".to_owned(), 2)
        ]
    );
    assert_eq!(
        count(
            c,
            "SELECT total::bigint FROM gdp.region_totals WHERE region = 'east'"
        )
        .await,
        11
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM gdp.orders_clean").await,
        3,
        "a rerun replaces, it does not append"
    );

    let inputs: Value = c
        .query_one("SELECT inputs->'inputs' FROM barecount.ledger WHERE event_type = 'model_run' AND subject = 'gdp.region_totals' ORDER BY seq DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inputs, json!(["gdp.orders_clean"]));

    // lineage from a published version back through both models to the raw batch and contract
    c.batch_execute("SELECT barecount.publish('totals', 'gdp.region_totals')")
        .await
        .unwrap();
    let up: Vec<String> = c
        .query("SELECT object FROM barecount.lineage_upstream('published.totals') ORDER BY depth, object", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for expected in [
        "gdp.region_totals",
        "gdp.orders_clean",
        "raw.orders",
        "batch:1",
        "contract:orders@1.0.0",
    ] {
        assert!(
            up.contains(&expected.to_owned()),
            "{expected} missing from {up:?}"
        );
    }

    // output that breaks the model's contract is refused and leaves gdp as it was
    c.batch_execute("SELECT barecount.model_define('negative', 'SELECT ''X1''::text AS order_id, ''east''::text AS region, -1::numeric AS amount', 'gdp_orders')")
        .await
        .unwrap();
    assert_eq!(
        refused(c, "SELECT * FROM barecount.model_run('negative')").await,
        "23514"
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM pg_class WHERE relname = 'negative'"
        )
        .await,
        0
    );
    assert_eq!(
        refused(c, "SELECT * FROM barecount.model_run('nope')").await,
        "42704"
    );
    assert_eq!(
        refused(
            c,
            "SELECT barecount.model_define('x', 'DELETE FROM raw.orders')"
        )
        .await,
        "22023"
    );
    assert_eq!(
        refused(
            c,
            "SELECT barecount.model_define('x', 'SELECT * FROM no_such_table')"
        )
        .await,
        "42P01"
    );
    assert!(c
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
}

#[tokio::test]
async fn a_cycle_of_models_is_refused() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "SELECT barecount.model_define('a', 'SELECT 1 AS x');
         SELECT * FROM barecount.model_run('a');
         SELECT barecount.model_define('b', 'SELECT x FROM gdp.a');
         SELECT * FROM barecount.model_run('b');
         SELECT barecount.model_define('a', 'SELECT x FROM gdp.b');",
    )
    .await
    .unwrap();
    let e = c
        .query("SELECT * FROM barecount.model_run('a')", &[])
        .await
        .unwrap_err();
    assert_eq!(barecount_tests::sqlstate(&e), "42P19");
    let msg = e.as_db_error().unwrap().message().to_owned();
    assert!(msg.contains("a -> b -> a"), "{msg}");
}
