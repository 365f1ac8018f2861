//! The attack suite: every way found to escalate, forge or cross tenants, each tried as the real
//! role an attacker would hold (an engineer, a reader, a revoked token), never as superuser
//! except where the attack is a careless superuser's. Each test is named for what it attacks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use barecount_flight::client::{self, Auth};
use barecount_flight::export::{ExportRequest, Format};
use barecount_flight::Config;
use barecount_tests::{
    code_of, connect_as, count, fresh_db, login_role, order, refused, temp_dir, Flight, TestDb,
    ORDERS_CONTRACT,
};
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tonic::Code;

/// Two tenants with an engineer, a publisher and a reader each.
struct Tenants {
    db: TestDb,
    a_eng: String,
    a_pub: String,
    a_reader: String,
    b_eng: String,
    b_reader: String,
}

async fn tenants() -> Tenants {
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute(
        "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('globex', 'Globex');",
    )
    .await
    .unwrap();
    let a_eng = login_role(su, "a_eng", &["barecount_engineer"], Some("acme")).await;
    let a_pub = login_role(su, "a_pub", &["barecount_publisher"], Some("acme")).await;
    let a_reader = login_role(su, "a_reader", &["barecount_reader"], Some("acme")).await;
    let b_eng = login_role(su, "b_eng", &["barecount_engineer"], Some("globex")).await;
    let b_reader = login_role(su, "b_reader", &["barecount_reader"], Some("globex")).await;
    Tenants {
        db,
        a_eng,
        a_pub,
        a_reader,
        b_eng,
        b_reader,
    }
}

async fn is_superuser(c: &Client, role: &str) -> bool {
    c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .get(0)
}

const PWN: &str = "CREATE FUNCTION gdp_acme.pwn(v int) RETURNS bool LANGUAGE plpgsql AS $$
    BEGIN IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
      EXECUTE format('ALTER ROLE %I SUPERUSER', session_user); END IF;
      -- whoever runs this may also try to forge evidence
      BEGIN INSERT INTO barecount.ledger (canonical, entry_hash) SELECT canonical, 'forged' FROM barecount.ledger ORDER BY seq DESC LIMIT 1;
      EXCEPTION WHEN OTHERS THEN NULL; END;
      RETURN true; END $$";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engineer_cannot_become_superuser_through_a_model() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    eng.batch_execute(PWN).await.unwrap();
    eng.batch_execute("CREATE FUNCTION gdp_acme.ipwn(v int) RETURNS bool IMMUTABLE LANGUAGE plpgsql AS $$ BEGIN RETURN gdp_acme.pwn(v); END $$")
        .await
        .unwrap();
    // The repro: a table whose check constraint calls the engineer's function, then a model
    // run that writes into it. The table is refused when created.
    assert_eq!(
        refused(
            &eng,
            "CREATE TABLE gdp_acme.evil (tenant_id text NOT NULL DEFAULT barecount.current_tenant(), v int CHECK (gdp_acme.pwn(v)))"
        )
        .await,
        "42501"
    );
    eng.batch_execute(
        "SELECT barecount.model_define('evil', 'SELECT barecount.current_tenant() AS tenant_id, 1 AS v')",
    )
    .await
    .unwrap();
    eng.batch_execute("SELECT * FROM barecount.model_run('evil')")
        .await
        .unwrap();
    assert!(!is_superuser(su, &t.a_eng).await);
    // BareCount made gdp_acme.evil: barecount_owner owns it, and the engineer cannot attach code
    // to it afterwards.
    let owner: String = su
        .query_one(
            "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'gdp_acme.evil'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "barecount_owner");
    for attach in [
        "ALTER TABLE gdp_acme.evil ADD CONSTRAINT c CHECK (gdp_acme.pwn(v))",
        "ALTER TABLE gdp_acme.evil ALTER COLUMN v SET DEFAULT 1",
        "CREATE TRIGGER t BEFORE INSERT ON gdp_acme.evil FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "CREATE RULE r AS ON INSERT TO gdp_acme.evil DO ALSO SELECT gdp_acme.pwn(1)",
        "CREATE INDEX ON gdp_acme.evil ((gdp_acme.ipwn(v)))",
        "CREATE POLICY p ON gdp_acme.evil USING (gdp_acme.pwn(v))",
        "ALTER TABLE gdp_acme.evil DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE gdp_acme.evil OWNER TO CURRENT_USER",
    ] {
        assert_eq!(refused(&eng, attach).await, "42501", "{attach}");
    }
    eng.batch_execute("SELECT * FROM barecount.model_run('evil')")
        .await
        .unwrap();
    assert!(!is_superuser(su, &t.a_eng).await);
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'forged'"
        )
        .await,
        0
    );
    // The role privileged sections run as is no superuser and cannot log in.
    let row = su
        .query_one(
            "SELECT rolsuper, rolcanlogin, rolinherit, rolbypassrls FROM pg_roles WHERE rolname = 'barecount_owner'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get(0), row.get(1), row.get(2), row.get(3)),
        (false, false, false, true)
    );
    // Nobody but the extension's own functions may act as it.
    assert_eq!(refused(&eng, "SET ROLE barecount_owner").await, "42501");
    // (A careless admin who makes it a superuser: see the pg_test
    // privileged_sections_refuse_a_superuser_owner; roles are cluster-wide, so not here.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_kind_that_can_carry_user_code_is_refused() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    eng.batch_execute(PWN).await.unwrap();
    eng.batch_execute(
        "CREATE DOMAIN gdp_acme.checked AS int CHECK (gdp_acme.pwn(VALUE));
         CREATE FUNCTION gdp_acme.ipwn(v int) RETURNS bool IMMUTABLE LANGUAGE plpgsql AS $$ BEGIN RETURN gdp_acme.pwn(v); END $$;
         CREATE TYPE gdp_acme.mood AS ENUM ('ok');
         CREATE TYPE gdp_acme.pair AS (a int, b int);
         CREATE FUNCTION gdp_acme.pair_text(gdp_acme.pair) RETURNS text LANGUAGE sql AS $$ SELECT gdp_acme.pwn(1)::text $$;
         CREATE CAST (gdp_acme.pair AS text) WITH FUNCTION gdp_acme.pair_text(gdp_acme.pair);
         CREATE FUNCTION gdp_acme.eq(int, int) RETURNS bool LANGUAGE sql AS $$ SELECT gdp_acme.pwn($1) $$;
         CREATE OPERATOR gdp_acme.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = gdp_acme.eq);
         CREATE TABLE gdp_acme.parent (tenant_id text NOT NULL DEFAULT barecount.current_tenant(), v int PRIMARY KEY);",
    )
    .await
    .unwrap();
    // Tables in gdp and kpi that carry user code are refused when created, by an engineer or
    // a careless superuser alike.
    let tables = [
        "CREATE TABLE gdp_acme.x1 (tenant_id text DEFAULT barecount.current_tenant(), v int DEFAULT (gdp_acme.pwn(1))::int)",
        "CREATE TABLE gdp_acme.x2 (tenant_id text, v int CHECK (gdp_acme.pwn(v)))",
        "CREATE TABLE gdp_acme.x3 (tenant_id text, v int, w bool GENERATED ALWAYS AS (gdp_acme.ipwn(v)) STORED)",
        "CREATE TABLE gdp_acme.x4 (tenant_id text, v gdp_acme.checked)",
        "CREATE TABLE gdp_acme.x5 (tenant_id text, v gdp_acme.mood)",
        "CREATE TABLE gdp_acme.x6 (tenant_id text, v gdp_acme.pair)",
        "CREATE TABLE gdp_acme.x7 (tenant_id text, v int REFERENCES gdp_acme.parent (v))",
        "CREATE TABLE gdp_acme.x8 (tenant_id text, v int, EXCLUDE USING btree (v WITH gdp_acme.===))",
        "CREATE TABLE kpi_acme.x9 AS SELECT barecount.current_tenant() AS tenant_id, 1::gdp_acme.checked AS v",
        "CREATE TABLE gdp_acme.x10 (v int) INHERITS (gdp_acme.parent)",
    ];
    for sql in tables {
        let code = refused(&eng, sql).await;
        assert!(code == "42501" || code == "42809", "{sql}: {code}");
    }
    for sql in &tables[..6] {
        assert_eq!(
            refused(su, &sql.replace("gdp_acme.x", "gdp.su_x")).await,
            "42501",
            "superuser: {sql}"
        );
    }
    // Views and other relations in gdp and kpi are refused; so is writing a model's rows into
    // one that took the model's name.
    assert_eq!(
        refused(
            &eng,
            "CREATE VIEW gdp_acme.m AS SELECT 'acme'::text AS tenant_id, gdp_acme.pwn(1) AS v"
        )
        .await,
        "42501"
    );
    // Sources, models and KPIs whose rows have a user type (a cast, a domain check or an
    // output function could run while BareCount copies or hashes them) are refused.
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    for (who, sql) in [
        (
            &pubr,
            "SELECT * FROM barecount.publish('p1', 'SELECT ROW(1, 2)::gdp_acme.pair AS p')",
        ),
        (
            &pubr,
            "SELECT * FROM barecount.publish('p2', 'SELECT 1::gdp_acme.checked AS v')",
        ),
        (
            &pubr,
            "SELECT * FROM barecount.publish('p3', $$SELECT 'ok'::gdp_acme.mood AS v$$)",
        ),
    ] {
        assert_eq!(refused(who, sql).await, "42804", "{sql}");
    }
    eng.batch_execute(
        "SELECT barecount.model_define('typed', 'SELECT barecount.current_tenant() AS tenant_id, ROW(1, 2)::gdp_acme.pair AS p')",
    )
    .await
    .unwrap();
    assert_eq!(
        refused(&eng, "SELECT * FROM barecount.model_run('typed')").await,
        "42804"
    );
    assert_eq!(
        count(su, "SELECT count(*) FROM pg_class WHERE relname = 'typed'").await,
        0
    );
    // A careless superuser switched the event trigger off and made a gdp table carrying user
    // code: BareCount still refuses to put triggers on it or write it as barecount_owner.
    su.batch_execute(
        "ALTER EVENT TRIGGER barecount_guard_store_tables DISABLE;
         CREATE TABLE gdp_acme.sneaky (tenant_id text NOT NULL DEFAULT barecount.current_tenant(), day date, amount int CHECK (gdp_acme.pwn(amount)));
         GRANT SELECT, INSERT, UPDATE, DELETE ON gdp_acme.sneaky TO barecount_engineer;
         ALTER EVENT TRIGGER barecount_guard_store_tables ENABLE;",
    )
    .await
    .unwrap();
    eng.batch_execute(r#"SELECT barecount.calendar_create('fy', '{"kind": "gregorian"}')"#)
        .await
        .unwrap();
    for sql in [
        r#"SELECT barecount.kpi_define('k', '{"source": "gdp_acme.sneaky", "time": "day", "grain": "month", "measures": {"n": "count(*)"}}')"#,
        "SELECT barecount.period_guard('gdp_acme.sneaky', 'day', 'fy')",
        "SELECT barecount.model_define('sneaky', 'SELECT barecount.current_tenant() AS tenant_id, DATE ''2024-01-01'' AS day, 1 AS amount'); SELECT * FROM barecount.model_run('sneaky')",
    ] {
        assert_eq!(refused(&eng, sql).await, "42501", "{sql}");
    }
    assert!(!is_superuser(su, &t.a_eng).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_sql_is_exactly_one_read_only_query() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    eng.batch_execute(
        "SELECT barecount.model_define('base', 'SELECT barecount.current_tenant() AS tenant_id, DATE ''2024-05-01'' AS order_date, 10 AS amount');
         SELECT * FROM barecount.model_run('base');",
    )
    .await
    .unwrap();
    let cases: [(&Client, &str, &str); 11] = [
        (&eng, "SELECT barecount.model_define('m1', 'SELECT 1 AS v; SELECT 2')", "42601"),
        (&eng, "SELECT barecount.model_define('m2', 'SELECT 1 AS v; ALTER ROLE CURRENT_USER SUPERUSER')", "42601"),
        (&eng, "SELECT barecount.model_define('m3', 'WITH d AS (DELETE FROM gdp_acme.base RETURNING *) SELECT * FROM d')", "0A000"),
        (&eng, "SELECT barecount.model_define('m4', 'SELECT * FROM gdp_acme.base FOR UPDATE')", "0A000"),
        (&eng, "SELECT barecount.model_define('m5', 'SELECT 1 AS v INTO gdp_acme.m5_made')", "0A000"),
        (&pubr, "SELECT * FROM barecount.publish('d1', 'SELECT 1 AS a; DROP TABLE gdp_acme.base')", "42601"),
        (&pubr, "SELECT * FROM barecount.publish('d2', 'SELECT 1 AS a; ')", "OK"),
        (&eng, "SELECT barecount.restatement('r', 'BEGIN')", "42601"),
        (&eng, "SELECT barecount.restatement('r', 'COMMIT')", "42601"),
        (&eng, "SELECT barecount.restatement('r', 'UPDATE gdp_acme.base SET amount = 1; UPDATE gdp_acme.base SET amount = 2')", "42601"),
        (&eng, "SELECT barecount.restatement('r', 'CREATE TABLE gdp_acme.made AS SELECT 1')", "42601"),
    ];
    for (who, sql, want) in cases {
        match who.batch_execute(sql).await {
            Ok(()) => assert_eq!(want, "OK", "{sql} was accepted"),
            Err(e) => assert_eq!(barecount_tests::sqlstate(&e), want, "{sql}: {e}"),
        }
    }
    // A KPI whose measure tries to close the query and start another statement.
    eng.batch_execute(
        r#"SELECT barecount.kpi_define('inj', '{"source": "gdp_acme.base", "time": "order_date", "grain": "month",
             "measures": {"net": "sum(amount)) AS net FROM gdp_acme.base; DROP TABLE gdp_acme.base; SELECT (1"}}')"#,
    )
    .await
    .unwrap();
    assert_eq!(
        refused(
            &eng,
            "SELECT * FROM barecount.kpi_materialize('inj', '2024-01-01', '2024-12-31')"
        )
        .await,
        "42601"
    );
    assert_eq!(count(su, "SELECT count(*) FROM gdp_acme.base").await, 1);
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM pg_class WHERE relname = 'm5_made'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restatement_marker_cannot_be_forged() {
    let t = tenants().await;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    eng.batch_execute(
        r#"SELECT barecount.calendar_create('fy', '{"kind": "gregorian"}');
           SELECT barecount.model_define('sales', 'SELECT barecount.current_tenant() AS tenant_id, DATE ''2024-03-15'' AS day, 10 AS amount');
           SELECT * FROM barecount.model_run('sales');
           SELECT barecount.period_guard('gdp_acme.sales', 'day', 'fy');"#,
    )
    .await
    .unwrap();
    pubr.batch_execute("SELECT barecount.period_close('fy', 'period', '2024-03-15')")
        .await
        .unwrap();
    let upd = "UPDATE gdp_acme.sales SET amount = 0 WHERE day = '2024-03-15'";
    assert_eq!(refused(&eng, upd).await, "55000");
    // one real restatement, then the same transaction tries to ride on it
    assert_eq!(
        refused(
            &eng,
            &format!("BEGIN; SELECT barecount.restatement('late refund', 'UPDATE gdp_acme.sales SET amount = 7'); {upd}; COMMIT")
        )
        .await,
        "55000"
    );
    eng.batch_execute("ROLLBACK").await.unwrap();
    // the old marker setting does nothing, and the marker function is no one's to call
    assert_eq!(
        refused(
            &eng,
            &format!("SELECT set_config('barecount.restatement', '1', false); {upd}")
        )
        .await,
        "55000"
    );
    assert_eq!(
        refused(&eng, "SELECT barecount._restatement_seq()").await,
        "42501"
    );
    // the real thing works, and leaves its receipt and a store_write receipt
    eng.batch_execute(
        "SELECT barecount.restatement('late refund', 'UPDATE gdp_acme.sales SET amount = 7')",
    )
    .await
    .unwrap();
    assert_eq!(
        count(&eng, "SELECT sum(amount) FROM gdp_acme.sales").await,
        7
    );
    assert_eq!(
        count(
            &eng,
            "SELECT count(*) FROM barecount.ledger WHERE event_type IN ('restatement', 'store_write')"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_and_triggers_of_one_tenant_survive_another() {
    let t = tenants().await;
    let su = &t.db.superuser;
    // both tenants own a table "sales" with a guard and a KPI "sales" over it
    for (role, tenant) in [(&t.a_eng, "acme"), (&t.b_eng, "globex")] {
        let c = connect_as(&t.db.url, role).await;
        c.batch_execute(&format!(
            r#"SELECT barecount.calendar_create('fy', '{{"kind": "gregorian"}}');
               CREATE TABLE gdp_{tenant}.sales (tenant_id text NOT NULL DEFAULT barecount.current_tenant(), day date, amount int);
               SELECT barecount.period_guard('gdp_{tenant}.sales', 'day', 'fy');
               SELECT barecount.kpi_define('sales', '{{"source": "gdp_{tenant}.sales", "time": "day", "grain": "month", "measures": {{"n": "count(*)"}}}}');
               INSERT INTO gdp_{tenant}.sales (day, amount) VALUES ('2024-03-15', 1);"#
        ))
        .await
        .unwrap_or_else(|e| panic!("{tenant}: {e}"));
    }
    for tenant in ["acme", "globex"] {
        let guards = format!(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'gdp_{tenant}.sales'::regclass AND tgname LIKE 'barecount_period_guard_%'"
        );
        assert_eq!(count(su, &guards).await, 1, "{tenant}");
        let kpi = format!(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'gdp_{tenant}.sales'::regclass AND tgname LIKE 'barecount_kpi_%'"
        );
        assert_eq!(count(su, &kpi).await, 3, "{tenant}");
    }
    // a tenant cannot guard, build a KPI on, or make tables in another tenant's schemas
    let ae = connect_as(&t.db.url, &t.a_eng).await;
    for sql in [
        "SELECT barecount.period_guard('gdp_globex.sales', 'day', 'fy')",
        r#"SELECT barecount.kpi_define('theirs', '{"source": "gdp_globex.sales", "time": "day", "grain": "month", "measures": {"n": "count(*)"}}')"#,
        "CREATE TABLE gdp_globex.planted (tenant_id text DEFAULT barecount.current_tenant())",
        "CREATE TABLE gdp.planted (tenant_id text DEFAULT barecount.current_tenant())",
    ] {
        let code = refused(&ae, sql).await;
        assert!(code == "42501" || code == "22023", "{sql}: {code}");
    }
    // and writing into it through a restatement changes none of its rows (row-level security)
    ae.batch_execute("SELECT barecount.restatement('x', 'UPDATE gdp_globex.sales SET amount = 0')")
        .await
        .unwrap();
    assert_eq!(
        count(su, "SELECT sum(amount) FROM gdp_globex.sales").await,
        1
    );
    // acme closes its period: acme's writes are refused, globex's are not
    let ap = connect_as(&t.db.url, &t.a_pub).await;
    ap.batch_execute("SELECT barecount.period_close('fy', 'period', '2024-03-15')")
        .await
        .unwrap();
    let be = connect_as(&t.db.url, &t.b_eng).await;
    be.batch_execute("UPDATE gdp_globex.sales SET amount = 2")
        .await
        .unwrap();
    assert_eq!(
        refused(&ae, "UPDATE gdp_acme.sales SET amount = 2").await,
        "55000"
    );
    // each tenant's invalidations are its own
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM barecount.kpi_invalidations WHERE tenant_id = 'acme'"
        )
        .await,
        1
    );
    assert!(
        count(
            su,
            "SELECT count(*) FROM barecount.kpi_invalidations WHERE tenant_id = 'globex'"
        )
        .await
            > 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_take_the_tenant_of_the_role_they_set() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let pooler = login_role(su, "pooler", &[], None).await;
    let app = login_role(su, "app", &["barecount_reader"], Some("globex")).await;
    su.batch_execute(&format!("GRANT {app} TO {pooler}"))
        .await
        .unwrap();
    let c = connect_as(&t.db.url, &pooler).await;
    assert_eq!(tenant(&c).await, None);
    c.batch_execute(&format!("SET ROLE {app}")).await.unwrap();
    assert_eq!(tenant(&c).await.as_deref(), Some("globex"));
    // a mapped login role keeps its own tenant whatever role it sets
    let r = connect_as(&t.db.url, &t.a_reader).await;
    su.batch_execute(&format!("GRANT {app} TO {}", t.a_reader))
        .await
        .unwrap();
    r.batch_execute(&format!("SET ROLE {app}")).await.unwrap();
    assert_eq!(tenant(&r).await.as_deref(), Some("acme"));
}

async fn tenant(c: &Client) -> Option<String> {
    c.query_one("SELECT barecount.current_tenant()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_carry_no_tenant_data() {
    let t = tenants().await;
    // globex's reader listens on both shared channels
    let mut cfg: tokio_postgres::Config = t.db.url.parse().unwrap();
    cfg.user(&t.b_reader);
    let (listener, mut conn) = cfg.connect(NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute("LISTEN barecount_kpi_events; LISTEN barecount_publish;")
        .await
        .unwrap();
    // acme materializes a KPI that breaches its threshold and publishes
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    eng.batch_execute(
        r#"SELECT barecount.model_define('orders', 'SELECT barecount.current_tenant() AS tenant_id, DATE ''2024-05-01'' AS order_date, 5 AS amount');
           SELECT * FROM barecount.model_run('orders');
           SELECT barecount.kpi_define('secret_sales', '{"source": "gdp_acme.orders", "time": "order_date", "grain": "month",
               "measures": {"net": "sum(amount)"}, "thresholds": [{"measure": "net", "direction": "below", "warn": 1000, "critical": 500}]}');
           SELECT * FROM barecount.kpi_materialize('secret_sales', '2024-01-01', '2024-12-31');"#,
    )
    .await
    .unwrap();
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    pubr.batch_execute(
        "SELECT * FROM barecount.publish('secret_dataset', 'kpi_acme.secret_sales')",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) => got.push(n),
            _ => break,
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("barecount_kpi_events".to_owned(), String::new()),
            ("barecount_publish".to_owned(), String::new())
        ],
        "wake-ups only, no tenant data"
    );
    // what acme's own reader reads back goes through row-level security
    let ar = connect_as(&t.db.url, &t.a_reader).await;
    assert_eq!(
        count(&ar, "SELECT count(*) FROM barecount.dataset_versions").await,
        1
    );
    assert_eq!(
        count(&listener, "SELECT count(*) FROM barecount.dataset_versions").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_of_state_leaves_a_receipt() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    let extra = login_role(su, "extra", &["barecount_reader"], Some("acme")).await;
    su.batch_execute(&format!(
        r#"SELECT barecount.entitlement_set('acme', '{{"max_datasets": 5}}');
           SELECT barecount.tenant_remove_member('{extra}');"#
    ))
    .await
    .unwrap();
    let token: String = pubr
        .query_one(
            "SELECT token_id FROM barecount.token_create('acme', ARRAY['read'], now() + interval '1 day')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    pubr.execute("SELECT barecount.token_revoke($1)", &[&token])
        .await
        .unwrap();
    eng.batch_execute(
        r#"SELECT barecount.json_schema_resource_put('http://example.com/money.json', '{"type": "number"}');
           SELECT barecount.model_define('n', 'SELECT barecount.current_tenant() AS tenant_id, 1 AS v');
           SELECT * FROM barecount.model_run('n');
           UPDATE gdp_acme.n SET v = 2;
           DELETE FROM gdp_acme.n;"#,
    )
    .await
    .unwrap();
    eng.batch_execute(
        r#"SELECT barecount.calendar_create('fy', '{"kind": "gregorian"}');
           SELECT barecount.model_define('d', 'SELECT barecount.current_tenant() AS tenant_id, DATE ''2024-01-01'' AS day');
           SELECT * FROM barecount.model_run('d');
           SELECT barecount.period_guard('gdp_acme.d', 'day', 'fy');"#,
    )
    .await
    .unwrap();
    pubr.batch_execute(
        "SELECT * FROM barecount.publish('n', 'SELECT 1 AS v');
         SELECT barecount.dataset_pin('n', 1, 'dashboard');
         SELECT barecount.dataset_unpin('n', 1, 'dashboard');",
    )
    .await
    .unwrap();
    let kinds = barecount_tests::strings(
        su,
        "SELECT event_type FROM barecount.ledger WHERE tenant_id = 'acme' ORDER BY seq",
    )
    .await;
    for want in [
        "tenant_create",
        "member_add",
        "entitlement_set",
        "member_remove",
        "token_create",
        "token_revoke",
        "json_schema_resource_put",
        "model_run",
        "store_write",
        "publish",
        "dataset_pin",
        "dataset_unpin",
        "period_guard",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "no {want} receipt in {kinds:?}"
        );
    }
    // the engineer's UPDATE and DELETE each left one; BareCount's own model runs left none
    assert_eq!(kinds.iter().filter(|k| *k == "store_write").count(), 2);
    // a table an engineer makes in gdp (with its first rows) is on the record too
    eng.batch_execute(
        "CREATE TABLE gdp_acme.made AS SELECT barecount.current_tenant() AS tenant_id, 1 AS v",
    )
    .await
    .unwrap();
    let made: (String, String) = {
        let r = su
            .query_one(
                "SELECT inputs->>'operation', inputs->>'statement' FROM barecount.ledger WHERE event_type = 'store_write' ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(made.0, "CREATE");
    assert!(made.1.contains("gdp_acme.made"), "{made:?}");
    assert!(su
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
}

/// A barecount-flight that connects as a gateway role — a member of barecount_admin with
/// BYPASSRLS, not a superuser — as a deployment should.
async fn gateway_flight(t: &Tenants) -> Flight {
    let (_, url) = barecount_tests::gateway_role(&t.db.superuser, &t.db.url).await;
    let mut config = Config::local(&url);
    config.export_dir = temp_dir("attack-exports");
    Flight::start_with(config).await
}

async fn acme_dataset(t: &Tenants) {
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    eng.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    eng.query(
        "SELECT * FROM barecount.ingest('orders', $1)",
        &[&json!([
            order("A1", "east", 10.0),
            order("A2", "west", 20.0)
        ])],
    )
    .await
    .unwrap();
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    pubr.batch_execute(
        "SELECT * FROM barecount.publish('acme_orders', $$SELECT payload->>'order_id' AS order_id FROM raw.orders__accepted$$)",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_is_read_only_on_every_path() {
    let t = tenants().await;
    acme_dataset(&t).await;
    let flight = gateway_flight(&t).await;
    let url = flight.url.as_str();
    let token = barecount_tests::api_token(&t.db.client, "acme", &["read", "export"]).await;
    let auth = Auth::Token(token);
    let target = temp_dir("attack-copy").join("stolen.csv");
    let target_s = target.display().to_string();
    let writes = [
        format!("COPY (SELECT * FROM acme_orders) TO '{target_s}' STORED AS CSV"),
        format!("EXPLAIN COPY (SELECT 1) TO '{target_s}' STORED AS CSV"),
        "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "CREATE VIEW v AS SELECT 1".to_owned(),
        "INSERT INTO acme_orders VALUES ('x')".to_owned(),
        "DROP TABLE acme_orders".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
    ];
    for sql in &writes {
        let e = client::query(url, &auth, sql).await.unwrap_err();
        assert_eq!(code_of(&e), Code::PermissionDenied, "{sql}: {e:#}");
        // prepared statements plan through the same module
        let mut c = client::sql_client(url, &auth).await.unwrap();
        let e = c.prepare(sql.clone(), None).await.unwrap_err();
        assert_eq!(code_of(&e), Code::PermissionDenied, "prepare {sql}: {e:#}");
        // and so do export queries
        let e = client::export(
            url,
            &auth,
            &ExportRequest {
                dataset: None,
                version: None,
                query: Some(sql.clone()),
                format: Format::Csv,
                name: None,
            },
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), Code::PermissionDenied, "export {sql}: {e:#}");
    }
    assert!(!target.exists(), "a file was written on the server's host");
    // queries still work
    let (_, b) = client::query(url, &auth, "SELECT count(*) FROM acme_orders")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    flight.stop().await;
}

/// Calls `list` until it fails or `bound` has passed; returns how long refusal took.
async fn refused_within(url: &str, auth: &Auth, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match client::list(url, auth).await {
            Err(e) => {
                assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");
                return start.elapsed();
            }
            Ok(_) if start.elapsed() > bound => {
                panic!("still accepted {:?} after the change", start.elapsed())
            }
            // poll again shortly: the condition is the refusal, not the time
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_expiry_and_lost_roles_bite_on_the_next_call() {
    let t = tenants().await;
    acme_dataset(&t).await;
    let su = &t.db.superuser;
    let flight = gateway_flight(&t).await;
    let url = flight.url.as_str();
    // the bound the server promises, plus a call's own time
    let bound = barecount_flight::auth::CREDENTIAL_RECHECK + Duration::from_secs(2);

    // An API token used as a Basic password gives a session; revoking the token ends it.
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    let row = pubr
        .query_one(
            "SELECT token_id, token FROM barecount.token_create('acme', ARRAY['read'], now() + interval '1 day')",
            &[],
        )
        .await
        .unwrap();
    let (id, token): (String, String) = (row.get(0), row.get(1));
    let session = client::bearer(
        url,
        &Auth::Password {
            user: "x".into(),
            password: token,
        },
    )
    .await
    .unwrap();
    let auth = Auth::Token(session);
    assert_eq!(client::list(url, &auth).await.unwrap().len(), 1);
    pubr.execute("SELECT barecount.token_revoke($1)", &[&id])
        .await
        .unwrap();
    let took = refused_within(url, &auth, bound).await;
    println!("session of a revoked token refused after {took:?}");

    // An expiring token: its session ends with it.
    let row = pubr
        .query_one(
            "SELECT token FROM barecount.token_create('acme', ARRAY['read'], now() + interval '3 seconds')",
            &[],
        )
        .await
        .unwrap();
    let session = client::bearer(
        url,
        &Auth::Password {
            user: "x".into(),
            password: row.get(0),
        },
    )
    .await
    .unwrap();
    let auth = Auth::Token(session);
    assert_eq!(client::list(url, &auth).await.unwrap().len(), 1);
    refused_within(url, &auth, Duration::from_secs(3) + bound).await;

    // A password login: losing the BareCount role, or the login, ends the session.
    for change in [
        "REVOKE barecount_reader FROM {r}",
        "ALTER ROLE {r} NOLOGIN",
        "ALTER ROLE {r} VALID UNTIL '2000-01-01'",
    ] {
        let r = login_role(su, "sess", &["barecount_reader"], Some("acme")).await;
        su.batch_execute(&format!("ALTER ROLE {r} PASSWORD 'pw'"))
            .await
            .unwrap();
        let session = client::bearer(
            url,
            &Auth::Password {
                user: r.clone(),
                password: "pw".into(),
            },
        )
        .await
        .unwrap();
        let auth = Auth::Token(session);
        assert_eq!(client::list(url, &auth).await.unwrap().len(), 1);
        su.batch_execute(&change.replace("{r}", &r)).await.unwrap();
        let took = refused_within(url, &auth, bound).await;
        println!("{change}: session refused after {took:?}");
    }

    // A role mapped to a tenant but holding no BareCount role cannot log in over Flight (as
    // in psql); a reader's password login has no export scope, a publisher's has.
    let bare = login_role(su, "bare", &[], Some("acme")).await;
    su.batch_execute(&format!(
        "ALTER ROLE {bare} PASSWORD 'pw'; ALTER ROLE {} PASSWORD 'pw'; ALTER ROLE {} PASSWORD 'pw'",
        t.a_reader, t.a_pub
    ))
    .await
    .unwrap();
    let e = client::bearer(
        url,
        &Auth::Password {
            user: bare,
            password: "pw".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");
    let export = ExportRequest {
        dataset: Some("acme_orders".into()),
        version: None,
        query: None,
        format: Format::Csv,
        name: None,
    };
    let reader = Auth::Password {
        user: t.a_reader.clone(),
        password: "pw".into(),
    };
    assert_eq!(client::list(url, &reader).await.unwrap().len(), 1);
    let e = client::export(url, &reader, &export, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e:#}");
    let publisher = Auth::Password {
        user: t.a_pub.clone(),
        password: "pw".into(),
    };
    client::export(url, &publisher, &export, |_, _| {})
        .await
        .unwrap();
    // another tenant's reader sees nothing of acme's
    su.batch_execute(&format!("ALTER ROLE {} PASSWORD 'pw'", t.b_reader))
        .await
        .unwrap();
    let other = Auth::Password {
        user: t.b_reader.clone(),
        password: "pw".into(),
    };
    assert!(client::list(url, &other).await.unwrap().is_empty());
    let e = client::query(url, &other, "SELECT * FROM acme_orders")
        .await
        .unwrap_err();
    assert_ne!(code_of(&e), Code::Unavailable, "{e:#}");
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_rewriting_digested_history_is_caught() {
    use barecount_flight::digest;
    let t = tenants().await;
    let su = &t.db.superuser;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    eng.batch_execute(
        "SELECT barecount.model_define('n', 'SELECT barecount.current_tenant() AS tenant_id, 1 AS v');
         SELECT * FROM barecount.model_run('n');",
    )
    .await
    .unwrap();
    // The server keeps digests on its schedule, in a directory of its own (mode 0700)...
    let mut config = Config::local(&t.db.url);
    let dir = temp_dir("attack-digests");
    config.digest_dir = Some(dir.clone());
    config.digest_interval_secs = 1;
    let flight = Flight::start_with(config).await;
    let file = dir.join(digest::FILE);
    let deadline = Instant::now() + Duration::from_secs(20);
    while digest::latest(&dir).unwrap().is_none() {
        assert!(Instant::now() < deadline, "no digest kept within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flight.stop().await;
    let kept = digest::latest(&dir).unwrap().unwrap();
    let tail: i64 = count(su, "SELECT max(seq) FROM barecount.ledger").await;
    assert_eq!(kept.seq, tail);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // ... and on demand, through the CLI.
    let db_url = t.db.url.clone();
    let dir_s = dir.display().to_string();
    let args = ["digest", "--database-url", &db_url, "--digest-dir", &dir_s];
    barecount_tests::cli_ok(&args, &[]).await;

    // A superuser cuts the digested tail off: the chain alone still looks whole, the kept
    // digest says otherwise, and no new digest is taken over the rewritten chain.
    su.batch_execute(
        "ALTER TABLE barecount.ledger DISABLE TRIGGER ledger_append_only;
         DELETE FROM barecount.ledger WHERE seq = (SELECT max(seq) FROM barecount.ledger);
         ALTER TABLE barecount.ledger ENABLE TRIGGER ledger_append_only;",
    )
    .await
    .unwrap();
    assert!(su
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    let db = barecount_flight::db::Db::new(t.db.url.clone());
    let v = digest::verify_latest(&db, &dir).await.unwrap();
    assert!(!v.ok, "{v:?}");
    let lines_before = std::fs::read_to_string(&file).unwrap().lines().count();
    let (v, taken) = digest::publish(&db, &dir).await.unwrap();
    assert!(!v.ok && taken.is_none());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        lines_before
    );
    let out = tokio::process::Command::new(barecount_tests::flight_bin())
        .args([
            "digest",
            "--verify-only",
            "--database-url",
            &db_url,
            "--digest-dir",
            &dir_s,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does NOT match"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_own_the_same_names_without_touching_each_other() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let a = connect_as(&t.db.url, &t.a_eng).await;
    let b = connect_as(&t.db.url, &t.b_eng).await;
    // the same model, KPI and dataset names with different columns
    a.batch_execute(
        r#"SELECT barecount.model_define('m', 'SELECT barecount.current_tenant() AS tenant_id, ''a-code'' AS code, DATE ''2024-05-01'' AS day');
           SELECT * FROM barecount.model_run('m');
           SELECT barecount.kpi_define('k', '{"source": "gdp_acme.m", "time": "day", "grain": "month", "measures": {"n": "count(*)"}}');
           SELECT * FROM barecount.kpi_materialize('k', '2024-01-01', '2024-12-31');"#,
    )
    .await
    .unwrap();
    b.batch_execute(
        r#"SELECT barecount.model_define('m', 'SELECT 42 AS number, barecount.current_tenant() AS tenant_id, DATE ''2024-06-01'' AS day');
           SELECT * FROM barecount.model_run('m');
           SELECT barecount.kpi_define('k', '{"source": "gdp_globex.m", "time": "day", "grain": "month", "dimensions": ["number"], "measures": {"total": "sum(number)"}}');
           SELECT * FROM barecount.kpi_materialize('k', '2024-01-01', '2024-12-31');"#,
    )
    .await
    .unwrap();
    for (role, tenant) in [(&t.a_pub, "acme"), (&t.b_eng, "globex")] {
        let c = connect_as(&t.db.url, role).await;
        if tenant == "globex" {
            su.batch_execute(&format!("GRANT barecount_publisher TO {role}"))
                .await
                .unwrap();
        }
        c.batch_execute(&format!(
            "SELECT * FROM barecount.publish('orders', 'kpi_{tenant}.k')"
        ))
        .await
        .unwrap_or_else(|e| panic!("{tenant}: {e}"));
    }
    let cols = |rel: &str| {
        format!(
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{rel}'::regclass AND attnum > 0"
        )
    };
    let text =
        |sql: String| async move { su.query_one(&sql, &[]).await.unwrap().get::<_, String>(0) };
    assert_eq!(text(cols("gdp_acme.m")).await, "tenant_id,code,day");
    assert_eq!(text(cols("gdp_globex.m")).await, "number,tenant_id,day");
    assert!(text(cols("published_acme.orders__v1")).await.contains(",n"));
    assert!(text(cols("published_globex.orders__v1"))
        .await
        .contains("total"));
    // each reads its own, and only its own
    let ar = connect_as(&t.db.url, &t.a_reader).await;
    assert_eq!(
        count(&ar, "SELECT count(*) FROM published_acme.orders").await,
        1
    );
    assert_eq!(
        count(&ar, "SELECT count(*) FROM published_globex.orders").await,
        0
    );
    let relations = barecount_tests::strings(
        su,
        "SELECT relation FROM barecount.dataset_versions WHERE dataset = 'orders' ORDER BY tenant_id",
    )
    .await;
    assert_eq!(
        relations,
        ["published_acme.orders__v1", "published_globex.orders__v1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quality_rule_cannot_point_ingest_at_user_code() {
    let t = tenants().await;
    let su = &t.db.superuser;
    let eng = connect_as(&t.db.url, &t.a_eng).await;
    eng.batch_execute(PWN).await.unwrap();
    // a careless superuser switched the event trigger off while the engineer made a view in
    // gdp over the engineer's function (contracts may reference only raw, gdp, kpi, published)
    su.batch_execute("ALTER EVENT TRIGGER barecount_guard_store_tables DISABLE")
        .await
        .unwrap();
    eng.batch_execute(
        "CREATE VIEW gdp_acme.stores AS SELECT 'acme'::text AS tenant_id, 'S1'::text AS store_id WHERE gdp_acme.pwn(1)",
    )
    .await
    .unwrap();
    su.batch_execute("ALTER EVENT TRIGGER barecount_guard_store_tables ENABLE")
        .await
        .unwrap();
    let contract = ORDERS_CONTRACT.replace(
        "    description: One row per order.\n",
        "    description: One row per order.
    quality:
      - rule: references
        property: store_id
        table: gdp_acme.stores
        column: store_id
",
    );
    assert_ne!(contract, ORDERS_CONTRACT);
    eng.query("SELECT barecount.contract_register($1)", &[&contract])
        .await
        .unwrap();
    let e = eng
        .query(
            "SELECT * FROM barecount.ingest('orders', $1)",
            &[&json!([order("A1", "east", 10.0)])],
        )
        .await
        .unwrap_err();
    assert_eq!(barecount_tests::sqlstate(&e), "42501", "{e}");
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'forged'"
        )
        .await,
        0
    );
    assert!(!is_superuser(su, &t.a_eng).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_on_every_flight_path() {
    use arrow_flight::{Action, Criteria, FlightDescriptor};
    let t = tenants().await;
    acme_dataset(&t).await;
    let flight = gateway_flight(&t).await;
    let url = flight.url.as_str();
    let pubr = connect_as(&t.db.url, &t.a_pub).await;
    let row = pubr
        .query_one(
            "SELECT token_id, token FROM barecount.token_create('acme', ARRAY['read', 'export'], now() + interval '1 day')",
            &[],
        )
        .await
        .unwrap();
    let (id, token): (String, String) = (row.get(0), row.get(1));
    // a ticket and a prepared statement obtained while the token was good
    let mut plain = client::plain_client(url, &token).await.unwrap();
    let path = FlightDescriptor::new_path(vec!["acme_orders".into()]);
    let info = plain
        .get_flight_info(path.clone())
        .await
        .unwrap()
        .into_inner();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut sql = client::sql_client(url, &Auth::Token(token.clone()))
        .await
        .unwrap();
    let prepared = sql
        .prepare("SELECT count(*) FROM acme_orders".into(), None)
        .await
        .unwrap();
    pubr.execute("SELECT barecount.token_revoke($1)", &[&id])
        .await
        .unwrap();

    let mut codes = Vec::new();
    let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code());
    codes.push((
        "ListFlights",
        code(plain.list_flights(Criteria::default()).await.map(|_| ())),
    ));
    codes.push((
        "GetFlightInfo",
        code(plain.get_flight_info(path.clone()).await.map(|_| ())),
    ));
    codes.push(("GetSchema", code(plain.get_schema(path).await.map(|_| ()))));
    codes.push(("DoGet", code(plain.do_get(ticket).await.map(|_| ()))));
    codes.push((
        "DoAction export",
        code(
            plain
                .do_action(Action::new(
                    barecount_flight::export::ACTION,
                    br#"{"dataset": "acme_orders", "format": "csv"}"#.to_vec(),
                ))
                .await
                .map(|_| ()),
        ),
    ));
    codes.push((
        "ListActions",
        code(plain.list_actions(arrow_flight::Empty {}).await.map(|_| ())),
    ));
    for (what, c) in &codes {
        assert_eq!(*c, Some(Code::Unauthenticated), "{what}");
    }
    let e = sql
        .execute("SELECT count(*) FROM acme_orders".into(), None)
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&e),
        Code::Unauthenticated,
        "Flight SQL statement: {e:#}"
    );
    let mut prepared = prepared;
    let e = prepared.execute().await.unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "prepared: {e:#}");
    let e = client::bearer(
        url,
        &Auth::Password {
            user: "x".into(),
            password: token,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "handshake: {e:#}");
    flight.stop().await;
}
