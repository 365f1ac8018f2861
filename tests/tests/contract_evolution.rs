//! Contract evolution and registry errors in a real Postgres: each compatibility mode accepts
//! and refuses what its rule says, with a report naming every breaking change; transitive modes
//! check every earlier version; contract_diff and contract_unsupported_fields; every bad input
//! gets its own SQLSTATE and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{fresh_db, sqlstate, ORDERS_CONTRACT};
use serde_json::json;
use tokio_postgres::Client;

/// The sample contract at `version`, with `edit` applied to its text.
fn version(v: &str, edit: impl Fn(String) -> String) -> String {
    let text = ORDERS_CONTRACT.replace("version: 1.0.0", &format!("version: {v}"));
    let edited = edit(text.clone());
    assert!(
        v == "1.0.0" || edited != ORDERS_CONTRACT,
        "the edit must change something"
    );
    edited
}

const NEW_OPTIONAL: &str = "      - name: customer_id\n";
const COUPON: &str =
    "      - name: coupon\n        logicalType: string\n      - name: customer_id\n";
const COUPON_REQUIRED: &str = "      - name: coupon\n        logicalType: string\n        required: true\n      - name: customer_id\n";

async fn register(c: &Client, text: &str) -> Result<bool, tokio_postgres::Error> {
    c.query_one(
        "SELECT created FROM barecount.contract_register($1)",
        &[&text],
    )
    .await
    .map(|r| r.get(0))
}

async fn set_mode(c: &Client, mode: &str) {
    c.execute(
        "SELECT barecount.contract_set_compatibility('orders', $1)",
        &[&mode],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn compatibility_modes_accept_and_refuse_by_their_rules() {
    let db = fresh_db().await;
    let c = &db.client;
    assert!(register(c, ORDERS_CONTRACT).await.unwrap());

    // BACKWARD (default), closed model: an optional property may be added...
    let with_coupon = version("1.1.0", |t| t.replace(NEW_OPTIONAL, COUPON));
    assert!(register(c, &with_coupon).await.unwrap());
    // ...a required one may not: rows written under 1.1.0 lack it
    let required = version("1.2.0", |t| {
        t.replace(NEW_OPTIONAL, COUPON_REQUIRED)
            .replace("minimum: 0", "minimum: 5")
    });
    let e = register(c, &required).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P15");
    let db_err = e.as_db_error().unwrap();
    assert!(
        db_err
            .message()
            .contains("not BACKWARD compatible: 2 breaking change(s)"),
        "{}",
        db_err.message()
    );
    let detail = db_err.detail().unwrap();
    assert!(
        detail.contains("/orders/properties/coupon/required became_required"),
        "{detail}"
    );
    assert!(
        detail.contains("/orders/properties/amount/minimum minimum_changed (old 0, new 5)"),
        "{detail}"
    );
    assert_eq!(
        c.query_one(
            "SELECT count(*) FROM barecount.contracts WHERE version = '1.2.0'",
            &[]
        )
        .await
        .unwrap()
        .get::<_, i64>(0),
        0,
        "a refused version writes nothing"
    );

    // FORWARD: widening is refused, narrowing accepted
    set_mode(c, "FORWARD").await;
    let wider = version("1.3.0", |t| {
        t.replace(NEW_OPTIONAL, COUPON)
            .replace("minimum: 0", "minimum: -10")
    });
    assert_eq!(sqlstate(&register(c, &wider).await.unwrap_err()), "42P15");
    let narrower = version("1.3.0", |t| {
        t.replace(NEW_OPTIONAL, COUPON)
            .replace("minimum: 0", "minimum: 1")
    });
    assert!(register(c, &narrower).await.unwrap());

    // FULL: neither
    set_mode(c, "FULL").await;
    let widen_enum = version("1.4.0", |t| {
        t.replace(NEW_OPTIONAL, COUPON)
            .replace("minimum: 0", "minimum: 1")
            .replace(
                "enum: [east, west, north, south]",
                "enum: [east, west, north, south, central]",
            )
    });
    assert_eq!(
        sqlstate(&register(c, &widen_enum).await.unwrap_err()),
        "42P15"
    );
    let same_shape = version("1.4.0", |t| {
        t.replace(NEW_OPTIONAL, COUPON)
            .replace("minimum: 0", "minimum: 1")
            .replace("name: retail-data", "name: retail-analytics")
    });
    assert!(register(c, &same_shape).await.unwrap());

    // NONE: anything
    set_mode(c, "NONE").await;
    let anything = version("2.0.0", |t| {
        t.replace("logicalType: number", "logicalType: string")
    });
    assert!(register(c, &anything).await.unwrap());

    // transitive modes check every earlier version, not only the latest below
    set_mode(c, "BACKWARD").await;
    let back_to_number = version("2.1.0", |t| {
        t.replace("logicalType: number", "logicalType: string")
            .replace(NEW_OPTIONAL, COUPON)
    });
    set_mode(c, "BACKWARD_TRANSITIVE").await;
    let e = register(c, &back_to_number).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P15");
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap()
            .contains("against 1."),
        "{:?}",
        e.as_db_error().unwrap().detail()
    );
    set_mode(c, "BACKWARD").await;
    assert!(
        register(c, &back_to_number).await.unwrap(),
        "against 2.0.0 alone it is compatible"
    );

    assert_eq!(
        sqlstate(
            &c.execute(
                "SELECT barecount.contract_set_compatibility('orders', 'SIDEWAYS')",
                &[]
            )
            .await
            .unwrap_err()
        ),
        "22023"
    );
    assert_eq!(
        sqlstate(
            &c.execute(
                "SELECT barecount.contract_set_compatibility('nope', 'FULL')",
                &[]
            )
            .await
            .unwrap_err()
        ),
        "42704"
    );
}

#[tokio::test]
async fn validation_sees_a_version_registered_earlier_in_the_same_message() {
    let db = fresh_db().await;
    let c = &db.client;
    register(c, ORDERS_CONTRACT).await.unwrap();
    let row = r#"{"order_id": "A1", "order_date": "2024-01-01", "store_id": "S1", "region": "east", "amount": 1, "quantity": 1, "coupon": "X"}"#;
    let v2 = version("1.1.0", |t| t.replace(NEW_OPTIONAL, COUPON));
    // three statements in one simple-query message share a statement timestamp
    let script = format!(
        "SELECT barecount.validate('orders', '{row}')::text;
         SELECT created::text FROM barecount.contract_register($c${v2}$c$);
         SELECT barecount.validate('orders', '{row}')::text;"
    );
    let values: Vec<String> = c
        .simple_query(&script)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["false", "true", "true"]);
}

#[tokio::test]
async fn diff_unsupported_fields_and_bad_input() {
    let db = fresh_db().await;
    let c = &db.client;
    register(c, ORDERS_CONTRACT).await.unwrap();
    register(c, &version("1.1.0", |t| t.replace(NEW_OPTIONAL, COUPON)))
        .await
        .unwrap();
    let rows = c
        .query("SELECT dataset, path, kind, breaks_backward, breaks_forward FROM barecount.contract_diff('orders', '1.0.0', '1.1.0')", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "/orders/properties/coupon");
    assert_eq!(rows[0].get::<_, String>(2), "optional_property_added");
    assert_eq!(
        (rows[0].get::<_, bool>(3), rows[0].get::<_, bool>(4)),
        (false, true)
    );

    let fields: Vec<String> = c
        .query(
            "SELECT barecount.contract_unsupported_fields('orders')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(fields, ["team"], "kept verbatim, listed, never dropped");
    let doc: serde_json::Value = c
        .query_one(
            "SELECT document->'team' FROM barecount.contracts WHERE version = '1.0.0'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(doc, json!({"name": "retail-data"}));

    // validate by contract name (single dataset) or pinned version, like by dataset
    let row = json!({"order_id": "A1", "order_date": "2024-01-01", "store_id": "S1", "region": "east", "amount": 1, "quantity": 1, "coupon": "X"});
    assert!(c
        .query_one("SELECT barecount.validate('orders', $1)", &[&row])
        .await
        .unwrap()
        .get::<_, bool>(0));
    assert!(
        !c.query_one("SELECT barecount.validate('orders@1.0.0', $1)", &[&row])
            .await
            .unwrap()
            .get::<_, bool>(0),
        "1.0.0 is closed to coupon"
    );

    // set-based: a whole batch at once
    let batch = json!([row, {"order_id": "bad"}, "scalar"]);
    let verdicts: Vec<(i32, bool, i32)> = c
        .query("SELECT row_no, valid, jsonb_array_length(errors) FROM barecount.validate_batch('orders', $1) ORDER BY row_no", &[&batch])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(verdicts.len(), 3);
    assert_eq!((verdicts[0].0, verdicts[0].1, verdicts[0].2), (1, true, 0));
    assert!(!verdicts[1].1 && verdicts[1].2 >= 5, "{verdicts:?}");
    assert!(!verdicts[2].1);

    let ledger_before: i64 = c
        .query_one("SELECT count(*) FROM barecount.ledger", &[])
        .await
        .unwrap()
        .get(0);
    for (sql, state) in [
        (
            "SELECT barecount.contract_register('kind: [unclosed')",
            "22P02",
        ),
        (
            "SELECT barecount.json_schema_validate('{\"type\": 12}', '1')",
            "42P17",
        ),
        (
            "SELECT * FROM barecount.contract_diff('orders', '1.0.0', '9.9.9')",
            "42704",
        ),
        (
            "SELECT barecount.contract_unsupported_fields('nope')",
            "42704",
        ),
        ("SELECT barecount.validate('orders@9.9.9', '{}')", "42704"),
        ("SELECT barecount.validate('orders', '[1, 2]')", "22023"),
        (
            "SELECT * FROM barecount.ingest('no_such_dataset', '[]')",
            "42P01",
        ),
        (
            "SELECT * FROM barecount.ingest('orders', '\"one row\"')",
            "22023",
        ),
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), state, "{sql}: {e:?}");
        assert!(!e.as_db_error().unwrap().message().is_empty());
    }
    let ledger_after: i64 = c
        .query_one("SELECT count(*) FROM barecount.ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger_before, ledger_after, "failed calls write nothing");
}

#[tokio::test]
async fn numeric_bounds_are_judged_by_what_they_admit() {
    let db = fresh_db().await;
    let c = &db.client;
    assert!(register(c, ORDERS_CONTRACT).await.unwrap());
    // BACKWARD: amount >= 0 before; amount > -1 admits every old value
    let looser = version("1.1.0", |t| t.replace("minimum: 0", "exclusiveMinimum: -1"));
    assert!(register(c, &looser).await.unwrap());
    // amount > -1 before; amount > 0 no longer admits 0
    let tighter = version("1.2.0", |t| t.replace("minimum: 0", "exclusiveMinimum: 0"));
    let e = register(c, &tighter).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P15", "{e}");
    assert!(
        e.as_db_error()
            .and_then(|d| d.detail())
            .unwrap_or_default()
            .contains("exclusiveMinimum_changed"),
        "{e:?}"
    );
    // FORWARD mirrors it: narrowing is fine, widening is not
    set_mode(c, "FORWARD").await;
    assert!(register(c, &tighter).await.unwrap());
    let wider = version("1.3.0", |t| t.replace("minimum: 0", "minimum: -5"));
    assert_eq!(sqlstate(&register(c, &wider).await.unwrap_err()), "42P15");
}
