//! Flight `DoPut` ingest against a real server and cluster: Arrow batches land as one batch
//! under the contract with one receipt, invalid rows quarantined, the answer carrying the
//! counts and the ledger sequence; the same put again lands nothing; Flight SQL bulk ingest
//! (`CommandStatementIngest`, what ADBC's `adbc_ingest` sends) lands too. And the attacks: a
//! token without the `ingest` scope, another tenant's token, a revoked token, a reader's and an
//! engineer's password, hostile dataset names and a put with no rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::{
    CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use barecount_flight::client::{self, Auth};
use barecount_tests::{
    api_token, code_of, connect_as, count, fresh_db, login_role, Flight, ORDERS_CONTRACT,
};
use std::sync::Arc;
use tonic::Code;

/// `n` order rows starting at `first`; every row whose number is in `bad` has region "mars".
fn orders(first: i32, n: i32, bad: &[i32]) -> RecordBatch {
    let ids: Vec<String> = (first..first + n).map(|i| format!("F{i}")).collect();
    let regions: Vec<&str> = (first..first + n)
        .map(|i| {
            if bad.contains(&i) {
                "mars"
            } else {
                ["east", "west", "north"][i as usize % 3]
            }
        })
        .collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("order_id", Arc::new(StringArray::from(ids))),
        (
            "order_date",
            Arc::new(Date32Array::from_iter_values(
                (first..first + n).map(|i| 19_723 + i % 60),
            )),
        ),
        (
            "store_id",
            Arc::new(StringArray::from_iter_values(
                (first..first + n).map(|i| format!("S{}", i % 4)),
            )),
        ),
        ("region", Arc::new(StringArray::from(regions))),
        (
            "amount",
            Arc::new(
                Decimal128Array::from_iter_values(
                    (first..first + n).map(|i| 1_000 + i128::from(i)),
                )
                .with_precision_and_scale(12, 2)
                .unwrap(),
            ),
        ),
        (
            "quantity",
            Arc::new(Int32Array::from_iter_values(
                (first..first + n).map(|i| 1 + i % 5),
            )),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_land_once_with_receipts_for_the_credentials_tenant_only() {
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute(
        "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('globex', 'Globex');",
    )
    .await
    .unwrap();
    let a_eng = login_role(su, "fi_eng", &["barecount_engineer"], Some("acme")).await;
    let a_reader = login_role(su, "fi_reader", &["barecount_reader"], Some("acme")).await;
    su.batch_execute(&format!(
        "ALTER ROLE {a_eng} PASSWORD 'eng secret'; ALTER ROLE {a_reader} PASSWORD 'reader secret'"
    ))
    .await
    .unwrap();
    let e = connect_as(&db.url, &a_eng).await;
    e.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let ingest = api_token(su, "acme", &["ingest"]).await;
    let read_only = api_token(su, "acme", &["read"]).await;
    let globex = api_token(su, "globex", &["ingest", "read"]).await;
    let revoked = api_token(su, "acme", &["ingest"]).await;

    let flight = Flight::start(&db.url).await;
    let url = flight.url.clone();
    let auth = Auth::Token(ingest.clone());

    // 40 rows in two batches, two of them invalid: one put, one batch, one receipt
    let landed = client::put(
        &url,
        &auth,
        "orders",
        None,
        vec![orders(0, 25, &[3]), orders(25, 15, &[30])],
    )
    .await
    .unwrap();
    assert_eq!(landed["rows"], 40, "{landed}");
    assert_eq!(landed["accepted"], 38, "{landed}");
    assert_eq!(landed["quarantined"], 2, "{landed}");
    assert_eq!(landed["already_landed"], false, "{landed}");
    let seq = landed["ledger_seq"].as_i64().unwrap();
    let batch = landed["batch_id"].as_i64().unwrap();
    assert_eq!(
        count(&e, "SELECT count(*) FROM raw.orders__accepted").await,
        38
    );
    assert_eq!(
        count(&e, "SELECT count(*) FROM barecount.quarantine").await,
        2
    );
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    let r = e
        .query_one(
            "SELECT event_type, subject FROM barecount.ledger WHERE seq = $1",
            &[&seq],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1)),
        ("ingest".to_owned(), format!("batch:{batch}"))
    );
    // typed columns arrive as the contract expects: dates, exact decimals, integers
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM raw.orders__accepted WHERE payload->>'order_id' = 'F1' \
               AND payload->>'order_date' = '2024-01-02' AND (payload->'amount')::text = '10.01' \
               AND jsonb_typeof(payload->'quantity') = 'number'"
        )
        .await,
        1
    );
    assert!(e
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));

    // the same put again: recognised, nothing lands
    let again = client::put(
        &url,
        &auth,
        "orders",
        None,
        vec![orders(0, 25, &[3]), orders(25, 15, &[30])],
    )
    .await
    .unwrap();
    assert_eq!(again["already_landed"], true, "{again}");
    assert_eq!(again["batch_id"], landed["batch_id"]);
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    // an idempotency key names a put whatever its rows
    let k1 = client::put(
        &url,
        &auth,
        "orders",
        Some("feed-2024-01-05"),
        vec![orders(100, 5, &[])],
    )
    .await
    .unwrap();
    assert_eq!(
        (k1["accepted"].as_i64(), k1["already_landed"].as_bool()),
        (Some(5), Some(false))
    );
    let k1b = client::put(
        &url,
        &auth,
        "orders",
        Some("feed-2024-01-05"),
        vec![orders(200, 7, &[])],
    )
    .await
    .unwrap();
    assert_eq!(
        (k1b["batch_id"].clone(), k1b["already_landed"].as_bool()),
        (k1["batch_id"].clone(), Some(true))
    );
    assert_eq!(
        count(&e, "SELECT count(*) FROM raw.orders__accepted").await,
        43
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.connector_reads WHERE source = 'flight'"
        )
        .await,
        2
    );

    // Flight SQL bulk ingest (ADBC adbc_ingest, append mode): the answer is the rows accepted
    let mut sql = client::sql_client(&url, &auth).await.unwrap();
    let append = CommandStatementIngest {
        table: "orders".into(),
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Fail as i32,
            if_exists: TableExistsOption::Append as i32,
        }),
        ..Default::default()
    };
    let n = sql
        .execute_ingest(
            append.clone(),
            futures::stream::iter(vec![Ok(orders(300, 6, &[301]))]),
        )
        .await
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(
        count(&e, "SELECT count(*) FROM raw.orders__accepted").await,
        48
    );
    let replace = CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create as i32,
            if_exists: TableExistsOption::Replace as i32,
        }),
        ..append.clone()
    };
    let err = sql
        .execute_ingest(
            replace,
            futures::stream::iter(vec![Ok(orders(400, 1, &[]))]),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument, "{err}");
    assert!(
        err.to_string()
            .contains("TABLE_EXISTS_OPTION_REPLACE is not supported"),
        "{err}"
    );

    // passwords: an engineer may ingest, a reader may not
    let eng = Auth::Password {
        user: a_eng.clone(),
        password: "eng secret".into(),
    };
    let r = client::put(&url, &eng, "orders", None, vec![orders(500, 2, &[])])
        .await
        .unwrap();
    assert_eq!(r["accepted"], 2);
    let reader = Auth::Password {
        user: a_reader.clone(),
        password: "reader secret".into(),
    };
    let err = client::put(&url, &reader, "orders", None, vec![orders(600, 2, &[])])
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied, "{err:#}");
    assert!(format!("{err:#}").contains("ingest scope"), "{err:#}");

    // a read-only token: refused, nothing written
    let err = client::put(
        &url,
        &Auth::Token(read_only),
        "orders",
        None,
        vec![orders(700, 2, &[])],
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied, "{err:#}");
    // another tenant's token names only its own datasets: globex has no orders contract, and
    // acme's store is untouched
    let err = client::put(
        &url,
        &Auth::Token(globex),
        "orders",
        None,
        vec![orders(800, 2, &[])],
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), Code::NotFound, "{err:#}");
    assert!(format!("{err:#}").contains("has no contract"), "{err:#}");
    // a revoked token
    let id = revoked.split('_').nth(1).unwrap().to_owned();
    su.execute("SELECT barecount.token_revoke($1)", &[&id])
        .await
        .unwrap();
    let err = client::put(
        &url,
        &Auth::Token(revoked),
        "orders",
        None,
        vec![orders(900, 2, &[])],
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), Code::Unauthenticated, "{err:#}");
    // hostile dataset names and shapes
    for bad in [
        "orders; DROP TABLE raw.orders",
        "../orders",
        "raw.orders",
        "Orders\"--",
        "",
    ] {
        let err = client::put(&url, &auth, bad, None, vec![orders(1000, 1, &[])])
            .await
            .unwrap_err();
        let code = code_of(&err);
        assert!(
            matches!(code, Code::NotFound | Code::InvalidArgument),
            "{bad}: {err:#}"
        );
    }
    let empty = orders(0, 0, &[]);
    let err = client::put(&url, &auth, "orders", None, vec![empty])
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument, "{err:#}");
    assert!(format!("{err:#}").contains("no rows"), "{err:#}");

    assert_eq!(
        count(&e, "SELECT count(*) FROM raw.orders__accepted").await,
        50,
        "only the allowed puts landed"
    );
    assert_eq!(
        count(
            &db.superuser,
            "SELECT count(*) FROM raw.orders WHERE tenant_id <> 'acme'"
        )
        .await,
        0
    );
    assert!(e
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    flight.stop().await;
}
