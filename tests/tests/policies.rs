//! Policies (Cedar) per tenant, decided where the operations happen: export and read over
//! Flight, publish and ingest in SQL. Every decision under policies is a receipt; malformed
//! policies are refused with their location. Run as the real roles: an admin acting as the
//! tenant, its publisher, API tokens with and without the `data:pii` scope, another tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use barecount_flight::client::{self, Auth};
use barecount_flight::export::{ExportRequest, Format};
use barecount_tests::*;
use tokio_postgres::Client;
use tonic::Code;

const PII_POLICY: &str = r#"
@id("pii-export")
@reason("pii datasets are exported only with the data:pii scope")
forbid (principal, action == BareCount::Action::"export", resource)
when { resource.tags.contains("pii") && !context.scopes.contains("data:pii") };

@id("pii-read")
@reason("pii datasets are read only with the data:pii scope")
forbid (principal, action == BareCount::Action::"read", resource)
when { resource.tags.contains("pii") && !context.scopes.contains("data:pii") };

@id("csv-watermark")
@obligation("watermark")
permit (principal, action == BareCount::Action::"export", resource)
when { context.format == "csv" };
"#;

/// Tenant acme with a publisher who published `customers` (tagged pii) and `sales`.
async fn acme(db: &TestDb) -> Client {
    db.client
        .batch_execute("SELECT barecount.tenant_create('acme', 'Acme')")
        .await
        .unwrap();
    let publisher = login_role(
        &db.client,
        "pol_pub",
        &["barecount_engineer", "barecount_publisher"],
        Some("acme"),
    )
    .await;
    let p = connect_as(&db.url, &publisher).await;
    p.batch_execute(
        "SELECT barecount.publish('customers', 'SELECT g::bigint AS id, ''c'' || g AS email FROM generate_series(1, 5) g');
         SELECT barecount.publish('sales', 'SELECT g::bigint AS n FROM generate_series(1, 4) g');
         SELECT barecount.dataset_tags_set('customers', '{pii}')",
    )
    .await
    .unwrap();
    p
}

/// The admin, acting as acme, registers [`PII_POLICY`].
async fn with_pii_policy(admin: &Client) {
    admin
        .batch_execute("SELECT barecount.act_as_tenant('acme')")
        .await
        .unwrap();
    admin
        .execute("SELECT barecount.policy_define('pii', $1)", &[&PII_POLICY])
        .await
        .unwrap();
}

fn export_of(dataset: Option<&str>, query: Option<&str>) -> ExportRequest {
    ExportRequest {
        dataset: dataset.map(str::to_owned),
        version: None,
        query: query.map(str::to_owned),
        format: Format::Csv,
        name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pii_policy_blocks_exports_and_reads_without_the_scope_and_every_decision_is_a_receipt() {
    let db = fresh_db().await;
    let p = acme(&db).await;
    let admin = &db.client;
    with_pii_policy(admin).await;
    let plain = Auth::Token(api_token(admin, "acme", &["read", "export"]).await);
    let cleared = Auth::Token(api_token(admin, "acme", &["read", "export", "data:pii"]).await);
    let flight = Flight::start(&db.url).await;
    let url = &flight.url;

    // export of the pii dataset without the scope: refused with the policy's reason
    let e = client::export(url, &plain, &export_of(Some("customers"), None), |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e:#}");
    assert!(
        format!("{e:#}").contains("pii datasets are exported only with the data:pii scope"),
        "{e:#}"
    );
    // through a query too, even in a subquery
    for q in [
        "SELECT * FROM customers",
        "SELECT n FROM sales WHERE n IN (SELECT id FROM customers)",
    ] {
        let e = client::export(url, &plain, &export_of(None, Some(q)), |_, _| {})
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), Code::PermissionDenied, "{q}: {e:#}");
    }
    // reads: the same
    let e = client::query(url, &plain, "SELECT count(*) FROM customers")
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e:#}");
    // other datasets are untouched, and the scope lets it through
    let (_, b) = client::query(url, &plain, "SELECT sum(n) FROM sales")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 10);
    let receipt = client::export(
        url,
        &cleared,
        &export_of(Some("customers"), None),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(receipt.rows, 5);
    let (_, b) = client::query(url, &cleared, "SELECT count(*) FROM customers")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 5);

    // every decision is a receipt: the denials too (the gateway commits them before refusing)
    let decisions = strings(
        admin,
        "SELECT (inputs->>'action') || ' ' || (inputs->>'resource') || ' ' || (inputs->>'decision') || ' ' ||
                (inputs->'obligations')::text
           FROM barecount.ledger WHERE event_type = 'policy_decision' ORDER BY seq",
    )
    .await;
    assert!(
        decisions.contains(&"export customers deny []".to_string()),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&"export customers allow [\"watermark\"]".to_string()),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&"read customers deny []".to_string()),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&"read sales allow []".to_string()),
        "{decisions:?}"
    );
    // policy_check explains, records nothing
    let before = decisions.len();
    let token_id: String = admin
        .query_one(
            "SELECT token_id FROM barecount.token_list() WHERE 'data:pii' <> ALL (scopes) LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let why = p
        .query_one(
            "SELECT decision, policies, reasons, obligations FROM barecount.policy_check($1, 'export', 'customers', '{\"scopes\": [\"read\"], \"format\": \"csv\"}')",
            &[&format!("token:{token_id}")],
        )
        .await
        .unwrap();
    assert_eq!(why.get::<_, String>(0), "deny");
    assert_eq!(why.get::<_, Vec<String>>(1), ["pii#pii-export"]);
    assert_eq!(
        why.get::<_, Vec<String>>(2),
        ["pii datasets are exported only with the data:pii scope"]
    );
    let ok = p
        .query_one(
            "SELECT decision, obligations FROM barecount.policy_check($1, 'export', 'customers', '{\"scopes\": [\"data:pii\"], \"format\": \"csv\"}')",
            &[&format!("token:{token_id}")],
        )
        .await
        .unwrap();
    assert_eq!(ok.get::<_, String>(0), "allow");
    assert_eq!(ok.get::<_, Vec<String>>(1), ["watermark"]);
    assert_eq!(
        count(
            admin,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'policy_decision'"
        )
        .await as usize,
        before
    );
    // disabled, the policy decides nothing: the plain token exports again
    assert_eq!(
        strings(admin, "SELECT barecount.policy_disable('pii')::text").await,
        ["true"]
    );
    client::export(url, &plain, &export_of(Some("customers"), None), |_, _| {})
        .await
        .unwrap();
    assert!(chain_verifies(admin).await);
    flight.stop().await;
}

#[tokio::test]
async fn publish_and_ingest_are_decided_in_sql_as_the_caller() {
    let db = fresh_db().await;
    let p = acme(&db).await;
    let admin = &db.client;
    admin
        .batch_execute("SELECT barecount.act_as_tenant('acme')")
        .await
        .unwrap();
    admin
        .execute(
            "SELECT barecount.policy_define('freeze', $1)",
            &[&r#"
@id("frozen")
@reason("frozen datasets are not republished")
forbid (principal, action == BareCount::Action::"publish", resource)
when { resource.tags.contains("frozen") };

@id("big-batches")
@reason("batches of more than 3 rows go through the pipeline")
forbid (principal, action == BareCount::Action::"ingest", resource)
when { context.rows > 3 };
"#],
        )
        .await
        .unwrap();
    p.batch_execute("SELECT barecount.dataset_tags_set('sales', '{frozen}')")
        .await
        .unwrap();
    let e = p
        .batch_execute("SELECT barecount.publish('sales', 'SELECT 1::bigint AS n')")
        .await
        .expect_err("a frozen dataset was republished");
    let d = e.as_db_error().unwrap();
    assert_eq!(d.code().code(), "42501");
    assert_eq!(
        d.message(),
        "policy forbids publish of \"sales\": frozen datasets are not republished"
    );
    // the error rolled the publish back, but not the denial's receipt: it committed apart
    let denied: Vec<tokio_postgres::Row> = p
        .query(
            "SELECT seq, inputs->>'decision', inputs->>'principal', inputs->'reasons'->>0, inputs->'policies'->>0, tenant_id
               FROM barecount.ledger WHERE event_type = 'policy_decision' AND subject = 'policy:publish:sales'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 1, "the denial's receipt committed");
    let r = &denied[0];
    assert_eq!(
        d.detail().map(str::to_owned),
        Some(format!(
            "Denied by freeze#frozen. The decision is receipt {}.",
            r.get::<_, i64>(0)
        ))
    );
    let login: String = p
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ),
        (
            "deny".into(),
            login.clone(),
            "frozen datasets are not republished".into()
        )
    );
    assert_eq!(
        (r.get::<_, String>(4), r.get::<_, String>(5)),
        ("freeze#frozen".into(), "acme".into())
    );
    // the chain verifies with the worker's entry in it; the actor is the caller's login role
    assert!(chain_verifies(admin).await);
    assert_eq!(
        strings(
            admin,
            "SELECT actor FROM barecount.ledger WHERE event_type = 'policy_decision' AND subject = 'policy:publish:sales'"
        )
        .await,
        std::slice::from_ref(&login)
    );
    // still version 1; another dataset publishes, with an allow receipt
    assert_eq!(
        count(
            &p,
            "SELECT latest_version::bigint FROM barecount.datasets WHERE dataset = 'sales'"
        )
        .await,
        1
    );
    p.batch_execute("SELECT barecount.publish('returns', 'SELECT 1::bigint AS n')")
        .await
        .unwrap();
    assert_eq!(
        strings(
            &p,
            "SELECT inputs->>'decision' FROM barecount.ledger WHERE event_type = 'policy_decision' AND subject = 'policy:publish:returns'"
        )
        .await,
        ["allow"]
    );
    // ingest: the row count is in the context
    p.execute(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    let small = serde_json::json!([order("A1", "east", 1.0), order("A2", "east", 2.0)]);
    p.execute("SELECT barecount.ingest('orders', $1)", &[&small])
        .await
        .unwrap();
    let big: Vec<serde_json::Value> = (0..4)
        .map(|i| order(&format!("B{i}"), "west", 1.0))
        .collect();
    let e = p
        .execute(
            "SELECT barecount.ingest('orders', $1)",
            &[&serde_json::json!(big)],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(count(&p, "SELECT count(*) FROM raw.orders").await, 2);
    assert_eq!(
        strings(
            &p,
            "SELECT inputs->>'decision' FROM barecount.ledger WHERE event_type = 'policy_decision' AND subject = 'policy:ingest:orders' ORDER BY seq"
        )
        .await,
        ["allow", "deny"],
        "the refused batch's denial committed; the allowed one with its batch"
    );
    // a transaction that already wrote receipts holds the ledger's append lock: the worker
    // cannot append before it ends, so the caller does not wait for it; the receipt is
    // appended as soon as the transaction rolls back, and the error says so
    let before = count(&p, "SELECT count(*) FROM barecount.ledger").await;
    let e = p
        .batch_execute(
            "BEGIN;
             SELECT barecount.publish('returns', 'SELECT 2::bigint AS n');
             SELECT barecount.publish('sales', 'SELECT 2::bigint AS n');",
        )
        .await
        .unwrap_err();
    p.batch_execute("ROLLBACK").await.unwrap();
    let d = e.as_db_error().unwrap();
    assert_eq!(d.code().code(), "42501");
    assert_eq!(
        d.detail(),
        Some("Denied by freeze#frozen. Its receipt is appended as soon as this transaction ends (it holds the ledger's append lock).")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let denials = "SELECT count(*) FROM barecount.ledger WHERE event_type = 'policy_decision' AND subject = 'policy:publish:sales'";
    while count(&p, denials).await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deferred denial receipt never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // polling the ledger
    }
    // the publish and its allow receipt rolled back; only the denial's receipt is new
    assert_eq!(
        count(&p, "SELECT count(*) FROM barecount.ledger").await,
        before + 1
    );
    // a transaction that loops over caught denials starts one worker, not one per denial: their
    // receipts share its segment and are appended together, in one transaction of its own
    p.batch_execute(
        "BEGIN;
         SELECT barecount.publish('returns', 'SELECT 2::bigint AS n');
         DO $$ BEGIN
           FOR i IN 1..5 LOOP
             BEGIN
               PERFORM barecount.publish('sales', 'SELECT 2::bigint AS n');
             EXCEPTION WHEN insufficient_privilege THEN NULL;
             END;
           END LOOP;
         END $$;
         ROLLBACK;",
    )
    .await
    .unwrap();
    while count(&p, denials).await < 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "the looped denials' receipts never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // polling the ledger
    }
    assert_eq!(
        count(
            &p,
            "SELECT count(DISTINCT at) FROM (SELECT at FROM barecount.ledger WHERE event_type = 'policy_decision'
               AND subject = 'policy:publish:sales' ORDER BY seq DESC LIMIT 5) x"
        )
        .await,
        1,
        "one worker's transaction"
    );
    assert_eq!(count(&p, denials).await, 7);
    assert_eq!(
        count(&p, "SELECT count(*) FROM barecount.ledger").await,
        before + 6
    );
    // nobody else appends that way: not the tenant's roles, not its admin
    for c in [&p, admin] {
        assert_eq!(
            outcome(
                c,
                "SELECT barecount._ledger_append_autonomous('acme', 'policy_decision', 'policy:publish:x', '{}')"
            )
            .await,
            "42501"
        );
    }
    // who published is the login role (0.1.0 recorded the privileged section's role)
    assert_eq!(
        strings(
            &p,
            "SELECT DISTINCT published_by FROM barecount.dataset_versions"
        )
        .await,
        std::slice::from_ref(&login)
    );
    assert_eq!(
        strings(&p, "SELECT DISTINCT ingested_by FROM barecount.batches").await,
        std::slice::from_ref(&login)
    );
    // a dataset's owners (its contract's team, its latest publisher) and its contract's
    // attributes are in the request, as policy_check shows
    let attrs: serde_json::Value = p
        .query_one(
            "SELECT request->'resource_attrs' FROM barecount.policy_check(session_user::text, 'ingest', 'orders')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attrs,
        serde_json::json!({"tags": [], "layer": "raw", "contract": "orders", "contract_version": "1.0.0",
                           "domain": "", "status": "active", "owners": ["retail-data"]})
    );
    let attrs: serde_json::Value = p
        .query_one(
            "SELECT request->'resource_attrs' FROM barecount.policy_check(session_user::text, 'publish', 'returns')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attrs["owners"], serde_json::json!([login]));
    // and they decide: only a dataset's owners republish it
    admin
        .execute(
            "SELECT barecount.policy_define('owners', $1)",
            &[&r#"
@id("owners-only")
@reason("only a dataset's owners republish it")
forbid (principal, action == BareCount::Action::"publish", resource)
when { resource.layer == "published" && !resource.owners.contains(principal.name) };
"#],
        )
        .await
        .unwrap();
    let other = login_role(
        admin,
        "pol_pub2",
        &["barecount_engineer", "barecount_publisher"],
        Some("acme"),
    )
    .await;
    let o = connect_as(&db.url, &other).await;
    let e = o
        .batch_execute("SELECT barecount.publish('returns', 'SELECT 3::bigint AS n')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        e.as_db_error().map(|d| d.message()),
        Some("policy forbids publish of \"returns\": only a dataset's owners republish it")
    );
    p.batch_execute("SELECT barecount.publish('returns', 'SELECT 3::bigint AS n')")
        .await
        .unwrap();
    assert!(chain_verifies(admin).await);
}

#[tokio::test]
async fn malformed_policies_are_refused_with_their_location_and_only_admins_define_them() {
    let db = fresh_db().await;
    let p = acme(&db).await;
    let admin = &db.client;
    admin
        .batch_execute("SELECT barecount.act_as_tenant('acme')")
        .await
        .unwrap();
    let define = |name: &str, body: &str| {
        format!(
            "SELECT barecount.policy_define('{name}', $b${body}$b$)",
            name = name,
            body = body
        )
    };
    // an unknown attribute: 42703, with its line and column
    match admin
        .batch_execute(&define(
            "owners",
            "forbid (principal, action, resource is BareCount::Dataset)\nwhen {\n  resource.owner == \"bob\" };",
        ))
        .await
    {
        Ok(()) => panic!("an unknown attribute was accepted"),
        Err(e) => {
            let d = e.as_db_error().unwrap();
            assert_eq!(d.code().code(), "42703");
            assert!(d.message().contains("owner"), "{}", d.message());
            assert!(
                d.message().contains("at line 3, column 3"),
                "{}",
                d.message()
            );
            assert!(d.hint().unwrap_or_default().contains("tags, layer, contract"));
        }
    }
    let cases = [
        (
            define(
                "syntax",
                "permit (principal, action, resource)\nwhen { resource.tags.contains(\"x\") ",
            ),
            "42601",
        ),
        (
            define(
                "action",
                "forbid (principal, action == BareCount::Action::\"drop\", resource);",
            ),
            "42704",
        ),
        (
            define(
                "kind",
                "forbid (principal, action, resource is BareCount::Table);",
            ),
            "42704",
        ),
        (
            define(
                "types",
                "forbid (principal, action, resource) when { context.rows == \"many\" };",
            ),
            "42804",
        ),
        (
            define(
                "template",
                "permit (principal == ?principal, action, resource);",
            ),
            "0A000",
        ),
        (define("empty", "  "), "0A000"),
        (
            define("Bad Name", "permit (principal, action, resource);"),
            "42602",
        ),
        (
            "SELECT barecount.policy_define('nobody', NULL)".to_string(),
            "22004",
        ),
        (
            "SELECT barecount.policy_disable('nosuch')".to_string(),
            "42704",
        ),
        (
            "SELECT * FROM barecount.policy_check('nosuch_role', 'export', 'customers')"
                .to_string(),
            "42704",
        ),
        (
            "SELECT * FROM barecount.policy_check('token:nosuch', 'export', 'customers')"
                .to_string(),
            "42704",
        ),
        (
            "SELECT * FROM barecount.policy_check(current_user, 'drop', 'customers')".to_string(),
            "22023",
        ),
        (
            "SELECT * FROM barecount.policy_check(current_user, 'export', 'customers', '[]')"
                .to_string(),
            "22023",
        ),
    ];
    for (sql, want) in &cases {
        assert_eq!(&outcome(admin, sql).await, want, "{sql}");
    }
    // nothing registered by any of them
    assert_eq!(
        count(admin, "SELECT count(*) FROM barecount.policies").await,
        0
    );

    // versions: the same body again is a no-op; another body is version 2
    let ok = define("hours", "forbid (principal, action == BareCount::Action::\"publish\", resource) when { context.hour < 0 };");
    admin.batch_execute(&ok).await.unwrap();
    admin.batch_execute(&ok).await.unwrap();
    admin
        .batch_execute(&define("hours", "forbid (principal, action == BareCount::Action::\"publish\", resource) when { context.hour < 1 };"))
        .await
        .unwrap();
    assert_eq!(
        strings(
            admin,
            "SELECT name || '@' || version FROM barecount.policies ORDER BY version"
        )
        .await,
        ["hours@1", "hours@2"]
    );
    assert_eq!(
        count(
            admin,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'policy_define'"
        )
        .await,
        2
    );
    // the tenant's own roles cannot define or disable policies, nor another tenant see them
    for sql in [
        define("mine", "permit (principal, action, resource);"),
        "SELECT barecount.policy_disable('hours')".to_string(),
        "SELECT barecount.gateway_policy_decide('acme', 'x', 'export', 'customers')".to_string(),
        "SELECT barecount._policy_enforce('acme', 'x', 'export', 'customers', '{}', false)"
            .to_string(),
        "INSERT INTO barecount.policies VALUES ('acme', 'x', 9, '', '', 1, true, 'x', now(), 1)"
            .to_string(),
    ] {
        assert_eq!(outcome(&p, &sql).await, "42501", "{sql}");
    }
    let other = login_role(&db.client, "pol_other", &["barecount_engineer"], None).await;
    admin
        .batch_execute(&format!(
            "SELECT barecount.tenant_create('rival', 'Rival'); SELECT barecount.tenant_add_member('rival', '{other}')"
        ))
        .await
        .unwrap();
    let o = connect_as(&db.url, &other).await;
    assert_eq!(
        count(&o, "SELECT count(*) FROM barecount.policies").await,
        0
    );
    assert_eq!(
        count(&o, "SELECT count(*) FROM barecount.policy_registry").await,
        0
    );
    // publish obligations are one kind of policy in the registry, with their own behaviour
    p.batch_execute(
        "SELECT barecount.obligation_define('validated', 'publish', 'sales', '{\"require\": \"validated_batches\"}')",
    )
    .await
    .unwrap();
    assert_eq!(
        strings(&p, "SELECT kind || ' ' || name || ' ' || applies_to FROM barecount.policy_registry ORDER BY kind, name").await,
        [
            "cedar hours ingest, publish, export, read, deliver",
            "obligation validated publish sales"
        ]
    );
    // a revoked token gets no decision at all: the gateway's credential check refuses first
    let token = api_token(admin, "acme", &["read", "export"]).await;
    let flight = Flight::start(&db.url).await;
    let id: String = admin
        .query_one(
            "SELECT token_id FROM barecount.token_list() ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .execute("SELECT barecount.token_revoke($1)", &[&id])
        .await
        .unwrap();
    let e = client::export(
        &flight.url,
        &Auth::Token(token),
        &export_of(Some("sales"), None),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");
    flight.stop().await;
}

/// Deliveries: a playbook's delivery to an endpoint the tenant's policies forbid is a dead
/// letter with the reasons, never sent, and the decision's receipt stays with the event.
#[tokio::test]
async fn a_forbidden_delivery_is_a_dead_letter_with_its_reason() {
    let db = fresh_db().await;
    let p = acme(&db).await;
    let admin = &db.client;
    admin
        .batch_execute(
            "SELECT barecount.act_as_tenant('acme');
             SELECT barecount.action_define('ops', 'webhook', '{\"url\": \"https://hooks.example.com/bc\"}');
             SELECT barecount.action_define('audit', 'webhook', '{\"url\": \"https://audit.example.org/in\"}');
             SELECT barecount.playbook_define('on_publish', ARRAY['publish'], '{}', ARRAY['ops', 'audit'])",
        )
        .await
        .unwrap();
    admin
        .execute(
            "SELECT barecount.policy_define('egress', $1)",
            &[&r#"
@id("no-example-com")
@reason("webhooks go to example.org hosts only")
forbid (principal, action == BareCount::Action::"deliver", resource)
when { resource.kind == "webhook" && resource.host like "*.example.com" };
"#],
        )
        .await
        .unwrap();
    p.batch_execute("SELECT barecount.publish('sales', 'SELECT 9::bigint AS n')")
        .await
        .unwrap();
    assert_eq!(
        strings(
            admin,
            "SELECT action || ' ' || state || ' ' || coalesce(last_error, '-') FROM barecount.deliveries ORDER BY action"
        )
        .await,
        [
            "audit pending -",
            "ops dead policy forbids deliver of \"ops\": webhooks go to example.org hosts only"
        ]
    );
    assert_eq!(
        strings(
            admin,
            "SELECT (inputs->>'resource') || ' ' || (inputs->>'decision') || ' ' || (inputs->>'principal')
               FROM barecount.ledger WHERE event_type = 'policy_decision' AND inputs->>'action' = 'deliver' ORDER BY seq"
        )
        .await,
        ["ops deny playbook:on_publish", "audit allow playbook:on_publish"]
    );
}

/// The web app shows rows of a dataset (its page, its JSON API): the same read, decided by the
/// same policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_s_dataset_reads_are_decided_too() {
    let db = fresh_db().await;
    let _p = acme(&db).await;
    let admin = &db.client;
    with_pii_policy(admin).await;
    let plain = api_token(admin, "acme", &["read"]).await;
    let cleared = api_token(admin, "acme", &["read", "data:pii"]).await;
    let mut config = barecount_flight::Config::local(&db.url);
    config.web_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let flight = Flight::start_with(config).await;
    let base = format!("http://{}", flight.web_addr.unwrap());
    let http = reqwest::Client::new();
    let get = |path: &str, token: &str| http.get(format!("{base}{path}")).bearer_auth(token).send();
    let denied = get("/api/v1/datasets/customers", &plain).await.unwrap();
    assert_eq!(denied.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(denied
        .text()
        .await
        .unwrap()
        .contains("pii datasets are read only with the data:pii scope"));
    assert_eq!(
        get("/api/v1/datasets/customers", &cleared)
            .await
            .unwrap()
            .status(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        get("/api/v1/datasets/sales", &plain)
            .await
            .unwrap()
            .status(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        strings(
            admin,
            "SELECT (inputs->>'decision') || ' ' || (inputs->>'resource') FROM barecount.ledger
              WHERE event_type = 'policy_decision' AND inputs->>'action' = 'read' ORDER BY seq"
        )
        .await,
        ["deny customers", "allow customers", "allow sales"]
    );
    flight.stop().await;
}
