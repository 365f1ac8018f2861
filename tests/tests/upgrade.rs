//! Upgrades: a database made by the released 0.1.0 (its own install script, kept in
//! pg_extension/sql/upgrade/) and filled with the demo, moved to this version by
//! `ALTER EXTENSION barecount UPDATE`, keeps every row and every answer, its ledger chain verifies
//! across the upgrade, the upgrade is a receipt, and the schema it ends with is exactly a fresh
//! install's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::*;
use tokio_postgres::Client;

const PREVIOUS: &str = "0.1.0";

/// The demo's own SQL (sql/demo/), as the admin role runs it: the contract, about 6,000 orders
/// with a few invalid rows, a GDP model, a KPI table and its publication.
async fn fill_with_the_demo(c: &Client) {
    c.execute(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    for file in [
        include_str!("../../sql/demo/01_sample_orders.sql"),
        include_str!("../../sql/demo/02_gdp_kpi_publish.sql"),
    ] {
        // psql's `\g /dev/null` only hides a result; the demo (run as a superuser) comments
        // its KPI table, which the admin no longer owns once BareCount has taken it over
        let sql: Vec<&str> = file
            .lines()
            .filter(|l| !l.starts_with("COMMENT ON TABLE kpi."))
            .collect();
        c.batch_execute(&sql.join("\n").replace("\\g /dev/null", ";"))
            .await
            .unwrap_or_else(|e| panic!("the demo's SQL: {:?}", e.as_db_error()));
    }
}

/// What the demo database answers: catalog, data, evidence, lineage, validation. Each answer is
/// one text line, so a difference reads as a diff.
const ANSWERS: &[&str] = &[
    "SELECT string_agg(format('%s %s %s', tenant_id, name, created_at), '; ' ORDER BY tenant_id) FROM barecount.tenants",
    "SELECT string_agg(format('%s@%s %s', contract, version, source_sha256), ', ' ORDER BY contract, version) FROM barecount.contracts",
    "SELECT string_agg(format('%s %s %s %s', batch_id, rows_total, rows_accepted, rows_quarantined), '; ' ORDER BY batch_id) FROM barecount.batches",
    "SELECT count(*)::text || ' ' || md5(string_agg(errors::text, '|' ORDER BY row_no)) FROM barecount.quarantine",
    "SELECT count(*)::text || ' ' || md5(string_agg(payload::text, '|' ORDER BY payload->>'order_id')) FROM raw.orders",
    "SELECT count(*)::text || ' ' || md5(string_agg(o::text, '|' ORDER BY order_id)) FROM gdp.orders o",
    "SELECT string_agg(format('%s %s %s %s %s', dataset, version, row_count, content_hash, status), '; ' ORDER BY dataset, version) FROM barecount.dataset_versions",
    "SELECT md5(string_agg(m::text, '|' ORDER BY month, region)) FROM published.monthly_sales m",
    "SELECT format('%s %s %s %s', ok, recorded_hash = computed_hash, computed_hash, receipt_seq) FROM barecount.verify_dataset('monthly_sales', NULL)",
    "SELECT string_agg(format('%s %s', depth, object), ', ' ORDER BY depth, object) FROM barecount.lineage_upstream('published.monthly_sales')",
    "SELECT barecount.validate('orders', '{\"order_id\":\"A1\",\"order_date\":\"2024-02-30\",\"store_id\":\"S1\",\"region\":\"east\",\"amount\":1,\"quantity\":1}')::text",
    "SELECT string_agg(format('%s %s %s', seq, event_type, entry_hash), '; ' ORDER BY seq) FROM barecount.ledger",
];

async fn answers(c: &Client) -> Vec<String> {
    let mut out = vec![];
    for q in ANSWERS {
        let row = c
            .query_one(*q, &[])
            .await
            .unwrap_or_else(|e| panic!("{q}: {:?}", e.as_db_error()));
        out.push(row.get::<_, Option<String>>(0).unwrap_or_default());
    }
    out
}

/// Every object of schema barecount and of the extension, described with what matters: types,
/// defaults, volatility, parallel safety, security, settings, owners, grants, comments, RLS,
/// policies, constraints, indexes, triggers, and the function bodies (by hash).
const SCHEMA: &str = r#"
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'barecount'),
rels AS (SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'barecount'::regnamespace)
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
UNION ALL
SELECT format('function %s returns %s lang %s vol %s par %s strict %s secdef %s config %s owner %s acl %s body %s comment %s',
              p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.provolatile, p.proparallel,
              p.proisstrict, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner), sorted(p.proacl), md5(p.prosrc),
              obj_description(p.oid, 'pg_proc'))
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = 'barecount'::regnamespace
UNION ALL
SELECT format('relation %s kind %s rls %s force %s owner %s acl %s comment %s', c.oid::regclass, c.relkind,
              c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner), sorted(c.relacl), obj_description(c.oid, 'pg_class'))
  FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels)
UNION ALL
SELECT format('column %s.%s #%s %s notnull %s default %s generated %s identity %s acl %s comment %s', a.attrelid::regclass,
              a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
              a.attgenerated, a.attidentity, sorted(a.attacl), col_description(a.attrelid, a.attnum))
  FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s on %s: %s', conname, conrelid::regclass, pg_get_constraintdef(oid))
  FROM pg_constraint WHERE conrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT format('policy %s on %s cmd %s roles %s using %s check %s comment %s', polname, polrelid::regclass, polcmd,
              polroles::regrole[], pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid),
              obj_description(oid, 'pg_policy'))
  FROM pg_policy WHERE polrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM rels) AND NOT tgisinternal
UNION ALL
SELECT format('event trigger %s on %s calls %s enabled %s', evtname, evtevent, evtfoid::regproc, evtenabled) FROM pg_event_trigger
UNION ALL
SELECT format('schema %s owner %s acl %s comment %s', nspname, pg_get_userbyid(nspowner), sorted(nspacl), obj_description(oid, 'pg_namespace'))
  FROM pg_namespace WHERE nspname IN ('barecount', 'raw', 'gdp', 'kpi', 'published')
"#;

async fn schema(c: &Client) -> Vec<String> {
    // grants in a canonical order: an ACL is a set, the order of its items is how it was built
    let sorted = "(SELECT array_agg(a::text ORDER BY a::text) FROM unnest($1) a)";
    c.batch_execute(&format!(
        "CREATE FUNCTION pg_temp.sorted(aclitem[]) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT {sorted} $$"
    ))
    .await
    .unwrap();
    let mut rows = strings(c, &SCHEMA.replace("sorted(", "pg_temp.sorted(")).await;
    rows.sort();
    rows
}

fn differences(a: &[String], b: &[String]) -> String {
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter().filter(|r| !y.contains(r)).cloned().collect()
    };
    format!(
        "only after the upgrade:\n  {}\nonly in a fresh install:\n  {}",
        only(a, b).join("\n  "),
        only(b, a).join("\n  ")
    )
}

#[tokio::test]
async fn an_upgraded_demo_database_keeps_every_answer_and_has_a_fresh_install_s_schema() {
    let old = fresh_db_with(&format!("CREATE EXTENSION barecount VERSION '{PREVIOUS}'")).await;
    let installed = strings(
        &old.superuser,
        "SELECT extversion FROM pg_extension WHERE extname = 'barecount'",
    )
    .await;
    assert_eq!(installed, [PREVIOUS]);
    fill_with_the_demo(&old.client).await;
    let before = answers(&old.client).await;
    let chain_before = count(&old.client, "SELECT max(seq) FROM barecount.ledger").await;
    let checked_before = count(&old.client, "SELECT checked FROM barecount.ledger_verify()").await;
    assert!(chain_before > 3, "the demo left receipts");

    old.superuser
        .batch_execute("ALTER EXTENSION barecount UPDATE")
        .await
        .unwrap();
    let now = strings(
        &old.superuser,
        "SELECT extversion FROM pg_extension WHERE extname = 'barecount'",
    )
    .await;
    assert_eq!(now, [env!("CARGO_PKG_VERSION")]);

    // every answer is the same, but for the ledger, which has one entry more: the upgrade's
    let after = answers(&old.client).await;
    let last = ANSWERS.len() - 1;
    assert_eq!(before[..last], after[..last]);
    assert!(
        after[last].starts_with(&before[last]),
        "the ledger before the upgrade is a prefix of the ledger after"
    );
    let receipt = old
        .client
        .query_one(
            "SELECT seq, tenant_id, event_type, subject, inputs->>'from', inputs->>'to', actor
               FROM barecount.ledger ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(receipt.get::<_, i64>(0), chain_before + 1);
    assert_eq!(receipt.get::<_, String>(1), "default");
    assert_eq!(receipt.get::<_, String>(2), "extension_upgrade");
    assert_eq!(receipt.get::<_, String>(3), "extension:barecount");
    assert_eq!(receipt.get::<_, String>(4), PREVIOUS);
    assert_eq!(receipt.get::<_, String>(5), env!("CARGO_PKG_VERSION"));
    let verified = old
        .client
        .query_one(
            "SELECT ok, checked, first_broken_seq FROM barecount.ledger_verify()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        verified.get::<_, bool>(0),
        "the chain verifies across the upgrade"
    );
    assert_eq!(verified.get::<_, i64>(1), checked_before + 1);

    // the upgraded database has exactly the schema of a fresh install of this version
    let fresh = fresh_db().await;
    let (upgraded, installed) = (schema(&old.superuser).await, schema(&fresh.superuser).await);
    assert!(upgraded.len() > 500, "{} objects described", upgraded.len());
    assert!(
        upgraded == installed,
        "{}",
        differences(&upgraded, &installed)
    );

    // run twice: nothing to do, no second receipt; there is no way back
    old.superuser
        .batch_execute("ALTER EXTENSION barecount UPDATE")
        .await
        .unwrap();
    assert_eq!(
        count(&old.client, "SELECT max(seq) FROM barecount.ledger").await,
        chain_before + 1
    );
    assert_eq!(
        refused(
            &old.superuser,
            &format!("ALTER EXTENSION barecount UPDATE TO '{PREVIOUS}'")
        )
        .await,
        "22023"
    );
    // what the new version brings works on the upgraded data; the old data still publishes
    old.client
        .batch_execute(
            "SELECT barecount.flag_define('demo.new_chart', 'boolean', 'false', 'A chart in beta')",
        )
        .await
        .unwrap();
    assert_eq!(
        strings(&old.client, "SELECT barecount.flag('demo.new_chart')::text").await,
        ["false"]
    );
    let v: i32 = old
        .client
        .query_one(
            "SELECT version FROM barecount.publish('monthly_sales', 'kpi.monthly_sales')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
}

/// A non-superuser cannot run the update (the extension is not trusted), and the released
/// script is what a fresh `CREATE EXTENSION ... VERSION` installs.
#[tokio::test]
async fn only_a_superuser_upgrades() {
    let old = fresh_db_with(&format!("CREATE EXTENSION barecount VERSION '{PREVIOUS}'")).await;
    assert_eq!(
        refused(&old.client, "ALTER EXTENSION barecount UPDATE").await,
        "42501"
    );
    assert_eq!(
        strings(
            &old.client,
            "SELECT extversion FROM pg_extension WHERE extname = 'barecount'"
        )
        .await,
        [PREVIOUS]
    );
    // 0.1.0 has no flags; nothing of 0.2.0 leaked into its script
    assert_eq!(
        refused(&old.client, "SELECT barecount.flags_list()").await,
        "42883"
    );
}
