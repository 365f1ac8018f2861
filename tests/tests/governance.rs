//! Governance: feature flags with staged rollouts, tenant suspension, and the flag that switches
//! barecount-flight's parallel loader. Run as the real roles: an admin (not a superuser), tenant
//! engineers and readers, a gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use barecount_flight::client::{self, Auth};
use barecount_flight::Config;
use barecount_tests::*;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

async fn flag_for(admin: &Client, tenant: &str, flag: &str) -> serde_json::Value {
    admin
        .query_one(
            "SELECT value FROM barecount.gateway_flags($1) WHERE name = $2",
            &[&tenant, &flag],
        )
        .await
        .unwrap()
        .get(0)
}

/// The documented bucket: the first four bytes of SHA-256(flag/tenant), big-endian, mod 100.
fn bucket(flag: &str, tenant: &str) -> u32 {
    let d = Sha256::digest(format!("{flag}/{tenant}").as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 100
}

#[tokio::test]
async fn flags_roll_out_by_allow_list_and_stable_percentage_and_every_change_is_a_receipt() {
    let db = fresh_db().await;
    let admin = &db.client;
    let receipts = "SELECT count(*) FROM barecount.ledger WHERE subject LIKE 'flag:ui.new_chart%'";

    // define; the same definition again changes nothing; a new default is version 2
    let define =
        "SELECT barecount.flag_define('ui.new_chart', 'boolean', 'false', 'The new KPI chart')";
    assert_eq!(count(admin, &format!("{define}::bigint")).await, 1);
    assert_eq!(count(admin, &format!("{define}::bigint")).await, 1);
    assert_eq!(count(admin, receipts).await, 1);

    let tenants: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    for t in &tenants {
        admin
            .execute("SELECT barecount.tenant_create($1, $1)", &[t])
            .await
            .unwrap();
    }
    // 25 % by the stable hash, plus t05 by name
    admin
        .batch_execute("SELECT barecount.flag_rollout('ui.new_chart', 25, '{t05}')")
        .await
        .unwrap();
    let mut on25 = vec![];
    for t in &tenants {
        let on = flag_for(admin, t, "ui.new_chart").await == serde_json::json!(true);
        let want = t == "t05" || bucket("ui.new_chart", t) < 25;
        assert_eq!(on, want, "{t}: the server's bucket is the documented one");
        if on {
            on25.push(t.clone());
        }
    }
    assert!(
        on25.len() > 2 && on25.len() < 25,
        "25 % of 40 and one by name: {on25:?}"
    );
    // raising the percentage only adds tenants
    admin
        .batch_execute("SELECT barecount.flag_rollout('ui.new_chart', 60, '{t05}')")
        .await
        .unwrap();
    let mut on60 = vec![];
    for t in &tenants {
        if flag_for(admin, t, "ui.new_chart").await == serde_json::json!(true) {
            on60.push(t.clone());
        }
    }
    assert!(on25.iter().all(|t| on60.contains(t)), "{on25:?} ⊆ {on60:?}");
    assert!(on60.len() > on25.len());

    // a tenant's own roles read their value and where it came from
    let reader = login_role(admin, "flag_reader", &["barecount_reader"], Some("t05")).await;
    let r = connect_as(&db.url, &reader).await;
    assert_eq!(
        strings(&r, "SELECT barecount.flag('ui.new_chart')::text").await,
        ["true"]
    );
    assert_eq!(
        strings(
            &r,
            "SELECT source FROM barecount.flags_list() WHERE name = 'ui.new_chart'"
        )
        .await,
        ["allow-list"]
    );
    // an override beats the rollout; the same override again changes nothing
    let set = "SELECT barecount.flag_set('ui.new_chart', 't05', 'false')::text";
    assert_eq!(strings(admin, set).await, ["true"]);
    assert_eq!(strings(admin, set).await, ["false"]);
    assert_eq!(
        strings(&r, "SELECT barecount.flag('ui.new_chart')::text").await,
        ["false"]
    );
    assert_eq!(
        strings(
            &r,
            "SELECT source FROM barecount.flags_list() WHERE name = 'ui.new_chart'"
        )
        .await,
        ["override"]
    );
    // typed settings
    admin
        .batch_execute(
            "SELECT barecount.flag_define('export.max_rows', 'integer', '1000000', 'Rows per export');
             SELECT barecount.flag_set('export.max_rows', 't05', '5000')",
        )
        .await
        .unwrap();
    assert_eq!(
        strings(&r, "SELECT barecount.setting('export.max_rows')::text").await,
        ["5000"]
    );
    // the built-in switch is there, on by default
    assert_eq!(
        strings(&r, "SELECT barecount.flag('flight.parallel_load')::text").await,
        ["true"]
    );

    // every change a receipt: define, rollout 25, rollout 60 on the default tenant's chain; the
    // override on t05's; the unchanged repeats none
    assert_eq!(count(admin, receipts).await, 3);
    admin
        .batch_execute("SELECT barecount.act_as_tenant('t05')")
        .await
        .unwrap();
    assert_eq!(
        count(
            admin,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'flag_set'"
        )
        .await,
        2
    );
    admin
        .batch_execute("SELECT barecount.act_as_tenant(NULL)")
        .await
        .unwrap();
    assert!(chain_verifies(admin).await);
}

#[tokio::test]
async fn bad_flag_input_is_refused_by_name() {
    let db = fresh_db().await;
    let admin = &db.client;
    admin
        .batch_execute(
            "SELECT barecount.flag_define('ui.beta', 'boolean', 'false', 'Beta');
             SELECT barecount.flag_define('export.max_rows', 'integer', '10', 'Rows')",
        )
        .await
        .unwrap();
    let cases = [
        // wrong types
        (
            "SELECT barecount.flag_define('ui.x', 'boolean', '\"yes\"', 'd')",
            "42804",
        ),
        (
            "SELECT barecount.flag_set('export.max_rows', 'default', '1.5')",
            "42804",
        ),
        (
            "SELECT barecount.flag_set('export.max_rows', 'default', '\"5\"')",
            "42804",
        ),
        (
            "SELECT barecount.flag_set('export.max_rows', 'default', '1e30')",
            "42804",
        ),
        (
            "SELECT barecount.flag_rollout('ui.beta', 10, '{}', '1')",
            "42804",
        ),
        (
            "SELECT barecount.flag_define('ui.beta', 'text', '\"a\"', 'Beta')",
            "42804",
        ),
        ("SELECT barecount.flag('export.max_rows')", "42804"),
        (
            "SELECT barecount.flag_define('ui.y', 'date', '1', 'd')",
            "22023",
        ),
        // names, ranges, missing things
        (
            "SELECT barecount.flag_define('UI Beta', 'boolean', 'true', 'd')",
            "42602",
        ),
        (
            "SELECT barecount.flag_define('ui.z', 'boolean', NULL, 'd')",
            "22004",
        ),
        (
            "SELECT barecount.flag_define('ui.z', 'boolean', 'null', 'd')",
            "22004",
        ),
        (
            "SELECT barecount.flag_define('ui.z', 'boolean', 'true', ' ')",
            "22004",
        ),
        ("SELECT barecount.flag_rollout('ui.beta', 101)", "22023"),
        ("SELECT barecount.flag_rollout('ui.beta', -1)", "22023"),
        (
            "SELECT barecount.flag_rollout('ui.beta', 10, '{nosuch}')",
            "42704",
        ),
        ("SELECT barecount.flag_rollout('ui.nosuch', 10)", "42704"),
        (
            "SELECT barecount.flag_set('ui.beta', 'nosuch', 'true')",
            "42704",
        ),
        ("SELECT barecount.flag('ui.nosuch')", "42704"),
        ("SELECT barecount.setting('ui.nosuch')", "42704"),
    ];
    for (sql, want) in cases {
        assert_eq!(outcome(admin, sql).await, want, "{sql}");
    }
    // nothing half-written: still the two flags (and the built-in one), versions unchanged
    assert_eq!(
        strings(
            admin,
            "SELECT name || '@' || version FROM barecount.flags ORDER BY name"
        )
        .await,
        ["export.max_rows@1", "flight.parallel_load@1", "ui.beta@1"]
    );
}

/// The attacks: a tenant's own roles cannot define, roll out or set flags, read the flag
/// tables or another tenant's values; a role whose tenant mapping was removed reads nothing.
#[tokio::test]
async fn tenants_cannot_change_or_peek_at_flags() {
    let db = fresh_db().await;
    let admin = &db.client;
    admin
        .batch_execute(
            "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('rival', 'Rival');
             SELECT barecount.flag_define('ui.beta', 'boolean', 'false', 'Beta');
             SELECT barecount.flag_rollout('ui.beta', 0, '{rival}')",
        )
        .await
        .unwrap();
    let eng = login_role(
        admin,
        "flag_eng",
        &["barecount_engineer", "barecount_publisher"],
        Some("acme"),
    )
    .await;
    let e = connect_as(&db.url, &eng).await;
    for sql in [
        "SELECT barecount.flag_define('ui.beta', 'boolean', 'true', 'mine')",
        "SELECT barecount.flag_rollout('ui.beta', 100)",
        "SELECT barecount.flag_set('ui.beta', 'acme', 'true')",
        "SELECT * FROM barecount.gateway_flags('rival')",
        "SELECT * FROM barecount.flags",
        "SELECT * FROM barecount.flag_overrides",
        "UPDATE barecount.flags SET default_value = 'true'",
        "SELECT barecount._flag_resolve(f, 'rival') FROM barecount.flags f",
        "SELECT barecount.tenant_suspend('rival', 'spite')",
        "SELECT barecount.tenant_resume('acme')",
    ] {
        assert_eq!(outcome(&e, sql).await, "42501", "{sql}");
    }
    // acme sees its own value only: rival's allow-list does not show
    assert_eq!(
        strings(&e, "SELECT value::text || ' ' || source FROM barecount.flags_list() WHERE name = 'ui.beta'").await,
        ["false default"]
    );
    // a revoked credential: the role's tenant mapping removed, it reads no flags at all
    admin
        .execute(
            "SELECT barecount.tenant_remove_member($1::text::regrole)",
            &[&eng],
        )
        .await
        .unwrap();
    let gone = connect_as(&db.url, &eng).await;
    for sql in [
        "SELECT barecount.flag('ui.beta')",
        "SELECT barecount.setting('ui.beta')",
        "SELECT * FROM barecount.flags_list()",
    ] {
        assert_eq!(outcome(&gone, sql).await, "42501", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenant_is_refused_everywhere_keeps_its_data_and_resumes() {
    let db = fresh_db().await;
    let admin = &db.client;
    admin
        .batch_execute("SELECT barecount.tenant_create('acme', 'Acme')")
        .await
        .unwrap();
    let eng = login_role(
        admin,
        "susp_eng",
        &["barecount_engineer", "barecount_publisher"],
        Some("acme"),
    )
    .await;
    let e = connect_as(&db.url, &eng).await;
    e.execute(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let rows = serde_json::json!([order("A1", "east", 10.0), order("A2", "west", 5.0)]);
    e.execute("SELECT barecount.ingest('orders', $1)", &[&rows])
        .await
        .unwrap();
    e.batch_execute(
        "SELECT barecount.publish('sales', 'SELECT count(*)::bigint AS n FROM raw.orders')",
    )
    .await
    .unwrap();
    let token = api_token(admin, "acme", &["read"]).await;
    let flight = Flight::start(&db.url).await;
    let auth = Auth::Token(token.clone());
    let read = || client::query(&flight.url, &auth, "SELECT n FROM sales");
    let (_, b) = read().await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);

    // bad input and the wrong callers first
    for (sql, want) in [
        ("SELECT barecount.tenant_suspend('default', 'no')", "55000"),
        ("SELECT barecount.tenant_suspend('nosuch', 'no')", "42704"),
        ("SELECT barecount.tenant_suspend('acme', NULL)", "22004"),
        ("SELECT barecount.tenant_suspend('acme', '  ')", "22004"),
        ("SELECT barecount.tenant_resume('nosuch')", "42704"),
    ] {
        assert_eq!(outcome(admin, sql).await, want, "{sql}");
    }
    assert_eq!(
        outcome(&e, "SELECT barecount.tenant_suspend('acme', 'x')").await,
        "42501"
    );

    let suspend = "SELECT barecount.tenant_suspend('acme', 'unpaid invoice 2026-11')::text";
    assert_eq!(strings(admin, suspend).await, ["true"]);
    assert_eq!(strings(admin, suspend).await, ["false"]);

    // reads, writes, its catalog, acting as it, Flight: all refused, with a clear error
    for sql in [
        "SELECT count(*) FROM published_acme.sales",
        "SELECT count(*) FROM raw.orders",
        "SELECT barecount.ingest('orders', '[]')",
        "SELECT barecount.publish('sales', 'SELECT 1::bigint AS n')",
        "SELECT * FROM barecount.datasets",
        "SELECT barecount.current_tenant()",
    ] {
        match e.batch_execute(sql).await {
            Ok(()) => panic!("{sql} ran for a suspended tenant"),
            Err(err) => {
                let db_err = err.as_db_error().unwrap();
                assert_eq!(db_err.code().code(), "55000", "{sql}");
                assert_eq!(db_err.message(), "tenant \"acme\" is suspended", "{sql}");
                assert!(db_err.hint().unwrap_or_default().contains("tenant_resume"));
            }
        }
    }
    assert_eq!(
        outcome(admin, "SELECT barecount.act_as_tenant('acme')").await,
        "55000"
    );
    let err = read().await.unwrap_err();
    assert_eq!(code_of(&err), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("suspended"), "{err}");
    // a new token cannot be had either (the gateway's authentication refuses)
    let refused_auth = client::query(&flight.url, &Auth::Token(token.clone()), "SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(code_of(&refused_auth), tonic::Code::FailedPrecondition);

    // the data is kept
    assert_eq!(
        count(
            &db.superuser,
            "SELECT count(*) FROM raw.orders WHERE tenant_id = 'acme'"
        )
        .await,
        2
    );
    // other tenants go on
    assert_eq!(
        strings(admin, "SELECT barecount.current_tenant()").await,
        ["default"]
    );

    let resume = "SELECT barecount.tenant_resume('acme')::text";
    assert_eq!(strings(admin, resume).await, ["true"]);
    assert_eq!(strings(admin, resume).await, ["false"]);
    assert_eq!(count(&e, "SELECT n FROM published_acme.sales").await, 2);
    let (_, b) = read().await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);

    // both changes are receipts on acme's chain, and the chain verifies
    admin
        .batch_execute("SELECT barecount.act_as_tenant('acme')")
        .await
        .unwrap();
    assert_eq!(
        strings(
            admin,
            "SELECT event_type || ' ' || coalesce(inputs->>'reason', '') FROM barecount.ledger
              WHERE event_type LIKE 'tenant_%' ORDER BY seq"
        )
        .await,
        [
            "tenant_create ",
            "tenant_suspend unpaid invoice 2026-11",
            "tenant_resume "
        ]
    );
    assert!(chain_verifies(admin).await);
    flight.stop().await;
}

/// The real switch: `flight.parallel_load` off for a tenant makes barecount-flight load its
/// versions with one COPY; on again, in parallel. The server reads the flag at most
/// --flag-max-age-secs late (0 here: every load reads it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parallel_load_flag_switches_barecount_flight_s_loader() {
    let db = fresh_db().await;
    let admin = &db.client;
    admin
        .batch_execute(
            "SELECT barecount.publish('p', 'SELECT g::bigint AS n FROM generate_series(1, 100000) g');
             SELECT barecount.flag_set('flight.parallel_load', 'default', 'false')",
        )
        .await
        .unwrap();
    let mut config = Config::local(&db.url);
    config.cache_dir = temp_dir("bc-flag-parallel");
    config.parallel_load_min_bytes = 0; // every version would load in parallel
    config.flag_max_age_secs = 0;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let dir = config.cache_dir.clone();
    let flight = Flight::start_with(config).await;
    let m = flight.metrics_addr.unwrap();
    let sum = |ds: &'static str| {
        let (url, auth) = (flight.url.clone(), flight.auth.clone());
        async move {
            let (_, b) = client::query(&url, &auth, &format!("SELECT sum(n) FROM {ds}"))
                .await
                .unwrap();
            b[0].column(0).as_primitive::<Int64Type>().value(0)
        }
    };
    assert_eq!(sum("p").await, 100_000 * 100_001 / 2);
    let parallel = "barecount_flight_cache_parallel_loads_total";
    assert_eq!(metric(m, parallel).await, 0.0, "the flag is off");

    admin
        .batch_execute(
            "SELECT barecount.flag_set('flight.parallel_load', 'default', NULL);
             SELECT barecount.publish('p', 'SELECT g::bigint AS n FROM generate_series(1, 100001) g')",
        )
        .await
        .unwrap();
    assert_eq!(sum("p").await, 100_001 * 100_002 / 2);
    assert_eq!(metric(m, parallel).await, 1.0, "back to the default: on");
    flight.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A suspended tenant's queued deliveries wait: the delivery worker does not lease them until
/// the tenant is resumed.
#[tokio::test]
async fn a_suspended_tenant_s_deliveries_wait() {
    let db = fresh_db().await;
    let admin = &db.client;
    admin
        .batch_execute(
            "SELECT barecount.tenant_create('acme', 'Acme');
             SELECT barecount.act_as_tenant('acme');
             SELECT barecount.action_define('ops', 'webhook', '{\"url\": \"https://hooks.example.com/bc\"}');
             SELECT barecount.playbook_define('on_publish', ARRAY['publish'], '{}', ARRAY['ops']);
             SELECT barecount.publish('sales', 'SELECT 1::bigint AS n');
             SELECT barecount.act_as_tenant(NULL)",
        )
        .await
        .unwrap();
    let claim = "SELECT count(*) FROM barecount.gateway_deliveries_claim('w1', 10, '1 second')";
    admin
        .batch_execute("SELECT barecount.tenant_suspend('acme', 'audit')")
        .await
        .unwrap();
    assert_eq!(
        count(admin, claim).await,
        0,
        "nothing leased while suspended"
    );
    admin
        .batch_execute("SELECT barecount.tenant_resume('acme')")
        .await
        .unwrap();
    assert_eq!(count(admin, claim).await, 1, "leased once resumed");
}
