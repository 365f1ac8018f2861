//! The evidence ledger and lineage, against a real Postgres: every tamper kind — done as a
//! superuser who switches the guards off — is found by ledger_verify; verify_dataset catches
//! changed rows; lineage walks a multi-step pipeline; obligations refuse a publish that lacks
//! evidence; every store-changing operation has its receipt, and an error leaves neither.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_core::ledger::StoredEntry;
use barecount_tests::{count, fresh_db, order, refused, sqlstate, ORDERS_CONTRACT};
use serde_json::{json, Value};
use tokio_postgres::{Client, GenericClient};

/// (ok, first_broken_seq, reason)
async fn verify<C: GenericClient>(
    c: &C,
    digest: Option<(i64, &str)>,
) -> (bool, Option<i64>, Option<String>) {
    let r = match digest {
        None => {
            c.query_one(
                "SELECT ok, first_broken_seq, reason FROM barecount.ledger_verify()",
                &[],
            )
            .await
        }
        Some((s, h)) => {
            c.query_one(
                "SELECT ok, first_broken_seq, reason FROM barecount.ledger_verify($1, $2)",
                &[&s, &h],
            )
            .await
        }
    }
    .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// A small pipeline: contract, three batches (one with a bad row), two publishes.
async fn pipeline(c: &Client) {
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([
            order("A1", "east", 10.0),
            order("A2", "east", 10.0)
        ])],
    )
    .await
    .unwrap();
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([order("A3", "east", 10.0), {"order_id": "bad"}])],
    )
    .await
    .unwrap();
    c.batch_execute(
        "SELECT barecount.publish('daily', 'SELECT tenant_id, payload->>''region'' AS region, count(*) AS n FROM raw.orders GROUP BY 1, 2')",
    )
    .await
    .unwrap();
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([order("A4", "east", 10.0)])],
    )
    .await
    .unwrap();
    c.batch_execute("SELECT barecount.publish('top', 'SELECT * FROM published.daily WHERE n > 1')")
        .await
        .unwrap();
}

/// Runs `tamper` as a superuser with the ledger's guards off, checks what verification says,
/// and rolls everything back.
async fn tampered(
    c: &mut Client,
    tamper: &str,
    digest: Option<(i64, &str)>,
) -> (bool, Option<i64>, Option<String>) {
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("ALTER TABLE barecount.ledger DISABLE TRIGGER USER")
        .await
        .unwrap();
    tx.batch_execute(tamper).await.unwrap();
    let r = verify(&tx, digest).await;
    tx.rollback().await.unwrap();
    r
}

/// Entry `seq`, its fields read back from the ledger's (generated) columns.
async fn stored(c: &Client, seq: i64) -> StoredEntry {
    let e = c.query_one(ENTRY, &[&seq]).await.unwrap();
    StoredEntry {
        seq,
        tenant_id: e.get("tenant_id"),
        actor: e.get("actor"),
        at: e.get("at_text"),
        event_type: e.get("event_type"),
        subject: e.get("subject"),
        inputs: e.get("inputs"),
        content_hash: e.get("content_hash"),
        prev_hash: e.get("prev_hash"),
        entry_hash: e.get("entry_hash"),
    }
}

/// A bytea literal of an entry's canonical encoding.
fn bytes_literal(e: &StoredEntry) -> String {
    let hex: String = e.canonical().iter().map(|b| format!("{b:02x}")).collect();
    format!("'\\x{hex}'::bytea")
}

/// SQL that stores `e` at its sequence number: its canonical bytes (every other column follows
/// from them) and the given hash.
fn rewrite(e: &StoredEntry, hash: &str) -> String {
    format!(
        "UPDATE barecount.ledger SET canonical = {}, entry_hash = '{hash}' WHERE seq = {};",
        bytes_literal(e),
        e.seq
    )
}

const ENTRY: &str = "SELECT seq, tenant_id, actor, event_type, subject, inputs, content_hash, prev_hash, entry_hash,
                            to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at_text
                       FROM barecount.ledger WHERE seq = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_kind_is_detected() {
    let mut db = fresh_db().await;
    pipeline(&db.client).await;
    // the pipeline ran as a BareCount admin; tampering is a superuser's
    assert_eq!(
        sqlstate(
            &db.client
                .batch_execute("UPDATE barecount.ledger SET entry_hash = 'x'")
                .await
                .unwrap_err()
        ),
        "42501"
    );
    let c = &mut db.superuser;
    let (ok, broken, _) = verify(c, None).await;
    assert!(ok, "untouched ledger verifies: broken at {broken:?}");
    let d = c
        .query_one("SELECT seq, entry_hash FROM barecount.ledger_digest()", &[])
        .await
        .unwrap();
    let (dseq, dhash): (i64, String) = (d.get(0), d.get(1));
    assert_eq!(
        dseq, 7,
        "register, three ingests, one quarantine, two publishes"
    );
    assert!(verify(c, Some((dseq, &dhash))).await.0);

    // the guards hold for everyone, the owner included, until a superuser switches them off
    assert_eq!(
        sqlstate(
            &c.batch_execute("UPDATE barecount.ledger SET entry_hash = 'x'")
                .await
                .unwrap_err()
        ),
        "2F002"
    );
    assert_eq!(
        sqlstate(
            &c.batch_execute("DELETE FROM barecount.ledger")
                .await
                .unwrap_err()
        ),
        "2F002"
    );
    assert_eq!(
        sqlstate(
            &c.batch_execute("TRUNCATE barecount.ledger")
                .await
                .unwrap_err()
        ),
        "2F002"
    );

    // the columns are computed from the hashed bytes: even with the guards off they cannot be
    // written on their own
    let e = tampered_err(c, "UPDATE barecount.ledger SET actor = 'x' WHERE seq = 2").await;
    assert_eq!(e, "428C9", "a generated column cannot be written");
    let e = tampered_err(
        c,
        "INSERT INTO barecount.ledger (seq, tenant_id, actor, at, event_type, subject, inputs, prev_hash, entry_hash, canonical)
         SELECT seq + 100, tenant_id, actor, at, event_type, subject, inputs, prev_hash, entry_hash, canonical FROM barecount.ledger WHERE seq = 1",
    )
    .await;
    assert_eq!(e, "428C9");
    // bytes that are not an entry are refused on the way in
    let e = tampered_err(
        c,
        "UPDATE barecount.ledger SET canonical = '\\x00'::bytea WHERE seq = 2",
    )
    .await;
    assert_eq!(e, "22P03");

    // changed payload: the entry's bytes rewritten with other inputs, its hash kept
    let mut e2 = stored(c, 2).await;
    let hash2 = e2.entry_hash.clone();
    e2.inputs["accepted"] = json!(999);
    let r = tampered(c, &rewrite(&e2, &hash2), None).await;
    assert_eq!((r.0, r.1), (false, Some(2)), "{r:?}");
    assert!(r.2.unwrap().contains("changed"));
    // deleted entry
    let r = tampered(c, "DELETE FROM barecount.ledger WHERE seq = 3", None).await;
    assert_eq!((r.0, r.1), (false, Some(3)), "{r:?}");
    assert!(r.2.unwrap().contains("missing"));
    // entries 3 and 4 swapped: their sequence numbers are in the hashed bytes, so the swap
    // rewrites both entries' bytes (each keeping its hash)
    let (mut e3, mut e4) = (stored(c, 3).await, stored(c, 4).await);
    let (h3, h4) = (e3.entry_hash.clone(), e4.entry_hash.clone());
    std::mem::swap(&mut e3.seq, &mut e4.seq);
    let r = tampered(
        c,
        &format!(
            "DELETE FROM barecount.ledger WHERE seq IN (3, 4); \
             INSERT INTO barecount.ledger (canonical, entry_hash) VALUES ({}, '{h3}'), ({}, '{h4}');",
            bytes_literal(&e3),
            bytes_literal(&e4)
        ),
        None,
    )
    .await;
    assert_eq!((r.0, r.1), (false, Some(3)), "{r:?}");

    // a forged entry, correctly hashed and linked, slipped in at 3 with the rest renumbered
    let prev = stored(c, 2).await.entry_hash;
    let mut forged = stored(c, 3).await;
    forged.subject = "batch:999".into();
    forged.prev_hash = prev;
    let forged_hash = forged.hash();
    let mut script = format!(
        "DELETE FROM barecount.ledger WHERE seq >= 3; \
         INSERT INTO barecount.ledger (canonical, entry_hash) VALUES ({}, '{forged_hash}');",
        bytes_literal(&forged)
    );
    for seq in 3..=dseq {
        let mut e = stored(c, seq).await;
        let hash = e.entry_hash.clone();
        e.seq += 1;
        script.push_str(&format!(
            "INSERT INTO barecount.ledger (canonical, entry_hash) VALUES ({}, '{hash}');",
            bytes_literal(&e)
        ));
    }
    let r = tampered(c, &script, None).await;
    assert_eq!(
        (r.0, r.1),
        (false, Some(4)),
        "the forged entry checks out, the one after it does not: {r:?}"
    );

    // truncation of the tail: consistent on its own, caught by the kept digest
    let r = tampered(c, "DELETE FROM barecount.ledger WHERE seq >= 7", None).await;
    assert!(r.0, "a cut tail is a valid shorter chain");
    let r = tampered(
        c,
        "DELETE FROM barecount.ledger WHERE seq >= 7",
        Some((dseq, &dhash)),
    )
    .await;
    assert_eq!((r.0, r.1), (false, Some(7)), "{r:?}");
    assert!(r.2.unwrap().contains("tail"));

    // a whole history rewritten consistently (entry 1's actor changed, everything rehashed):
    // only the kept digest can tell
    let mut script = String::new();
    let mut prev = barecount_core::ledger::GENESIS_HASH.to_owned();
    for seq in 1..=dseq {
        let mut e = stored(c, seq).await;
        if seq == 1 {
            e.actor = "mallory".into();
        }
        e.prev_hash = prev;
        let hash = e.hash();
        script.push_str(&rewrite(&e, &hash));
        prev = hash;
    }
    let r = tampered(c, &script, None).await;
    assert!(r.0, "a consistent rewrite passes without a digest: {r:?}");
    let r = tampered(c, &script, Some((dseq, &dhash))).await;
    assert_eq!((r.0, r.1), (false, Some(dseq)), "{r:?}");

    // the readable columns detached from the hashed bytes, then changed: the chain itself is
    // intact, but verification says the columns can no longer be trusted
    let r = tampered(
        c,
        "ALTER TABLE barecount.ledger ALTER COLUMN actor DROP EXPRESSION;
         UPDATE barecount.ledger SET actor = 'mallory' WHERE seq = 1;",
        None,
    )
    .await;
    assert!(!r.0, "{r:?}");
    assert!(
        r.2.as_deref().unwrap_or("").contains("column actor"),
        "{r:?}"
    );
    // a generating function replaced by one that lies
    let r = tampered(
        c,
        "CREATE OR REPLACE FUNCTION barecount._ledger_field(canonical bytea, field integer) RETURNS text
           LANGUAGE sql IMMUTABLE AS $$ SELECT 'mallory' $$;",
        None,
    )
    .await;
    assert!(!r.0, "{r:?}");
    assert!(
        r.2.as_deref().unwrap_or("").contains("_ledger_field"),
        "{r:?}"
    );

    // the functions that generate the columns: nobody is granted them (the admin gets 42501);
    // a superuser feeding them hostile bytes gets a specific error, never a crash
    for sql in [
        "SELECT barecount._ledger_seq(canonical) FROM barecount.ledger LIMIT 1",
        "SELECT barecount._ledger_field(canonical, 2) FROM barecount.ledger LIMIT 1",
        "SELECT barecount._ledger_at(canonical) FROM barecount.ledger LIMIT 1",
        "SELECT barecount._ledger_inputs(canonical) FROM barecount.ledger LIMIT 1",
    ] {
        let e = refused(&db.client, sql).await;
        assert_eq!(e, "42501", "{sql}");
    }
    let c = &mut db.superuser;
    for (sql, code) in [
        ("SELECT barecount._ledger_seq('\\x00'::bytea)", "22P03"),
        ("SELECT barecount._ledger_at(substring(canonical from 1 for 40)) FROM barecount.ledger LIMIT 1", "22P03"),
        ("SELECT barecount._ledger_inputs(canonical || '\\x00'::bytea) FROM barecount.ledger LIMIT 1", "22P03"),
        ("SELECT barecount._ledger_field(canonical, 4) FROM barecount.ledger LIMIT 1", "22023"),
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), code, "{sql}: {e:?}");
    }
    let e = c
        .batch_execute("SELECT barecount._ledger_seq('\\x00'::bytea)")
        .await
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        msg.contains("barecount.ledger") && msg.contains("tag"),
        "{msg}"
    );

    // and after all that, nothing was really changed
    assert!(verify(c, Some((dseq, &dhash))).await.0);
}

/// Runs `tamper` as a superuser with the ledger's guards off, expecting an error; returns its
/// SQLSTATE and rolls back.
async fn tampered_err(c: &mut Client, tamper: &str) -> String {
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("ALTER TABLE barecount.ledger DISABLE TRIGGER USER")
        .await
        .unwrap();
    let e = tx.batch_execute(tamper).await.unwrap_err();
    tx.rollback().await.unwrap();
    sqlstate(&e)
}

/// Verification reads the heap in physical order with hashing on a helper thread, in batches;
/// entries out of physical order (rewritten tuples, concurrent writers) wait for their turn.
/// Over a ledger of many batches it must still check every entry and place a break exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_of_a_long_ledger_checks_every_entry_and_places_breaks_exactly() {
    let mut db = fresh_db().await;
    pipeline(&db.client).await;
    let c = &mut db.superuser;
    c.batch_execute(
        "SELECT barecount._ledger_append('default', 'ingest', 'batch:' || g,
                jsonb_build_object('inputs', jsonb_build_array('contract:orders@1.0.0'),
                                   'outputs', jsonb_build_array('raw.orders'), 'n', g, 'pad', repeat('x', g % 300)))
           FROM generate_series(1, 3000) g",
    )
    .await
    .unwrap();
    let total: i64 = c
        .query_one("SELECT max(seq) FROM barecount.ledger", &[])
        .await
        .unwrap()
        .get(0);
    let checked = |r: &tokio_postgres::Row| -> (bool, i64, i64) { (r.get(0), r.get(1), r.get(2)) };
    let q = "SELECT ok, checked, bytes_hashed FROM barecount.ledger_verify()";
    let r = checked(&c.query_one(q, &[]).await.unwrap());
    let bytes: i64 = c
        .query_one(
            "SELECT sum(length(canonical))::bigint FROM barecount.ledger",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        r,
        (true, total, bytes),
        "every entry and every byte checked"
    );

    // the first 500 entries rewritten in place (same bytes): their tuples move to the end of
    // the heap, so a physical scan meets them last; verification still checks all in order
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(
        "ALTER TABLE barecount.ledger DISABLE TRIGGER USER;
         UPDATE barecount.ledger SET canonical = canonical WHERE seq <= 500;",
    )
    .await
    .unwrap();
    let r = checked(&tx.query_one(q, &[]).await.unwrap());
    assert_eq!(r, (true, total, bytes), "out of physical order");
    tx.rollback().await.unwrap();

    // a changed entry deep inside, and a missing one, are placed exactly
    let mut e = stored(c, 1700).await;
    let hash = e.entry_hash.clone();
    e.subject = "batch:forged".into();
    let r = tampered(c, &rewrite(&e, &hash), None).await;
    assert_eq!((r.0, r.1), (false, Some(1700)), "{r:?}");
    let r = tampered(c, "DELETE FROM barecount.ledger WHERE seq = 2900", None).await;
    assert_eq!((r.0, r.1), (false, Some(2900)), "{r:?}");
    assert!(r.2.unwrap().contains("missing"));
    let r = tampered(
        c,
        "UPDATE barecount.ledger SET canonical = canonical WHERE seq <= 500; DELETE FROM barecount.ledger WHERE seq = 20",
        None,
    )
    .await;
    assert_eq!((r.0, r.1), (false, Some(20)), "{r:?}");
}

#[tokio::test]
async fn verify_dataset_catches_changed_rows() {
    let db = fresh_db().await;
    let c = &db.client;
    pipeline(c).await;
    let r = c.query_one("SELECT ok, recorded_hash, computed_hash, row_count FROM barecount.verify_dataset('daily', 1)", &[]).await.unwrap();
    assert!(r.get::<_, bool>(0));
    assert_eq!(r.get::<_, String>(1), r.get::<_, String>(2));
    assert!(c
        .query_one("SELECT ok FROM barecount.verify_dataset('top')", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    db.superuser
        .batch_execute(
            "ALTER TABLE published.daily__v1 DISABLE TRIGGER USER;
         UPDATE published.daily__v1 SET n = n + 1;
         ALTER TABLE published.daily__v1 ENABLE TRIGGER USER;",
        )
        .await
        .unwrap();
    let r = c
        .query_one(
            "SELECT ok, recorded_hash, computed_hash FROM barecount.verify_dataset('daily', 1)",
            &[],
        )
        .await
        .unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_ne!(r.get::<_, String>(1), r.get::<_, String>(2));
    let e = c
        .query("SELECT * FROM barecount.verify_dataset('daily', 9)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
}

#[tokio::test]
async fn lineage_walks_a_multi_step_pipeline() {
    let db = fresh_db().await;
    let c = &db.client;
    pipeline(c).await;
    let up: Vec<(i32, String)> = c
        .query("SELECT depth, object FROM barecount.lineage_upstream('published.top') ORDER BY depth, object", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expect: Vec<(i32, String)> = [
        (1, "published.daily@1"),
        (2, "raw.orders"),
        (3, "batch:1"),
        (3, "batch:2"),
        // the contract made raw.orders (registration creates the store) and governed the batches
        (3, "contract:orders@1.0.0"),
    ]
    .iter()
    .map(|(d, o)| (*d, o.to_string()))
    .collect();
    assert_eq!(
        up, expect,
        "batch 3 came after published.daily@1 and is not upstream of it"
    );

    let down: Vec<String> = c
        .query(
            "SELECT object FROM barecount.lineage_downstream('batch:1') ORDER BY depth, object",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        down.contains(&"published.daily@1".to_owned())
            && down.contains(&"published.top@1".to_owned()),
        "{down:?}"
    );
    let shallow = count(
        c,
        "SELECT count(*) FROM barecount.lineage_upstream('published.top@1', 1)",
    )
    .await;
    assert_eq!(shallow, 1);
    let e = c
        .query(
            "SELECT * FROM barecount.lineage_upstream('published.nothing')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
}

#[tokio::test]
async fn obligations_refuse_a_publish_that_lacks_evidence() {
    let db = fresh_db().await;
    let c = &db.client;
    pipeline(c).await;
    c.batch_execute(
        "SELECT barecount.obligation_define('validated', 'publish', 'daily', '{\"require\": \"validated_batches\"}');
         SELECT barecount.obligation_define('modelled', 'publish', 'daily',
             '{\"require\": \"receipt\", \"event_type\": \"model_run\", \"subject\": \"gdp.orders\"}');",
    )
    .await
    .unwrap();
    let e = c
        .batch_execute("SELECT barecount.publish('daily', 'SELECT tenant_id, payload->>''region'' AS region FROM raw.orders')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000");
    let db_err = e.as_db_error().unwrap();
    let detail = db_err.detail().unwrap_or_default().to_owned();
    assert!(
        detail.contains("validated: batch:2 has 1 quarantined row(s) not replayed"),
        "{detail}"
    );
    assert!(
        detail.contains("modelled: no model_run receipt for gdp.orders"),
        "{detail}"
    );
    assert!(
        !detail.contains("batch:1 "),
        "clean batches are not listed: {detail}"
    );
    assert_eq!(
        count(
            c,
            "SELECT latest_version::bigint FROM barecount.datasets WHERE dataset = 'daily'"
        )
        .await,
        1
    );

    // as warnings the same gaps are only recorded, in the receipt
    c.batch_execute(
        "SELECT barecount.obligation_define('validated', 'publish', 'daily', '{\"require\": \"validated_batches\"}', 'warning');
         SELECT barecount.obligation_define('modelled', 'publish', 'daily',
             '{\"require\": \"receipt\", \"event_type\": \"model_run\", \"subject\": \"gdp.orders\"}', 'warning');",
    )
    .await
    .unwrap();
    c.batch_execute("SELECT barecount.publish('daily', 'SELECT tenant_id, payload->>''region'' AS region FROM raw.orders')")
        .await
        .unwrap();
    let warnings: Value = c
        .query_one("SELECT inputs->'obligation_warnings' FROM barecount.ledger WHERE subject = 'published.daily@2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(warnings.as_array().unwrap().len(), 2, "{warnings}");
    // other datasets are not bound by daily's obligations
    c.batch_execute("SELECT barecount.publish('other', 'SELECT 1 AS x')")
        .await
        .unwrap();
    for (sql, state) in [
        ("SELECT barecount.obligation_define('x', 'publish', '*', '{\"require\": \"magic\"}')", "22023"),
        ("SELECT barecount.obligation_define('x', 'publish', '*', '{\"require\": \"validated_batches\"}', 'fatal')", "22023"),
        ("SELECT barecount.obligation_define('x', 'export', '*', '{\"require\": \"validated_batches\"}')", "0A000"),
    ] {
        assert_eq!(sqlstate(&c.batch_execute(sql).await.unwrap_err()), state, "{sql}");
    }
}

#[tokio::test]
async fn every_operation_writes_its_receipt_and_an_error_leaves_neither() {
    let mut db = fresh_db().await;
    let c = &mut db.client;
    async fn last_entry(c: &Client) -> (String, String) {
        let r = c
            .query_one(
                "SELECT event_type, subject FROM barecount.ledger ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    assert_eq!(
        last_entry(c).await,
        ("contract_register".into(), "contract:orders@1.0.0".into())
    );
    let batch: i64 = c
        .query_one(
            "SELECT batch_id FROM barecount.ingest('orders', $1)",
            &[&json!([order("A1", "east", 10.0)])],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        last_entry(c).await,
        ("ingest".into(), format!("batch:{batch}"))
    );
    c.batch_execute("SELECT barecount.publish('d', 'SELECT 1 AS x')")
        .await
        .unwrap();
    assert_eq!(
        last_entry(c).await,
        ("publish".into(), "published.d@1".into())
    );
    c.batch_execute("SELECT barecount.obligation_define('o', 'publish', 'nothing', '{\"require\": \"validated_batches\"}')").await.unwrap();
    assert_eq!(
        last_entry(c).await,
        ("obligation_define".into(), "obligation:o".into())
    );
    let entries = count(c, "SELECT count(*) FROM barecount.ledger").await;

    // errors and rollbacks leave no receipt and no effect
    let e = c
        .batch_execute("SELECT barecount.publish('d', 'SELECT 1/0 AS x')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    let tx = c.transaction().await.unwrap();
    tx.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT.replace("1.0.0", "1.1.0")],
    )
    .await
    .unwrap();
    tx.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([order("A2", "east", 10.0), {"bad": 1}])],
    )
    .await
    .unwrap();
    tx.batch_execute("SELECT barecount.publish('d', 'SELECT 2 AS x')")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.ledger").await,
        entries
    );
    assert_eq!(count(c, "SELECT count(*) FROM raw.orders").await, 1);
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.quarantine").await,
        0
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.contracts").await,
        1
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.dataset_versions").await,
        1
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM pg_class WHERE relname = 'd__v2'").await,
        0
    );
    assert!(verify(c, None).await.0);
    // the next entry continues the chain without a gap
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([order("A3", "east", 10.0)])],
    )
    .await
    .unwrap();
    let (ok, _, _) = verify(c, None).await;
    assert!(ok);
    assert_eq!(
        count(c, "SELECT max(seq) FROM barecount.ledger").await,
        entries + 1
    );
}

#[tokio::test]
async fn a_publish_can_require_a_closed_fiscal_period() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         SELECT barecount.obligation_define('closed', 'publish', 'march',
             '{\"require\": \"receipt\", \"event_type\": \"period_close\", \"subject\": \"period:nrf/FY2024-P02\"}');",
    )
    .await
    .unwrap();
    let e = c
        .batch_execute("SELECT barecount.publish('march', 'SELECT 1 AS x')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000");
    assert!(e
        .as_db_error()
        .unwrap()
        .detail()
        .unwrap()
        .contains("no period_close receipt for period:nrf/FY2024-P02"));
    c.batch_execute("SELECT barecount.period_close('nrf', 'period', '2024-03-15')")
        .await
        .unwrap();
    c.batch_execute("SELECT barecount.publish('march', 'SELECT 1 AS x')")
        .await
        .unwrap();
}
