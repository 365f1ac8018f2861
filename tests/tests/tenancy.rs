//! Tenancy and access, adversarially: a reader, an engineer and a publisher of tenant "acme"
//! go after tenant "globex"'s data through every table, view and function, and through the
//! Flight server, and see or change nothing. Tokens, plan limits and metering too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_flight::client;
use barecount_tests::{
    connect_as, count, fresh_db, login_role, order, refused, sqlstate, ORDERS_CONTRACT,
};
use serde_json::json;
use tokio_postgres::Client;

async fn affected(c: &Client, sql: &str) -> u64 {
    c.execute(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_see_or_change_another() {
    let db = fresh_db().await;
    let su = &db.superuser;
    su.batch_execute("SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('globex', 'Globex');")
        .await
        .unwrap();
    let a_reader = login_role(su, "a_reader", &["barecount_reader"], Some("acme")).await;
    let a_eng = login_role(su, "a_eng", &["barecount_engineer"], Some("acme")).await;
    let a_pub = login_role(su, "a_pub", &["barecount_publisher"], Some("acme")).await;
    let b_eng = login_role(su, "b_eng", &["barecount_engineer"], Some("globex")).await;
    let b_pub = login_role(su, "b_pub", &["barecount_publisher"], Some("globex")).await;
    let nobody = login_role(su, "nobody", &[], None).await;
    let orphan = login_role(su, "orphan", &["barecount_reader"], None).await;

    // globex builds its pipeline
    let be = connect_as(&db.url, &b_eng).await;
    be.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let rows = json!([order("G1", "east", 10.0), order("G2", "east", 10.0), order("G3", "east", 10.0), {"order_id": "bad"}]);
    be.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows])
        .await
        .unwrap();
    be.batch_execute(
        "CREATE TABLE gdp_globex.b_orders AS SELECT tenant_id, payload->>'order_id' AS order_id FROM raw.orders__accepted",
    )
    .await
    .unwrap();
    let bp = connect_as(&db.url, &b_pub).await;
    bp.query(
        "SELECT * FROM barecount.publish('globex_sales', 'gdp_globex.b_orders')",
        &[],
    )
    .await
    .unwrap();
    let b_token: String = bp
        .query_one("SELECT token_id FROM barecount.token_create('globex', ARRAY['read'], now() + interval '1 hour')", &[])
        .await
        .unwrap()
        .get(0);

    // acme builds a smaller one
    let ae = connect_as(&db.url, &a_eng).await;
    ae.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    ae.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([
            order("A1", "east", 10.0),
            order("A2", "east", 10.0)
        ])],
    )
    .await
    .unwrap();
    let ap = connect_as(&db.url, &a_pub).await;
    ap.query(
        "SELECT * FROM barecount.publish('acme_sales', 'SELECT tenant_id, payload->>''order_id'' AS order_id FROM raw.orders')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &ap,
            "SELECT row_count FROM barecount.dataset_versions WHERE dataset = 'acme_sales'"
        )
        .await,
        2
    );

    // --- the reader ---------------------------------------------------------------------------
    let r = connect_as(&db.url, &a_reader).await;
    let tenant: String = r
        .query_one("SELECT barecount.current_tenant()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant, "acme");
    assert_eq!(
        count(&r, "SELECT count(*) FROM published_acme.acme_sales").await,
        2
    );
    assert_eq!(
        count(&r, "SELECT count(*) FROM published_globex.globex_sales").await,
        0
    );
    assert_eq!(
        count(&r, "SELECT count(*) FROM published_globex.globex_sales__v1").await,
        0
    );
    assert_eq!(
        count(
            &r,
            "SELECT count(*) FROM barecount.datasets WHERE tenant_id <> 'acme'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &r,
            "SELECT count(*) FROM barecount.dataset_versions WHERE tenant_id <> 'acme'"
        )
        .await,
        0
    );
    assert_eq!(count(&r, "SELECT count(*) FROM barecount.tenants").await, 1);
    for sql in [
        "SELECT * FROM raw.orders",
        "SELECT * FROM barecount.ledger",
        "SELECT * FROM barecount.quarantine",
        "SELECT * FROM barecount.contracts",
        "SELECT * FROM barecount.tokens",
        "SELECT * FROM gdp_globex.b_orders",
        "UPDATE published_globex.globex_sales__v1 SET order_id = 'x'",
        "DELETE FROM published_globex.globex_sales__v1",
        "TRUNCATE published_globex.globex_sales__v1",
        "INSERT INTO barecount.datasets VALUES ('globex', 'x', 1)",
        "SELECT barecount.publish('x', 'SELECT 1 AS one')",
        "SELECT barecount.ingest('orders', '[]')",
        "SELECT barecount.tenant_add_member('globex', current_user::regrole)",
        "SELECT barecount.tenant_create('evil', 'Evil')",
        "SELECT barecount.act_as_tenant('globex')",
        "SELECT barecount.token_authenticate('bct_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000')",
        "SELECT barecount.usage_charge('globex', 'read', 0, 0)",
        "SELECT barecount.entitlement_set('acme', '{\"max_datasets\": null}')",
    ] {
        assert_eq!(refused(&r, sql).await, "42501", "reader: {sql}");
    }
    // settings an ordinary session can change do not move it to another tenant
    r.batch_execute("SELECT set_config('barecount.act_as_tenant', 'globex', false); SET barecount.tenant = 'globex'")
        .await
        .unwrap();
    let tenant: String = r
        .query_one("SELECT barecount.current_tenant()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant, "acme");
    assert_eq!(
        count(&r, "SELECT count(*) FROM published_globex.globex_sales").await,
        0
    );
    r.batch_execute("SET ROLE barecount_reader").await.unwrap();
    assert_eq!(
        count(&r, "SELECT count(*) FROM published_globex.globex_sales").await,
        0
    );

    // --- the engineer -------------------------------------------------------------------------
    assert_eq!(count(&ae, "SELECT count(*) FROM raw.orders").await, 2);
    assert_eq!(
        count(
            &ae,
            "SELECT count(*) FROM raw.orders WHERE tenant_id = 'globex'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&ae, "SELECT count(*) FROM barecount.quarantine").await,
        0,
        "globex's bad row is not visible"
    );
    assert_eq!(
        count(
            &ae,
            "SELECT count(*) FROM barecount.batches WHERE tenant_id <> 'acme'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &ae,
            "SELECT count(*) FROM barecount.ledger WHERE tenant_id <> 'acme'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&ae, "SELECT count(*) FROM barecount.contract_versions").await,
        1
    );
    assert_eq!(
        count(&ae, "SELECT count(*) FROM gdp_globex.b_orders").await,
        0
    );
    assert_eq!(
        affected(&ae, "UPDATE gdp_globex.b_orders SET order_id = 'hijacked'").await,
        0
    );
    assert_eq!(affected(&ae, "DELETE FROM gdp_globex.b_orders").await, 0);
    for sql in [
        "INSERT INTO raw.orders (tenant_id, batch_id, row_no, payload) VALUES ('globex', 1, 99, '{}')",
        "UPDATE raw.orders SET payload = '{}'",
        "DELETE FROM raw.orders",
        "INSERT INTO barecount.ledger (canonical, entry_hash) VALUES ('\\x00', 'x')",
        "UPDATE barecount.contracts SET status = 'retired'",
        "DELETE FROM barecount.quarantine",
        "ALTER TABLE gdp_globex.b_orders DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE gdp_globex.b_orders NO FORCE ROW LEVEL SECURITY",
        "DROP TABLE gdp_globex.b_orders",
        "INSERT INTO gdp_globex.b_orders (tenant_id, order_id) VALUES ('globex', 'forged')",
        "CREATE TABLE gdp_acme.stolen AS SELECT 'globex'::text AS tenant_id, 1 AS x",
        "SELECT barecount.publish('x', 'SELECT 1 AS one')",
    ] {
        assert_eq!(refused(&ae, sql).await, "42501", "engineer: {sql}");
    }
    assert_eq!(
        refused(&ae, "CREATE TABLE gdp_acme.untagged AS SELECT 1 AS x").await,
        "42P16"
    );

    // a replay touches only the caller's tenant's quarantine
    let r = ae
        .query_one(
            "SELECT released, still_quarantined FROM barecount.quarantine_replay('orders')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1)),
        (0, 0),
        "globex's quarantined row is not acme's to replay"
    );
    assert_eq!(count(su, "SELECT count(*) FROM barecount.quarantine WHERE tenant_id = 'globex' AND released_at IS NULL").await, 1);

    // objects planted on the caller's search path never run with the extension's rights
    ae.batch_execute(
        "CREATE FUNCTION gdp.now() RETURNS timestamptz LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END $$;
         CREATE FUNCTION gdp.jsonb_array_elements(jsonb) RETURNS SETOF jsonb LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END $$;
         SET search_path = gdp, pg_catalog;",
    )
    .await
    .unwrap();
    ae.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([order("A3", "east", 10.0)])],
    )
    .await
    .unwrap();
    ae.batch_execute("RESET search_path").await.unwrap();

    // --- the publisher ------------------------------------------------------------------------
    assert_eq!(
        refused(
            &ap,
            "SELECT barecount.publish('forged', 'SELECT ''globex''::text AS tenant_id, 1 AS x')"
        )
        .await,
        "42501"
    );
    let leaked: i64 = ap
        .query_one("SELECT row_count FROM barecount.publish('leak', 'SELECT tenant_id, order_id FROM gdp_globex.b_orders')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        leaked, 0,
        "a publish reads with the publisher's row-level security"
    );
    assert_eq!(
        refused(
            &ap,
            "SELECT barecount.token_create('globex', ARRAY['read'], now() + interval '1 hour')"
        )
        .await,
        "42501"
    );
    let revoked: bool = ap
        .query_one("SELECT barecount.token_revoke($1)", &[&b_token])
        .await
        .unwrap()
        .get(0);
    assert!(!revoked, "another tenant's token cannot be revoked");
    assert_eq!(
        count(&ap, "SELECT count(*) FROM barecount.token_list()").await,
        0
    );

    // verification and lineage answer only about one's own tenant
    assert_eq!(
        refused(
            &ap,
            "SELECT * FROM barecount.verify_dataset('globex_sales')"
        )
        .await,
        "42704"
    );
    assert_eq!(
        refused(
            &ap,
            "SELECT * FROM barecount.lineage_upstream('published_globex.globex_sales')"
        )
        .await,
        "42704"
    );
    assert_eq!(
        refused(&ae, "SELECT * FROM barecount.lineage_upstream('batch:1')").await,
        "42704",
        "batch 1 is globex's"
    );
    let down: Vec<String> = ae
        .query(
            "SELECT object FROM barecount.lineage_downstream('raw.orders')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        down.iter()
            .any(|o| o.starts_with("published_acme.acme_sales")),
        "{down:?}"
    );
    assert!(!down.iter().any(|o| o.contains("globex")), "{down:?}");
    // --- roles of no tenant ------------------------------------------------------------------
    let n = connect_as(&db.url, &nobody).await;
    assert_eq!(
        refused(&n, "SELECT barecount.current_tenant()").await,
        "42501"
    );
    assert_eq!(
        refused(&n, "SELECT * FROM published_globex.globex_sales").await,
        "42501"
    );
    let o = connect_as(&db.url, &orphan).await;
    let t: Option<String> = o
        .query_one("SELECT barecount.current_tenant()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, None, "a reader mapped to no tenant has none");
    assert_eq!(
        count(&o, "SELECT count(*) FROM published_globex.globex_sales").await,
        0
    );
    assert_eq!(
        count(&o, "SELECT count(*) FROM barecount.datasets").await,
        0
    );

    // --- globex's data is intact --------------------------------------------------------------
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM gdp_globex.b_orders WHERE order_id LIKE 'G%'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM barecount.tokens WHERE revoked_at IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(su, "SELECT count(*) FROM published_globex.globex_sales__v1").await,
        3
    );

    // --- through the Flight server ------------------------------------------------------------
    let flight = barecount_tests::Flight::start(&db.url).await;
    let url = flight.url.clone();
    let acme = client::Auth::Token(barecount_tests::api_token(su, "acme", &["read"]).await);
    let listed: Vec<String> = client::list(&url, &acme)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.dataset)
        .collect();
    assert!(listed.contains(&"acme_sales".to_owned()));
    assert!(
        !listed.iter().any(|d| d.starts_with("globex")),
        "{listed:?}"
    );
    let err = client::query(&url, &acme, "SELECT * FROM globex_sales")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("globex_sales"), "{err:#}");
    let err = client::query(&url, &acme, "SELECT * FROM globex_sales__v1")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("globex_sales"), "{err:#}");
    flight.stop().await;

    // dataset names are per tenant: acme may publish its own "globex_sales", in its own
    // schema, and globex's stays as it was
    ap.batch_execute("SELECT barecount.publish('globex_sales', 'SELECT 1 AS one')")
        .await
        .unwrap();
    assert_eq!(
        count(su, "SELECT count(*) FROM published_acme.globex_sales__v1").await,
        1
    );
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM barecount.dataset_versions WHERE dataset = 'globex_sales' AND tenant_id = 'globex' AND relation = 'published_globex.globex_sales__v1'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn tokens_expire_and_revoke_and_keep_no_secret() {
    let db = fresh_db().await;
    let su = &db.superuser;
    let row = su
        .query_one(
            "SELECT token_id, token FROM barecount.token_create('default', ARRAY['read', 'export'], now() + interval '1 hour', 'bi')",
            &[],
        )
        .await
        .unwrap();
    let (id, token): (String, String) = (row.get(0), row.get(1));
    let auth = su
        .query_one(
            "SELECT tenant_id, scopes, token_id FROM barecount.token_authenticate($1)",
            &[&token],
        )
        .await
        .unwrap();
    assert_eq!(auth.get::<_, String>(0), "default");
    assert_eq!(auth.get::<_, Vec<String>>(1), ["export", "read"]);
    assert_eq!(auth.get::<_, String>(2), id);

    let secret = token.rsplit('_').next().unwrap().to_owned();
    let stored = count(
        su,
        &format!("SELECT count(*) FROM barecount.tokens t WHERE strpos(t::text, '{secret}') > 0"),
    )
    .await;
    assert_eq!(stored, 0, "the secret is not stored anywhere in the row");

    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let e = su
        .query(
            "SELECT * FROM barecount.token_authenticate($1)",
            &[&tampered],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000");
    let e = su
        .query(
            "SELECT * FROM barecount.token_authenticate('not a token')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000");

    assert!(su
        .query_one("SELECT barecount.token_revoke($1)", &[&id])
        .await
        .unwrap()
        .get::<_, bool>(0));
    let e = su
        .query("SELECT * FROM barecount.token_authenticate($1)", &[&token])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000");
    let status: String = su
        .query_one(
            "SELECT status FROM barecount.token_list() WHERE token_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "revoked");

    // expiry: a token that lives 300 ms works, then stops working
    let short: String = su
        .query_one("SELECT token FROM barecount.token_create('default', ARRAY['read'], clock_timestamp() + interval '300 milliseconds')", &[])
        .await
        .unwrap()
        .get(0);
    su.query("SELECT * FROM barecount.token_authenticate($1)", &[&short])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match su
            .query("SELECT * FROM barecount.token_authenticate($1)", &[&short])
            .await
        {
            Err(e) => {
                assert_eq!(sqlstate(&e), "28000");
                break;
            }
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("token did not expire"),
        }
    }

    for (sql, state) in [
        (
            "SELECT barecount.token_create('default', ARRAY['admin'], now() + interval '1 hour')",
            "22023",
        ),
        (
            "SELECT barecount.token_create('default', ARRAY[]::text[], now() + interval '1 hour')",
            "22023",
        ),
        (
            "SELECT barecount.token_create('default', ARRAY['read'], now() - interval '1 hour')",
            "22023",
        ),
        (
            "SELECT barecount.token_create('default', ARRAY['read'], now() + interval '2 years')",
            "22023",
        ),
        (
            "SELECT barecount.token_create('nope', ARRAY['read'], now() + interval '1 hour')",
            "42704",
        ),
    ] {
        assert_eq!(refused(su, sql).await, state, "{sql}");
    }
}

#[tokio::test]
async fn plan_limits_refuse_and_metering_counts_the_work() {
    let db = fresh_db().await;
    let su = &db.superuser;
    su.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let rows = json!([order("A1", "east", 10.0), order("A2", "east", 10.0), order("A3", "east", 10.0), order("A4", "east", 10.0), {"order_id": "bad"}]);
    su.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows])
        .await
        .unwrap();
    let usage = su
        .query_one(
            "SELECT events, rows, bytes FROM barecount.usage WHERE kind = 'ingest'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((usage.get::<_, i64>(0), usage.get::<_, i64>(1)), (1, 5));
    assert!(usage.get::<_, i64>(2) > 100, "payload bytes are counted");

    su.execute("SELECT barecount.entitlement_set('default', '{\"max_datasets\": 1, \"max_published_versions\": 2}')", &[])
        .await
        .unwrap();
    su.batch_execute(
        "SELECT barecount.publish('d1', 'SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3')",
    )
    .await
    .unwrap();
    su.batch_execute("SELECT barecount.publish('d1', 'SELECT 1 AS x')")
        .await
        .unwrap();
    let e = su
        .batch_execute("SELECT barecount.publish('d1', 'SELECT 1 AS x')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53400");
    let msg = e.as_db_error().unwrap().message().to_owned();
    assert!(
        msg.contains("\"default\"") && msg.contains("2 published versions"),
        "{msg}"
    );
    let e = su
        .batch_execute("SELECT barecount.publish('d2', 'SELECT 1 AS x')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53400");
    assert!(e.as_db_error().unwrap().message().contains("1 datasets"));
    let publish = su
        .query_one(
            "SELECT events, rows FROM barecount.usage WHERE kind = 'publish'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (publish.get::<_, i64>(0), publish.get::<_, i64>(1)),
        (2, 4),
        "refused publishes are not metered"
    );

    su.execute("SELECT barecount.entitlement_set('default', '{\"max_rows_served_per_day\": 100, \"max_exports_per_day\": 1}')", &[])
        .await
        .unwrap();
    su.execute(
        "SELECT barecount.usage_charge('default', 'read', 60, 6000)",
        &[],
    )
    .await
    .unwrap();
    let e = su
        .execute(
            "SELECT barecount.usage_charge('default', 'read', 41, 100)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53400");
    su.execute(
        "SELECT barecount.usage_charge('default', 'read', 40, 100)",
        &[],
    )
    .await
    .unwrap();
    su.execute(
        "SELECT barecount.usage_charge('default', 'export', 10, 10)",
        &[],
    )
    .await
    .unwrap();
    let e = su
        .execute(
            "SELECT barecount.usage_charge('default', 'export', 10, 10)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53400");
    let read = su
        .query_one(
            "SELECT events, rows, bytes FROM barecount.usage WHERE kind = 'read'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            read.get::<_, i64>(0),
            read.get::<_, i64>(1),
            read.get::<_, i64>(2)
        ),
        (2, 100, 6100)
    );

    for (sql, state) in [
        (
            "SELECT barecount.entitlement_set('default', '{\"max_cats\": 1}')",
            "22023",
        ),
        (
            "SELECT barecount.entitlement_set('default', '{\"max_datasets\": -1}')",
            "22023",
        ),
        (
            "SELECT barecount.entitlement_set('default', '[1]')",
            "22023",
        ),
        (
            "SELECT barecount.usage_charge('default', 'ingest', 1, 1)",
            "22023",
        ),
    ] {
        assert_eq!(refused(su, sql).await, state, "{sql}");
    }
    // limits back to unlimited
    su.execute("SELECT barecount.entitlement_set('default', '{\"max_datasets\": null, \"max_published_versions\": null}')", &[])
        .await
        .unwrap();
    su.batch_execute("SELECT barecount.publish('d2', 'SELECT 1 AS x')")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_reads_are_metered_and_limited() {
    let db = fresh_db().await;
    let su = &db.superuser;
    su.batch_execute(
        "SELECT barecount.publish('ten', 'SELECT g AS n FROM generate_series(1, 10) g');
         SELECT barecount.entitlement_set('default', '{\"max_rows_served_per_day\": 12}');",
    )
    .await
    .unwrap();
    let flight = barecount_tests::Flight::start(&db.url).await;
    let (_, batches) = client::query(&flight.url, &flight.auth, "SELECT n FROM ten WHERE n <= 3")
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    let err = client::query(&flight.url, &flight.auth, "SELECT n FROM ten")
        .await
        .unwrap_err();
    let status = err
        .chain()
        .find_map(|e| e.downcast_ref::<arrow::error::ArrowError>())
        .map(|e| e.to_string());
    let text = format!("{err:#} {status:?}");
    assert!(
        text.contains("plan limit of 12 rows served today"),
        "{text}"
    );
    let read = su
        .query_one(
            "SELECT events, rows FROM barecount.usage WHERE kind = 'read'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (read.get::<_, i64>(0), read.get::<_, i64>(1)),
        (1, 3),
        "the refused read is not metered"
    );
    flight.stop().await;
}

#[tokio::test]
async fn gateway_functions_are_for_gateways_and_say_what_is_wrong() {
    let db = fresh_db().await;
    // the gateway is a BareCount admin, as barecount-flight's role is
    let su = &db.client;
    su.batch_execute("SELECT barecount.tenant_create('acme', 'Acme')")
        .await
        .unwrap();
    let alice = login_role(su, "gw_alice", &["barecount_reader"], Some("acme")).await;
    su.batch_execute(&format!("ALTER ROLE {alice} PASSWORD 'right one'"))
        .await
        .unwrap();

    // Gateways (admins) check passwords: the right one gives the tenant and scopes; every
    // failure is the same 28P01, whatever the reason.
    let login = || async {
        let row = su
            .query_one(
                "SELECT tenant_id, scopes FROM barecount.password_authenticate($1, 'right one')",
                &[&alice],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, Vec<String>>(1))
    };
    // scopes follow the role's grants: a reader reads, a publisher also exports
    assert_eq!(login().await, ("acme".to_owned(), vec!["read".to_owned()]));
    su.batch_execute(&format!("GRANT barecount_publisher TO {alice}"))
        .await
        .unwrap();
    assert_eq!(login().await.1, ["export", "read"]);
    su.batch_execute(&format!("REVOKE barecount_publisher FROM {alice}"))
        .await
        .unwrap();
    for sql in [
        format!("SELECT * FROM barecount.password_authenticate('{alice}', 'wrong')"),
        "SELECT * FROM barecount.password_authenticate('no_such_role_at_all', 'x')".to_owned(),
        "SELECT * FROM barecount.password_authenticate('postgres', 'x')".to_owned(),
    ] {
        assert_eq!(refused(su, &sql).await, "28P01", "{sql}");
    }
    su.batch_execute(&format!("ALTER ROLE {alice} VALID UNTIL '2000-01-01'"))
        .await
        .unwrap();
    assert_eq!(
        refused(
            su,
            &format!("SELECT * FROM barecount.password_authenticate('{alice}', 'right one')")
        )
        .await,
        "28P01",
        "an expired role cannot log in"
    );

    // Export receipts: unknown formats and negative counts are refused, nothing recorded.
    assert_eq!(
        refused(su, "SELECT * FROM barecount.export_receipt('acme', 'dataset:x@v1', 'xlsx', '/tmp/x', 1, 1, 'ab')").await,
        "22023"
    );
    assert_eq!(
        refused(su, "SELECT * FROM barecount.export_receipt('acme', 'dataset:x@v1', 'csv', '/tmp/x', -1, 1, 'ab')").await,
        "22023"
    );
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'export'"
        )
        .await,
        0
    );

    // Nobody else may call them: a reader is refused with 42501 (it is not even granted).
    let reader = connect_as(&db.url, &alice).await;
    for sql in [
        "SELECT * FROM barecount.password_authenticate('postgres', 'x')",
        "SELECT * FROM barecount.export_receipt('acme', 'dataset:x@v1', 'csv', '/tmp/x', 1, 1, 'ab')",
    ] {
        assert_eq!(refused(&reader, sql).await, "42501", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_names_that_need_quoting_are_mapped_by_their_real_name() {
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute(
        r#"SELECT barecount.tenant_create('acme', 'Acme');
           DROP ROLE IF EXISTS "Bob_B x";
           CREATE ROLE "Bob_B x" LOGIN;
           GRANT barecount_reader TO "Bob_B x";
           SELECT barecount.tenant_add_member('acme', '"Bob_B x"');"#,
    )
    .await
    .unwrap();
    assert_eq!(
        barecount_tests::strings(
            &db.superuser,
            "SELECT role_name::text FROM barecount.tenant_members WHERE tenant_id = 'acme'"
        )
        .await,
        ["Bob_B x"]
    );
    let bob = connect_as(&db.url, "Bob_B x").await;
    let t: Option<String> = bob
        .query_one("SELECT barecount.current_tenant()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(t.as_deref(), Some("acme"));
    su.batch_execute(r#"SELECT barecount.tenant_remove_member('"Bob_B x"')"#)
        .await
        .unwrap();
    assert_eq!(
        count(
            &db.superuser,
            "SELECT count(*) FROM barecount.tenant_members WHERE tenant_id = 'acme'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn row_level_security_evaluates_the_tenant_once_per_statement() {
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute("SELECT barecount.tenant_create('acme', 'Acme')")
        .await
        .unwrap();
    let eng = login_role(su, "rls_eng", &["barecount_engineer"], Some("acme")).await;
    let c = connect_as(&db.url, &eng).await;
    c.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    c.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([order("R1", "east", 1.0), order("R2", "west", 2.0)])],
    )
    .await
    .unwrap();
    // the policy's tenant is an initplan ($0), not a call per row (SECURITY DEFINER functions
    // are never inlined: per row it cost ~200x on a full scan)
    for table in ["raw.orders", "barecount.batches", "barecount.ledger"] {
        let plan: Vec<String> = c
            .query(
                &format!("EXPLAIN (COSTS OFF) SELECT count(*) FROM {table}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("InitPlan"), "{table}:\n{plan}");
        assert!(!plan.contains("current_tenant()"), "{table}:\n{plan}");
    }
    assert_eq!(count(&c, "SELECT count(*) FROM raw.orders").await, 2);
}
