//! The SQL surface through a real client (tokio-postgres): errors carry specific SQLSTATEs and
//! hints, and nothing is half-written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{fresh_db, sqlstate, ORDERS_CONTRACT};

#[tokio::test]
async fn errors_are_specific_and_leave_nothing_behind() {
    let db = fresh_db().await;
    let pg = &db.client;

    let e = pg
        .query("SELECT barecount.contract_register('kind: [')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    let e = pg.query("SELECT barecount.contract_register('apiVersion: v3\nkind: DataContract\nid: x\nschema: [{name: x}]')", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    let db_err = e.as_db_error().unwrap();
    assert!(
        db_err.message().contains("\"version\""),
        "{}",
        db_err.message()
    );
    assert!(db_err.hint().is_some());

    let e = pg
        .query("SELECT * FROM barecount.ingest('orders', '[]')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&e),
        "42P01",
        "no contract governs orders yet, so it has no raw store"
    );

    pg.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let e = pg
        .query("SELECT * FROM barecount.ingest('orders', '{\"a\":1}')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    assert!(e.as_db_error().unwrap().message().contains("orders"));

    let e = pg
        .query(
            "SELECT * FROM barecount.publish('x', 'SELECT 1/0 AS boom')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    let left: i64 = pg
        .query_one(
            "SELECT (SELECT count(*) FROM barecount.dataset_versions) + (SELECT count(*) FROM pg_class WHERE relname LIKE 'x__v%')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "a failed publish leaves no version, table or receipt"
    );
    let entries: i64 = pg
        .query_one(
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'publish'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(entries, 0);

    let e = pg
        .batch_execute("UPDATE barecount.ledger SET entry_hash = 'mallory'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = db
        .superuser
        .batch_execute("UPDATE barecount.ledger SET entry_hash = 'mallory'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "2F002", "the guard holds for a superuser too");
}

#[tokio::test]
async fn concurrent_ingests_keep_one_chain() {
    let db = fresh_db().await;
    db.client
        .query(
            "SELECT barecount.contract_register($1)",
            &[&ORDERS_CONTRACT],
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let c = barecount_tests::connect(&url).await;
            for i in 0..10 {
                let rows = serde_json::json!([{"order_id": format!("C{w}{i}"), "order_date": "2024-01-01",
                    "store_id": "S1", "region": "east", "amount": 1, "quantity": 1}]);
                c.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = db
        .client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE l.prev_hash = p.entry_hash), max(l.seq)
               FROM barecount.ledger l JOIN barecount.ledger p ON p.seq = l.seq - 1",
            &[],
        )
        .await
        .unwrap();
    let (links, good, max): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(max, 41, "one registration and forty ingests, no gaps");
    assert_eq!(links, 40);
    assert_eq!(good, 40, "every entry links to its predecessor");
}

#[tokio::test]
async fn odd_but_legal_arguments_get_specific_errors_not_internal_ones() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        r#"CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT barecount.current_tenant(), order_date date, amount numeric);
           SELECT barecount.kpi_define('k', '{"source": "gdp.orders", "time": "order_date", "grain": "month", "measures": {"n": "count(*)"}}');"#,
    )
    .await
    .unwrap();
    for (sql, want) in [
        ("SELECT barecount.kpi_materialize('k', 'infinity', '2024-12-31')", "22008"),
        ("SELECT barecount.kpi_materialize('k', '2024-01-01', 'infinity')", "22008"),
        ("SELECT barecount.kpi_materialize('k', '-infinity', '2024-12-31')", "22008"),
        ("SELECT barecount.token_create('default', ARRAY[NULL]::text[], now() + interval '1 day')", "22004"),
        ("SELECT barecount.token_create('default', ARRAY['read', NULL], now() + interval '1 day')", "22004"),
        ("SELECT barecount.model_define('m', 'SELECT 1; SELECT 2')", "42601"),
        ("SELECT barecount.restatement('r', 'BEGIN')", "42601"),
        ("SELECT barecount.restatement('r', 'COMMIT')", "42601"),
        ("SELECT barecount.restatement('r', 'ROLLBACK')", "42601"),
        // a version no client could read is refused, naming the column
        ("SELECT barecount.publish('inf', $$SELECT 'infinity'::date AS d$$)", "22008"),
        ("SELECT barecount.publish('inf', $$SELECT '-infinity'::timestamptz AS t$$)", "22008"),
        ("SELECT barecount.publish('inf', $$SELECT 'infinity'::timestamp AS t$$)", "22008"),
        // exact decimals have no NaN or infinity
        ("SELECT barecount.publish('nan', $$SELECT 'NaN'::numeric AS v$$)", "22003"),
        ("SELECT barecount.publish('nan', $$SELECT '-Infinity'::numeric(10,2) AS v$$)", "22003"),
        // a NULL where a value is required, in functions that take optional arguments too
        ("SELECT barecount.model_define(NULL, 'SELECT 1')", "22004"),
        ("SELECT barecount.model_define('m', NULL)", "22004"),
        ("SELECT barecount.token_create(NULL, ARRAY['read'], now() + interval '1 day')", "22004"),
        ("SELECT barecount.token_create('default', ARRAY['read'], NULL)", "22004"),
        ("SELECT * FROM barecount.verify_dataset(NULL)", "22004"),
        ("SELECT barecount.period_reopen(NULL, 'period', '2024-01-01')", "22004"),
        ("SELECT * FROM barecount.quarantine_replay(NULL)", "22004"),
        ("SELECT barecount.contract_unsupported_fields(NULL)", "22004"),
        ("SELECT * FROM barecount.export_receipt(NULL, 'a', 'csv', 'p', 1, 1, 'x')", "22004"),
        ("SELECT * FROM barecount.export_receipt('default', 'a', 'csv', 'p', NULL, 1, 'x')", "22004"),
        // found by tests/tests/bad_input.rs: an unknown tenant is 42704, not a foreign-key error;
        // a NULL where a value is required is 22004, not a not-null violation
        ("SELECT barecount.entitlement_set('nope', '{}')", "42704"),
        ("SELECT barecount.usage_charge('nope', 'read', 1, 1)", "42704"),
        ("SELECT barecount.tenant_add_member('default', NULL)", "22004"),
        ("SELECT barecount.tenant_create('t_null_name', NULL)", "22004"),
        ("SELECT barecount.period_guard(NULL, 'd', 'nrf')", "22004"),
        // JSON that serde cannot hold: a specific error, never an internal one
        ("SELECT barecount.json_schema_validate('{}', '1e400')", "22003"),
        ("SELECT * FROM barecount.json_schema_errors('{\"type\": \"number\"}', '[1e400]')", "22003"),
        ("SELECT * FROM barecount.ingest('orders', '{\"amount\": 1e400}')", "22003"),
        ("SELECT barecount.entitlement_set('default', '{\"max_datasets\": 1e400}')", "22003"),
        ("SELECT barecount.kpi_define('big', '{\"source\": \"gdp.orders\", \"x\": 1e400}')", "22003"),
        // a calendar option of the wrong type is refused, not ignored
        (r#"SELECT barecount.calendar_create('c', '{"kind": "gregorian", "year_label": 1}')"#, "22023"),
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), want, "{sql}: {e}");
    }
    c.batch_execute(
        "SELECT barecount.publish('fin', $$SELECT DATE '2024-01-01' AS d, now() AS t$$)",
    )
    .await
    .unwrap();
    let deep = format!("{}{}", "[".repeat(130), "]".repeat(130));
    for sql in [
        format!("SELECT barecount.json_schema_validate('{{}}', '{deep}')"),
        format!("SELECT * FROM barecount.json_schema_errors('{{}}', '{deep}')"),
    ] {
        let e = c.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "54001", "{e}");
    }
    // a NULL scope list has no meaning either
    let e = c
        .batch_execute("SELECT barecount.token_create('default', NULL, now() + interval '1 day')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22004", "{e}");
}

#[tokio::test]
async fn functions_with_privileged_sections_never_run_in_parallel_workers() {
    let db = fresh_db().await;
    // pgrx's SPI runs read-write once a transaction has written, which Postgres refuses anywhere
    // in a parallel operation (the leader included): functions that use it are PARALLEL UNSAFE,
    // never RESTRICTED
    let restricted = barecount_tests::strings(
        &db.client,
        "SELECT proname::text FROM pg_proc WHERE pronamespace = 'barecount'::regnamespace AND proparallel = 'r' ORDER BY 1",
    )
    .await;
    assert!(restricted.is_empty(), "{restricted:?}");
    let unsafe_ = barecount_tests::strings(
        &db.client,
        "SELECT proname::text FROM pg_proc WHERE pronamespace = 'barecount'::regnamespace AND proparallel = 'u' ORDER BY 1",
    )
    .await;
    for f in [
        "contract_diff",
        "contract_unsupported_fields",
        "credential_check",
        "ledger_digest",
        "ledger_verify",
        "lineage_downstream",
        "lineage_upstream",
        "password_authenticate",
        "token_authenticate",
        "token_list",
        "verify_dataset",
        "verify_kpi_period",
    ] {
        assert!(
            unsafe_.iter().any(|r| r == f),
            "{f} is not PARALLEL UNSAFE: {unsafe_:?}"
        );
    }
    // and nothing that writes is parallel safe
    let unsafe_writers = barecount_tests::strings(
        &db.client,
        "SELECT proname::text FROM pg_proc WHERE pronamespace = 'barecount'::regnamespace AND provolatile = 'v' AND proparallel = 's' ORDER BY 1",
    )
    .await;
    assert!(unsafe_writers.is_empty(), "{unsafe_writers:?}");
    // Every PARALLEL SAFE function was audited (a comment beside each says why it is safe in a
    // worker); a new one must be added here on purpose, after the same audit.
    let safe = barecount_tests::strings(
        &db.client,
        "SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = 'barecount'::regnamespace AND proparallel = 's' ORDER BY 1",
    )
    .await;
    let audited = [
        "_assert_store_relation",
        // 0.2.0, flags and suspension: plain SQL and PL/pgSQL reads of barecount.flags,
        // flag_overrides and tenants (SECURITY DEFINER ones switch to their owner per call, as
        // current_tenant does); no privileged section, no writes, no state
        "_flag_bucket",
        "_flag_check",
        "_flag_resolve",
        "_flag_row",
        "_is_admin",
        "_ledger_at",
        "_ledger_field",
        "_ledger_inputs",
        "_ledger_seq",
        // 0.2.0, offboarding: catalog reads (the tables holding tenants' rows, a slice's hash)
        "_ledger_slice_sha256",
        // 0.2.0, master data: pure jsonb functions, and reads of master_entities and
        // master_records as their owner for the current tenant
        "_master_key",
        "_master_tracked_sha256",
        "_outer_role",
        // 0.2.0, policies: pure Rust (parse, decide: Cedar in core, no SPI) and reads of the
        // tenant's policies, tags, contracts and tokens
        "_policy_decide",
        "_policy_documents",
        "_policy_parse",
        "_policy_request",
        "_require_admin",
        "_require_role",
        "_tenant_active",
        "_tenant_required",
        "_tenant_schema",
        "_tenant_tables",
        "_untrusted_code",
        "add_working_days",
        "calendar_periods",
        "current_tenant",
        "fiscal_day_of_year",
        "fiscal_period",
        "fiscal_quarter",
        "fiscal_week",
        "fiscal_year",
        "flag",
        "flags_list",
        "gateway_flags",
        "is_working_day",
        "json_schema_errors",
        "json_schema_validate",
        "master_as_of",
        "master_at",
        "master_history",
        "next_working_day",
        "period_end",
        "period_label",
        "period_start",
        // plain SQL over row-level-secured tables, no privileged section (issue 15)
        "pipeline_runs_page",
        "policy_check",
        "previous_working_day",
        "setting",
        "validate",
        "validate_batch",
        "validation_errors",
        "version",
        "working_days_between",
    ];
    assert_eq!(
        safe, audited,
        "PARALLEL SAFE functions changed: audit the new ones"
    );
}

#[tokio::test]
async fn no_rust_backtrace_reaches_a_client() {
    let db = fresh_db().await;
    // the test cluster runs with RUST_BACKTRACE=1, as a careless deployment might
    // (scripts/cluster.sh): without that this test could not fail. The postmaster's environment
    // is intact in /proc (backends overwrite theirs with their process titles).
    let su = &db.superuser;
    let postmaster: String = su
        .query_one(
            "SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let environ = su
        .query_one(
            &format!("SELECT pg_read_binary_file('/proc/{postmaster}/environ')"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, Vec<u8>>(0);
    assert!(
        environ.split(|b| *b == 0).any(|v| v == b"RUST_BACKTRACE=1"),
        "the server does not run with RUST_BACKTRACE=1"
    );
    // errors Postgres raises inside BareCount's SPI calls pass through pgrx, which attaches a
    // backtrace to their DETAIL when one is captured
    for sql in [
        "SELECT barecount.publish('boom', 'SELECT 1/0 AS v')",
        "SELECT barecount.model_define('boom', 'SELECT 1/0 AS v'); SELECT * FROM barecount.model_run('boom')",
        "SELECT barecount.publish('boom', 'SELECT * FROM no_such_table')",
    ] {
        let e = db.client.batch_execute(sql).await.unwrap_err();
        let db_error = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        let everything = format!(
            "{} {} {}",
            db_error.message(),
            db_error.detail().unwrap_or(""),
            db_error.hint().unwrap_or("")
        );
        for trace in ["backtrace", "rustc", "pgrx", ".rs:", "::"] {
            assert!(!everything.contains(trace), "{sql}: {trace:?} reached the client: {everything}");
        }
        assert_ne!(sqlstate(&e), "XX000", "{sql}: {e}");
    }
}
