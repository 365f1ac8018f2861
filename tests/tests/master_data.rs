//! Master data: reference entities under a contract, kept as slowly changing dimensions of type
//! 2, joined to facts as of their date, duplicates merged by survivorship with receipts. Run as
//! a tenant's engineer; the attacks as another tenant, a reader, a revoked role.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::*;
use tokio_postgres::Client;

const STORES: &str = r#"
apiVersion: v3.0.2
kind: DataContract
id: stores
version: 1.0.0
status: active
schema:
  - name: stores
    properties:
      - name: store_id
        logicalType: string
        required: true
      - name: region
        logicalType: string
      - name: manager
        logicalType: string
      - name: email
        logicalType: string
      - name: phone
        logicalType: string
"#;

/// (inserted, updated, unchanged, ended)
async fn upsert(
    c: &Client,
    rows: &str,
    source: &str,
    at: &str,
    full: bool,
) -> (i32, i32, i32, i32) {
    let r = c
        .query_one(
            "SELECT inserted, updated, unchanged, ended FROM barecount.master_upsert('stores', $1::text::jsonb, $2, $3::text::timestamptz, $4)",
            &[&rows, &source, &at, &full],
        )
        .await
        .unwrap_or_else(|e| panic!("{rows}: {:?}", e.as_db_error()));
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// A tenant with an engineer (contract registered), and the admin.
async fn tenant_with_engineer(db: &TestDb, tenant: &str) -> Client {
    db.client
        .execute("SELECT barecount.tenant_create($1, $1)", &[&tenant])
        .await
        .unwrap();
    let eng = login_role(
        &db.client,
        &format!("md_{tenant}"),
        &["barecount_engineer"],
        Some(tenant),
    )
    .await;
    let e = connect_as(&db.url, &eng).await;
    e.execute("SELECT barecount.contract_register($1)", &[&STORES])
        .await
        .unwrap();
    e
}

#[tokio::test]
async fn a_master_entity_keeps_its_history_and_facts_join_the_version_of_their_date() {
    let db = fresh_db().await;
    let e = tenant_with_engineer(&db, "acme").await;
    let define = "SELECT barecount.master_define('stores', 'stores', '{store_id}', '{region,manager}')::bigint";
    assert_eq!(count(&e, define).await, 1);
    assert_eq!(count(&e, define).await, 1, "the same definition again");

    assert_eq!(
        upsert(
            &e,
            r#"[{"store_id":"S1","region":"east","manager":"Ann"},
                       {"store_id":"S2","region":"west","manager":"Bea"},
                       {"store_id":"S3","region":"south"}]"#,
            "erp",
            "2024-01-01",
            false
        )
        .await,
        (3, 0, 0, 0)
    );
    // S1 moves region; S2 only changes an untracked attribute (no new version); S3 the same
    assert_eq!(
        upsert(
            &e,
            r#"[{"store_id":"S1","region":"north","manager":"Ann"},
                       {"store_id":"S2","region":"west","manager":"Bea","phone":"555"},
                       {"store_id":"S3","region":"south"}]"#,
            "erp",
            "2024-06-01",
            false
        )
        .await,
        (0, 1, 2, 0)
    );
    // a full snapshot without S3 end-dates it (a delete keeps history); S1 changes manager
    assert_eq!(
        upsert(
            &e,
            r#"[{"store_id":"S1","region":"north","manager":"Cid"},
                       {"store_id":"S2","region":"west","manager":"Bea"}]"#,
            "erp",
            "2024-09-01",
            true
        )
        .await,
        (0, 1, 1, 1)
    );
    assert_eq!(
        strings(
            &e,
            "SELECT format('%s v%s %s %s..%s %s/%s', record_key, version, attributes->>'region', valid_from::date,
                           coalesce(valid_to::date::text, ''), change, coalesce(ended_by, '')) FROM barecount.master_history('stores')"
        )
        .await,
        [
            "S1 v1 east 2024-01-01..2024-06-01 insert/update",
            "S1 v2 north 2024-06-01..2024-09-01 update/update",
            "S1 v3 north 2024-09-01.. update/",
            "S2 v1 west 2024-01-01.. insert/",
            "S3 v1 south 2024-01-01..2024-09-01 insert/delete",
        ]
    );
    // as of a date
    let as_of = |d: &str| {
        format!("SELECT record_key || ' ' || (attributes->>'region') || ' ' || coalesce(attributes->>'manager', '-') FROM barecount.master_as_of('stores', '{d}')")
    };
    assert_eq!(
        strings(&e, &as_of("2024-03-01")).await,
        ["S1 east Ann", "S2 west Bea", "S3 south -"]
    );
    assert_eq!(
        strings(&e, &as_of("2024-12-01")).await,
        ["S1 north Cid", "S2 west Bea"]
    );
    assert_eq!(
        strings(
            &e,
            "SELECT barecount.master_at('stores', 'S1', '2024-07-15')->>'region'"
        )
        .await,
        ["north"]
    );
    // facts joined to the record valid at their own date (the join helper)
    assert_eq!(
        strings(
            &e,
            "WITH facts(order_id, store_id, d) AS (VALUES ('o1', 'S1', timestamptz '2024-02-10'), ('o2', 'S1', '2024-07-01'),
                                                           ('o3', 'S1', '2024-10-01'), ('o4', 'S3', '2024-05-31'), ('o5', 'S3', '2024-09-02'))
             SELECT f.order_id || ' ' || coalesce(h.attributes->>'region', 'none') || ' ' || coalesce(h.attributes->>'manager', '-')
               FROM facts f LEFT JOIN barecount.master_history('stores') h
                 ON h.record_key = f.store_id AND f.d >= h.valid_from AND (h.valid_to IS NULL OR f.d < h.valid_to)
              ORDER BY f.order_id"
        )
        .await,
        ["o1 east Ann", "o2 north Ann", "o3 north Cid", "o4 south -", "o5 none -"]
    );
    // deleting one record; again is a no-op
    let end = "SELECT barecount.master_end('stores', 'S2', '2024-10-01')::text";
    assert_eq!(strings(&e, end).await, ["true"]);
    assert_eq!(strings(&e, end).await, ["false"]);
    // history is never rewritten: a change dated before the latest one is refused, nothing written
    let before = count(&e, "SELECT count(*) FROM barecount.master_records").await;
    assert_eq!(
        outcome(&e, r#"SELECT barecount.master_upsert('stores', '[{"store_id":"S1","region":"east"}]', 'erp', '2024-05-01')"#).await,
        "22023"
    );
    assert_eq!(
        count(&e, "SELECT count(*) FROM barecount.master_records").await,
        before
    );
    // every call a receipt, the chain verifies
    assert_eq!(
        strings(
            &e,
            "SELECT event_type || ' ' || subject FROM barecount.ledger WHERE subject LIKE 'master:%' ORDER BY seq"
        )
        .await,
        [
            "master_define master:stores@1",
            "master_upsert master:stores",
            "master_upsert master:stores",
            "master_upsert master:stores",
            "master_end master:stores/S2",
        ]
    );
    assert!(chain_verifies(&db.client).await);
}

#[tokio::test]
async fn duplicates_merge_into_a_survivor_by_each_rule_with_a_receipt() {
    let db = fresh_db().await;
    let e = tenant_with_engineer(&db, "acme").await;
    let rows = r#"[{"store_id":"S3","email":"Ann@X.com ","region":"south","phone":"555"},
                   {"store_id":"S4","email":"ann@x.com","region":"east","manager":"Bo"},
                   {"store_id":"S5","email":"zed@x.com","region":"west"}]"#;
    let cases = [
        // most complete: S3 and S4 have four attributes each; the tie goes to the more recent
        // (S4 came later), which gains S3's phone
        (r#"{"rule": "most_complete"}"#, "S4", "east", "Bo", "555"),
        // most recent: S4's row came later
        (r#"{"rule": "most_recent"}"#, "S4", "east", "Bo", "555"),
        // source priority: S3 came from the ERP, which wins over the CRM; it gains S4's manager
        (
            r#"{"rule": "source_priority", "sources": ["erp", "crm"]}"#,
            "S3",
            "south",
            "Bo",
            "555",
        ),
    ];
    for (i, (rule, survivor, region, manager, phone)) in cases.into_iter().enumerate() {
        let entity = format!("stores{i}");
        e.execute(
            "SELECT barecount.master_define($1, 'stores', '{store_id}', '{region,manager}', '[[\"email\"]]', $2::text::jsonb)",
            &[&entity, &rule],
        )
        .await
        .unwrap();
        let first = r#"[{"store_id":"S3","email":"Ann@X.com ","region":"south","phone":"555"},{"store_id":"S5","email":"zed@x.com","region":"west"}]"#;
        e.execute(
            "SELECT barecount.master_upsert($1, $2::text::jsonb, 'erp', '2024-01-01')",
            &[&entity, &first],
        )
        .await
        .unwrap();
        e.execute(
            "SELECT barecount.master_upsert($1, $2::text::jsonb, 'crm', '2024-02-01')",
            &[&entity, &rows],
        )
        .await
        .unwrap();
        let merged = e
            .query(
                "SELECT survivor, merged, version FROM barecount.master_merge($1, '2024-03-01')",
                &[&entity],
            )
            .await
            .unwrap();
        assert_eq!(merged.len(), 1, "{rule}: one group (S5 has no twin)");
        assert_eq!(merged[0].get::<_, String>(0), survivor, "{rule}");
        let loser = if survivor == "S3" { "S4" } else { "S3" };
        assert_eq!(merged[0].get::<_, Vec<String>>(1), [loser], "{rule}");
        let now = e
            .query_one(
                "SELECT attributes->>'region', attributes->>'manager', attributes->>'phone', change
                   FROM barecount.master_history($1) WHERE record_key = $2 AND is_current",
                &[&entity, &survivor],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                now.get::<_, String>(0),
                now.get::<_, String>(1),
                now.get::<_, String>(2),
                now.get::<_, String>(3)
            ),
            (
                region.to_string(),
                manager.to_string(),
                phone.to_string(),
                "merge".to_string()
            ),
            "{rule}"
        );
        assert_eq!(
            strings(
                &e,
                &format!("SELECT coalesce(ended_by, '') || ' ' || coalesce(merged_into, '') FROM barecount.master_history('{entity}') WHERE record_key = '{loser}'")
            )
            .await,
            [format!("merge {survivor}")]
        );
        // the receipt names every record merged and the rule
        let receipt = e
            .query_one(
                "SELECT inputs FROM barecount.ledger WHERE event_type = 'master_merge' AND subject = $1",
                &[&format!("master:{entity}/{survivor}")],
            )
            .await
            .unwrap()
            .get::<_, serde_json::Value>(0);
        assert_eq!(
            receipt["inputs"],
            serde_json::json!([
                format!("master:{entity}/S3@1"),
                format!("master:{entity}/S4@1")
            ])
        );
        assert_eq!(
            receipt["rule"],
            serde_json::from_str::<serde_json::Value>(rule).unwrap()
        );
        // merging again finds nothing
        assert_eq!(
            count(
                &e,
                &format!("SELECT count(*) FROM barecount.master_merge('{entity}', '2024-03-02')")
            )
            .await,
            0
        );
    }
}

#[tokio::test]
async fn bad_master_input_is_refused_and_nothing_is_half_written() {
    let db = fresh_db().await;
    let e = tenant_with_engineer(&db, "acme").await;
    e.batch_execute(
        "SELECT barecount.master_define('stores', 'stores', '{store_id}', '{region}', '[[\"email\"]]');
         SELECT barecount.master_upsert('stores', '[{\"store_id\":\"S1\",\"region\":\"east\"}]', 'erp', '2024-01-01')",
    )
    .await
    .unwrap();
    let cases = [
        ("SELECT barecount.master_define('Stores!', 'stores', '{store_id}', '{region}')", "42602"),
        ("SELECT barecount.master_define('shops', 'nosuch', '{store_id}', '{region}')", "42704"),
        ("SELECT barecount.master_define('shops', 'stores', '{}', '{region}')", "22023"),
        ("SELECT barecount.master_define('shops', 'stores', '{store_id}', NULL)", "22023"),
        ("SELECT barecount.master_define('shops', 'stores', '{\"a b\"}', '{region}')", "42602"),
        ("SELECT barecount.master_define('shops', 'stores', '{store_id}', '{region}', '[\"email\"]')", "22023"),
        ("SELECT barecount.master_define('shops', 'stores', '{store_id}', '{region}', '[[]]')", "22023"),
        ("SELECT barecount.master_define('shops', 'stores', '{store_id}', '{region}', '[]', '{\"rule\": \"loudest\"}')", "22023"),
        ("SELECT barecount.master_define('shops', 'stores', '{store_id}', '{region}', '[]', '{\"rule\": \"source_priority\"}')", "22023"),
        ("SELECT barecount.master_define('stores', 'stores', '{email}', '{region}')", "55000"),
        ("SELECT barecount.master_upsert('nosuch', '[]')", "42704"),
        ("SELECT barecount.master_upsert('stores', '{\"store_id\":\"S1\"}')", "22023"),
        ("SELECT barecount.master_upsert('stores', '[1]')", "22023"),
        ("SELECT barecount.master_upsert('stores', '[{\"region\":\"east\"}]')", "23502"),
        ("SELECT barecount.master_upsert('stores', '[{\"store_id\":\"S9\",\"region\":5}]')", "23514"),
        ("SELECT barecount.master_upsert('stores', '[{\"store_id\":\"S9\"},{\"store_id\":\"S9\"}]')", "23505"),
        ("SELECT barecount.master_upsert('stores', '[]', 'bad source!')", "22023"),
        ("SELECT barecount.master_upsert('stores', '[]', 'erp', NULL)", "22004"),
        ("SELECT barecount.master_end('stores', 'S1', '2023-01-01')", "22023"),
        ("SELECT barecount.master_merge('stores', '2023-01-01')", "22023"),
        ("SELECT * FROM barecount.master_as_of('nosuch')", "42704"),
        ("SELECT * FROM barecount.master_history('nosuch')", "42704"),
    ];
    for (sql, want) in cases {
        assert_eq!(outcome(&e, sql).await, want, "{sql}");
    }
    // a valid row before an invalid one: neither lands
    assert_eq!(
        outcome(&e, "SELECT barecount.master_upsert('stores', '[{\"store_id\":\"S7\",\"region\":\"east\"},{\"store_id\":\"S8\",\"region\":7}]', 'erp', '2024-02-01')").await,
        "23514"
    );
    assert_eq!(
        strings(
            &e,
            "SELECT record_key FROM barecount.master_history('stores')"
        )
        .await,
        ["S1"]
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'master_upsert'"
        )
        .await,
        1
    );
}

/// Another tenant, a reader, direct writes, a revoked role and a suspended tenant.
#[tokio::test]
async fn master_data_stays_with_its_tenant_and_its_writers() {
    let db = fresh_db().await;
    let e = tenant_with_engineer(&db, "acme").await;
    e.batch_execute(
        "SELECT barecount.master_define('stores', 'stores', '{store_id}', '{region}');
         SELECT barecount.master_upsert('stores', '[{\"store_id\":\"S1\",\"region\":\"east\"}]')",
    )
    .await
    .unwrap();
    // another tenant sees no such entity, no rows, and cannot write into acme's
    let rival = tenant_with_engineer(&db, "rival").await;
    assert_eq!(
        outcome(&rival, "SELECT * FROM barecount.master_as_of('stores')").await,
        "42704"
    );
    assert_eq!(
        outcome(&rival, "SELECT barecount.master_at('stores', 'S1', now())").await,
        "ok"
    );
    assert_eq!(
        strings(
            &rival,
            "SELECT coalesce(barecount.master_at('stores', 'S1', now())::text, 'none')"
        )
        .await,
        ["none"]
    );
    assert_eq!(
        count(&rival, "SELECT count(*) FROM barecount.master_records").await,
        0
    );
    assert_eq!(
        count(&rival, "SELECT count(*) FROM barecount.master_entities").await,
        0
    );
    assert_eq!(
        outcome(&rival, "SELECT barecount.master_upsert('stores', '[{\"store_id\":\"S1\",\"region\":\"west\"}]')").await,
        "42704"
    );
    // rival defines its own "stores": a name of its own
    rival
        .batch_execute(
            "SELECT barecount.master_define('stores', 'stores', '{store_id}', '{region}')",
        )
        .await
        .unwrap();
    assert_eq!(
        strings(
            &e,
            "SELECT attributes->>'region' FROM barecount.master_as_of('stores')"
        )
        .await,
        ["east"]
    );
    // the catalog tables take no direct writes, even from the tenant's engineer
    for sql in [
        "UPDATE barecount.master_records SET attributes = '{}'",
        "DELETE FROM barecount.master_records",
        "INSERT INTO barecount.master_entities (tenant_id, entity, dataset, key_columns, tracked) VALUES ('acme', 'x', 'stores', '{a}', '{a}')",
    ] {
        assert_eq!(outcome(&e, sql).await, "42501", "{sql}");
    }
    // a reader neither writes nor reads master data
    let reader = login_role(&db.client, "md_reader", &["barecount_reader"], Some("acme")).await;
    let r = connect_as(&db.url, &reader).await;
    for sql in [
        "SELECT barecount.master_upsert('stores', '[]')",
        "SELECT barecount.master_define('x', 'stores', '{store_id}', '{region}')",
        "SELECT barecount.master_merge('stores')",
        "SELECT * FROM barecount.master_as_of('stores')",
        "SELECT * FROM barecount.master_records",
    ] {
        assert_eq!(outcome(&r, sql).await, "42501", "{sql}");
    }
    // a revoked role: its tenant mapping removed
    let gone = login_role(&db.client, "md_gone", &["barecount_engineer"], Some("acme")).await;
    db.client
        .execute(
            "SELECT barecount.tenant_remove_member($1::text::regrole)",
            &[&gone],
        )
        .await
        .unwrap();
    let g = connect_as(&db.url, &gone).await;
    assert_eq!(
        outcome(&g, "SELECT * FROM barecount.master_as_of('stores')").await,
        "42501"
    );
    assert_eq!(
        outcome(&g, "SELECT barecount.master_upsert('stores', '[]')").await,
        "42501"
    );
    // a suspended tenant
    db.client
        .batch_execute("SELECT barecount.tenant_suspend('acme', 'audit')")
        .await
        .unwrap();
    assert_eq!(
        outcome(&e, "SELECT * FROM barecount.master_as_of('stores')").await,
        "55000"
    );
}
