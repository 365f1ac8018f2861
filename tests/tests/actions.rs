//! Actions end to end: a KPI breach and an anomaly fire playbooks, `barecount-flight deliver`
//! signs and sends the webhooks, a receiver verifies them with the Standard Webhooks reference
//! verifier (PyPI `standardwebhooks`) and misbehaves on purpose; retries, dead letters, replay,
//! a killed worker, two workers, secrets' rotation and re-wrapping, and the attacks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

struct Rig {
    db: TestDb,
    /// the admin, reconnected after the keyring setting was made
    c: Client,
    gateway: String,
    keyring: PathBuf,
    dir: PathBuf,
    /// killed when the rig is dropped
    _receiver: Child,
    port: u16,
}

fn key_line(id: &str, byte: u8) -> String {
    use base64::Engine;
    format!(
        "{id}:{}\n",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

async fn rig() -> Rig {
    let db = fresh_db().await;
    let dir = temp_dir("bc-actions");
    let keyring = dir.join("keyring");
    std::fs::write(&keyring, key_line("k1", 7)).unwrap();
    // readable by the server's user; only a superuser may point BareCount at it
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        &keyring,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let dbname = db.url.rsplit('/').next().unwrap().to_owned();
    db.superuser
        .batch_execute(&format!(
            "ALTER DATABASE {dbname} SET barecount.secrets_keyring = '{}'",
            keyring.display()
        ))
        .await
        .unwrap();
    let c = connect_as(&db.url, TEST_ADMIN).await;
    let (_, gateway) = gateway_role(&db.superuser, &db.url).await;
    std::fs::write(dir.join("secrets"), "").unwrap();
    let python = std::env::var("BARECOUNT_PYTHON").unwrap_or_else(|_| {
        panic!("BARECOUNT_PYTHON is not set: run the end-to-end tests through `make test`")
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/webhook_receiver.py");
    let mut receiver = Command::new(python)
        .args([
            script,
            "--secrets",
            dir.join("secrets").to_str().unwrap(),
            "--log",
            dir.join("log").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    let port: u16 = ready
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("receiver said {ready:?}"))
        .parse()
        .unwrap();
    Rig {
        db,
        c,
        gateway,
        keyring,
        dir,
        _receiver: receiver,
        port,
    }
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The receiver verifies with these secrets from now on.
    fn trust(&self, secrets: &[&str]) {
        std::fs::write(self.dir.join("secrets"), secrets.join("\n")).unwrap();
    }

    async fn worker(&self, name: &str, lease_secs: u64) -> Child {
        let mut child = Command::new(flight_bin())
            .args([
                "deliver",
                "--database-url",
                &self.gateway,
                "--keyring",
                self.keyring.to_str().unwrap(),
                "--worker",
                name,
                "--poll-ms",
                "100",
                "--lease-secs",
                &lease_secs.to_string(),
                "--concurrency",
                "16",
            ])
            .env_remove("BARECOUNT_DATABASE_URL")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_default();
        assert!(line.contains("ready"), "worker {name} said {line:?}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        child
    }

    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (up to `secs`) until `done` holds of the receiver's log; returns the log.
    async fn until(&self, secs: u64, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the receiver saw {log:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a query returns true.
    async fn until_sql(&self, secs: u64, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.c.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) {
                return;
            }
            let states = strings(&self.c, "SELECT delivery_id || ' ' || state || ' ' || attempts || ' ' || coalesce(last_error, '') FROM barecount.deliveries ORDER BY 1").await;
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {sql}; deliveries: {states:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn webhook(&self, name: &str, path: &str, extra: &str) -> String {
        self.c
            .execute(
                &format!("SELECT barecount.action_define($1, 'webhook', jsonb_build_object('url', $2::text{extra}))"),
                &[&name, &self.url(path)],
            )
            .await
            .unwrap();
        self.c
            .query_one("SELECT barecount.webhook_secret_rotate($1)", &[&name])
            .await
            .unwrap()
            .get(0)
    }
}

/// A monthly KPI of net sales with a critical threshold above 500 and a MAD anomaly detector;
/// 24 ordinary months materialized.
async fn sales_kpi(c: &Client) {
    c.batch_execute(
        "CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, region text, amount numeric);
         INSERT INTO gdp.orders (order_date, region, amount)
              SELECT make_date(2022 + (i / 12), i % 12 + 1, 10), 'east', 100 + i % 5 FROM generate_series(0, 23) i;
         SELECT barecount.kpi_define('net', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"month\",
             \"dimensions\": [\"region\"], \"measures\": {\"net\": \"sum(amount)\"},
             \"thresholds\": [{\"measure\": \"net\", \"direction\": \"above\", \"warn\": 300, \"critical\": 500}],
             \"anomaly\": {\"method\": \"mad\", \"threshold\": 3.5}}');
         SELECT * FROM barecount.kpi_materialize('net', '2022-01-01', '2023-12-31');",
    )
    .await
    .unwrap();
}

async fn breach(c: &Client, month: &str, amount: i32) {
    c.execute(&format!("INSERT INTO gdp.orders (order_date, region, amount) VALUES ('{month}-10', 'east', {amount})"), &[]).await.unwrap();
    c.execute(
        &format!("SELECT * FROM barecount.kpi_materialize('net', '{month}-01', '{month}-28')"),
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_breach_and_an_anomaly_fire_playbooks_and_signed_webhooks_verify() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.events WHERE kind IN ('threshold', 'anomaly')"
        )
        .await,
        0,
        "ordinary months are quiet"
    );
    let secret = r.webhook("ops", "/ok", "").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    r.trust(&[&secret]);
    c.batch_execute(
        "SELECT barecount.playbook_define('page', ARRAY['threshold_breach'], '{\"kpi\": \"net\", \"level\": \"critical\"}', ARRAY['ops'], '1 hour');
         SELECT barecount.playbook_define('odd', ARRAY['anomaly'], '{\"kpi\": \"net\", \"min_score\": 3}', ARRAY['ops']);",
    )
    .await
    .unwrap();
    breach(c, "2024-01", 5000).await;
    // the decisions were made in the materializing transaction, each with a receipt
    let decisions = strings(
        c,
        "SELECT playbook || ':' || decision FROM barecount.playbook_decisions ORDER BY playbook",
    )
    .await;
    assert_eq!(decisions, ["odd:fired", "page:fired"]);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'playbook_decision'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.deliveries WHERE state = 'pending'"
        )
        .await,
        2
    );

    let _w = r.worker("w1", 30).await;
    let log = r
        .until(30, "two verified deliveries", |l| l.len() >= 2)
        .await;
    for e in &log {
        assert_eq!(e["verified"], true, "standardwebhooks verified it: {e}");
        assert_eq!(e["signatures"], 1);
    }
    let types: Vec<&str> = log
        .iter()
        .map(|e| e["body"]["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"barecount.threshold_breach") && types.contains(&"barecount.anomaly"),
        "{types:?}"
    );
    let breach_body = log
        .iter()
        .find(|e| e["body"]["type"] == "barecount.threshold_breach")
        .unwrap();
    assert_eq!(breach_body["body"]["data"]["payload"]["level"], "critical");
    assert_eq!(
        breach_body["body"]["data"]["payload"]["dims"]["region"],
        "east"
    );
    r.until_sql(30, "SELECT count(*) = 2 FROM barecount.deliveries WHERE state = 'delivered' AND ledger_seq IS NOT NULL").await;
    // the webhook-id the receiver saw is the delivery's
    let ids = strings(
        c,
        "SELECT webhook_id FROM barecount.deliveries ORDER BY webhook_id",
    )
    .await;
    let mut seen: Vec<String> = log
        .iter()
        .map(|e| e["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(ids, seen);
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type = 'delivery' AND inputs->>'outcome' = 'delivered'").await, 2);

    // recovery, then a breach of the same period again within the window: suppressed, with why
    c.batch_execute(
        "UPDATE gdp.orders SET amount = 100 WHERE amount = 5000;
         SELECT * FROM barecount.kpi_materialize('net', '2024-01-01', '2024-01-28');
         UPDATE gdp.orders SET amount = 6000 WHERE order_date = '2024-01-10';
         SELECT * FROM barecount.kpi_materialize('net', '2024-01-01', '2024-01-28');",
    )
    .await
    .unwrap();
    let reason: String = c
        .query_one("SELECT reason FROM barecount.playbook_decisions WHERE playbook = 'page' AND decision = 'suppressed'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("de-duplication window"), "{reason}");
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type = 'playbook_decision' AND inputs->>'decision' = 'suppressed'").await, 1);
    let ok: bool = c
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ok, "the ledger verifies");
}

#[tokio::test]
async fn failing_receivers_are_retried_dead_lettered_and_replayed() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    let fast = ", 'retry_schedule_s', jsonb_build_array(0.2, 0.2, 0.2)";
    let mut secrets = vec![];
    for (name, path, extra) in [
        ("flaky", "/flaky/2", fast.to_owned()),
        ("gone", "/gone", fast.to_owned()),
        ("drop", "/drop", fast.to_owned()),
        ("slow", "/slow/3000", format!("{fast}, 'timeout_ms', 300")),
        ("busy", "/retry-after/1", fast.to_owned()),
        ("later", "/flaky/4", fast.to_owned()),
    ] {
        secrets.push(r.webhook(name, path, &extra).await);
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    r.trust(&refs);
    c.batch_execute("SELECT barecount.playbook_define('all', ARRAY['threshold_breach'], '{}', ARRAY['flaky', 'gone', 'drop', 'slow', 'busy', 'later'])").await.unwrap();
    breach(c, "2024-01", 5000).await;
    let _w = r.worker("w1", 30).await;
    r.until_sql(
        60,
        "SELECT count(*) = 6 FROM barecount.deliveries WHERE state <> 'pending'",
    )
    .await;
    let state = |a: &'static str| async move {
        c.query_one("SELECT state, attempts, coalesce(last_error, '') FROM barecount.deliveries WHERE action = $1", &[&a])
            .await
            .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1), r.get::<_, String>(2)))
            .unwrap()
    };
    // 500, 500, then 200: delivered on the third attempt, the same webhook-id each time
    assert_eq!(state("flaky").await.0, "delivered");
    assert_eq!(state("flaky").await.1, 3);
    let log = r.log();
    let flaky: Vec<&Value> = log.iter().filter(|e| e["path"] == "/flaky/2").collect();
    assert_eq!(flaky.len(), 3);
    assert!(flaky
        .iter()
        .all(|e| e["webhook_id"] == flaky[0]["webhook_id"] && e["verified"] == true));
    // 410 is not retried
    let gone = state("gone").await;
    assert_eq!((gone.0.as_str(), gone.1), ("dead", 1), "{gone:?}");
    assert!(gone.2.contains("410"), "{}", gone.2);
    // dropped connections and timeouts: retried on the schedule, then dead with every attempt kept
    for a in ["drop", "slow"] {
        let s = state(a).await;
        assert_eq!((s.0.as_str(), s.1), ("dead", 4), "{a}: {s:?}");
        assert!(s.2.contains("gave up after 4 attempts"), "{a}: {}", s.2);
    }
    assert_eq!(count(c, "SELECT count(*) FROM barecount.delivery_attempts a JOIN barecount.deliveries d USING (delivery_id) WHERE d.action = 'slow' AND a.outcome = 'timeout'").await, 4);
    assert_eq!(count(c, "SELECT count(*) FROM barecount.delivery_attempts a JOIN barecount.deliveries d USING (delivery_id) WHERE d.action = 'drop' AND a.outcome = 'connection'").await, 4);
    // 429 with Retry-After: 1 — the next attempt waited the second, not the schedule's 0.2 s
    let busy: Vec<f64> = log
        .iter()
        .filter(|e| e["path"] == "/retry-after/1")
        .map(|e| e["at"].as_f64().unwrap())
        .collect();
    assert_eq!(busy.len(), 2);
    assert!(
        busy[1] - busy[0] >= 0.9,
        "Retry-After honoured: {:.2} s apart",
        busy[1] - busy[0]
    );
    // the dead letter's final outcome is a receipt; a replay sends it again with the same id
    let later = state("later").await;
    assert_eq!((later.0.as_str(), later.1), ("dead", 4));
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type = 'delivery' AND inputs->>'outcome' = 'dead'").await, 4);
    let replayed: i64 = c
        .query_one("SELECT barecount.delivery_replay(action => 'later')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replayed, 1);
    r.until_sql(
        30,
        "SELECT state = 'delivered' FROM barecount.deliveries WHERE action = 'later'",
    )
    .await;
    let later_log: Vec<Value> = r
        .log()
        .into_iter()
        .filter(|e| e["path"] == "/flaky/4")
        .collect();
    assert_eq!(
        later_log.len(),
        5,
        "4 failures, then the replay's first attempt"
    );
    assert!(later_log
        .iter()
        .all(|e| e["webhook_id"] == later_log[0]["webhook_id"]));
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'delivery_replay'"
        )
        .await,
        1
    );
    // replaying what is not a dead letter is refused by name
    let id: i64 = c
        .query_one(
            "SELECT delivery_id FROM barecount.deliveries WHERE action = 'flaky'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        refused(c, &format!("SELECT barecount.delivery_replay({id})")).await,
        "55000"
    );
    assert_eq!(
        refused(c, "SELECT barecount.delivery_replay(987654321)").await,
        "42704"
    );
}

#[tokio::test]
async fn a_killed_worker_loses_nothing_and_two_workers_never_send_twice() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    let s1 = r.webhook("held", "/hold/1", "").await;
    r.trust(&[&s1]);
    c.batch_execute("SELECT barecount.playbook_define('p', ARRAY['threshold_breach'], '{\"kpi\": \"net\"}', ARRAY['held'])").await.unwrap();
    breach(c, "2024-01", 5000).await;
    // worker 1 takes it with a 2-second lease; the receiver holds the request; worker 1 dies
    let mut w1 = r.worker("w1", 2).await;
    r.until(30, "the held request", |l| l.len() == 1).await;
    w1.start_kill().unwrap();
    w1.wait().await.unwrap();
    assert_eq!(count(c, "SELECT count(*) FROM barecount.deliveries WHERE state = 'pending' AND leased_by = 'w1'").await, 1);
    // worker 2 sends it again once the lease has passed: same webhook-id, delivered
    let _w2 = r.worker("w2", 30).await;
    let log = r.until(30, "the redelivery", |l| l.len() == 2).await;
    assert_eq!(log[0]["webhook_id"], log[1]["webhook_id"]);
    r.until_sql(30, "SELECT state = 'delivered' FROM barecount.deliveries")
        .await;
    assert_eq!(
        strings(
            c,
            "SELECT worker FROM barecount.delivery_attempts WHERE applied"
        )
        .await,
        ["w2"]
    );

    // two workers, 200 deliveries: each received exactly once
    let s2 = r.webhook("bulk", "/ok", "").await;
    r.trust(&[&s1, &s2]);
    c.batch_execute(
        "SELECT barecount.playbook_define('bulk', ARRAY['threshold_breach'], '{\"kpi\": \"many\"}', ARRAY['bulk'], '0');
         CREATE TABLE gdp.many (tenant_id text NOT NULL DEFAULT 'default', d date, v numeric);
         INSERT INTO gdp.many (d, v) SELECT date '2024-01-01' + i, 10 FROM generate_series(0, 199) i;
         SELECT barecount.kpi_define('many', '{\"source\": \"gdp.many\", \"time\": \"d\", \"grain\": \"day\", \"measures\": {\"v\": \"sum(v)\"},
             \"thresholds\": [{\"measure\": \"v\", \"direction\": \"above\", \"critical\": 5}]}');",
    )
    .await
    .unwrap();
    let _w3 = r.worker("w3", 30).await;
    c.batch_execute("SELECT * FROM barecount.kpi_materialize('many', '2024-01-01', '2024-12-31')")
        .await
        .unwrap();
    r.until_sql(60, "SELECT count(*) = 200 FROM barecount.deliveries WHERE action = 'bulk' AND state = 'delivered'").await;
    let log = r.log();
    let bulk: Vec<&str> = log
        .iter()
        .filter(|e| e["path"] == "/ok")
        .map(|e| e["webhook_id"].as_str().unwrap())
        .collect();
    let mut unique = bulk.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (bulk.len(), unique.len()),
        (200, 200),
        "every delivery once"
    );
    let by_worker = strings(c, "SELECT worker || ' ' || count(*) FROM barecount.delivery_attempts a JOIN barecount.deliveries d USING (delivery_id) WHERE d.action = 'bulk' GROUP BY worker ORDER BY worker").await;
    assert_eq!(by_worker.len(), 2, "both workers sent some: {by_worker:?}");
}

#[tokio::test]
async fn secrets_rotate_with_an_overlap_and_rewrap_without_reencrypting() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    let old = r.webhook("ops", "/ok", "").await;
    let new: String = c
        .query_one(
            "SELECT barecount.webhook_secret_rotate('ops', '1 hour')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(old, new);
    // a receiver that has only the old secret still verifies: both sign during the overlap
    r.trust(&[&old]);
    c.batch_execute(
        "SELECT barecount.playbook_define('p', ARRAY['threshold_breach'], '{}', ARRAY['ops'], '0')",
    )
    .await
    .unwrap();
    breach(c, "2024-01", 5000).await;
    let sealed_before = strings(
        &r.db.superuser,
        "SELECT encode(sealed, 'hex') FROM barecount.secrets ORDER BY secret_id",
    )
    .await;
    // the operator puts a new key first and re-wraps; the secrets' ciphertexts stay as they are
    std::fs::write(&r.keyring, key_line("k2", 9) + &key_line("k1", 7)).unwrap();
    let n: i64 = c
        .query_one("SELECT barecount.secrets_rewrap()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(
        strings(&r.db.superuser, "SELECT kek_id FROM barecount.tenant_keys").await,
        ["k2"]
    );
    assert_eq!(
        strings(
            &r.db.superuser,
            "SELECT encode(sealed, 'hex') FROM barecount.secrets ORDER BY secret_id"
        )
        .await,
        sealed_before
    );
    // the old key can go: the worker opens everything with the new one alone
    std::fs::write(&r.keyring, key_line("k2", 9)).unwrap();
    let _w = r.worker("w1", 30).await;
    let log = r.until(30, "the delivery", |l| !l.is_empty()).await;
    assert_eq!(log[0]["verified"], true);
    assert_eq!(log[0]["signatures"], 2, "old and new secret both sign");
    // a rotation with no overlap: the old secret stops at once
    let newest: String = c
        .query_one("SELECT barecount.webhook_secret_rotate('ops', '0')", &[])
        .await
        .unwrap()
        .get(0);
    r.trust(&[&newest]);
    breach(c, "2024-02", 5000).await;
    let log = r.until(30, "the second delivery", |l| l.len() == 2).await;
    assert_eq!(
        (log[1]["verified"].clone(), log[1]["signatures"].clone()),
        (Value::Bool(true), Value::from(1))
    );
    // credentials: the Authorization header comes from an encrypted secret
    c.batch_execute(
        "SELECT barecount.secret_set('hook_token', 'Bearer s3cr3t');
         SELECT barecount.action_define('ops', 'webhook', jsonb_build_object('url', (SELECT config->>'url' FROM barecount.actions WHERE name = 'ops' LIMIT 1), 'auth_secret', 'hook_token'));",
    )
    .await
    .unwrap();
    breach(c, "2024-03", 5000).await;
    let log = r.until(30, "the third delivery", |l| l.len() == 3).await;
    assert_eq!(log[2]["authorization"], "Bearer s3cr3t");
    // what a tenant can see of its secrets: names and fingerprints
    let listed = strings(c, "SELECT name || ' ' || purpose || ' ' || length(fingerprint) FROM barecount.secrets_list ORDER BY created_at").await;
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|l| l.ends_with(" 16")), "{listed:?}");
}

#[tokio::test]
async fn attacks_on_actions_and_secrets() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    let _ = r.webhook("ops", "/ok", "").await;
    c.batch_execute(
        "SELECT barecount.tenant_create('acme', 'Acme');
         SELECT barecount.playbook_define('p', ARRAY['threshold_breach'], '{}', ARRAY['ops'], '0');",
    )
    .await
    .unwrap();
    breach(c, "2024-01", 5000).await;
    let eng_a = login_role(c, "eng_a", &["barecount_engineer"], Some("default")).await;
    let eng_b = login_role(c, "eng_b", &["barecount_engineer"], Some("acme")).await;
    let a = connect_as(&r.db.url, &eng_a).await;
    let b = connect_as(&r.db.url, &eng_b).await;
    // another tenant sees none of it and cannot replay it
    for t in [
        "deliveries",
        "playbooks",
        "actions",
        "playbook_decisions",
        "delivery_attempts",
        "secrets_list",
    ] {
        assert_eq!(
            count(&b, &format!("SELECT count(*) FROM barecount.{t}")).await,
            0,
            "{t}"
        );
    }
    assert_eq!(
        count(&a, "SELECT count(*) FROM barecount.deliveries").await,
        1
    );
    let id: i64 = a
        .query_one("SELECT delivery_id FROM barecount.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        refused(&b, &format!("SELECT barecount.delivery_replay({id})")).await,
        "42704"
    );
    assert_eq!(
        refused(&b, "SELECT barecount.webhook_secret_rotate('ops')").await,
        "42704"
    );
    // secrets are never readable by tenant roles, not even as ciphertext
    for t in ["secrets", "tenant_keys"] {
        assert_eq!(
            refused(&a, &format!("SELECT * FROM barecount.{t}")).await,
            "42501",
            "{t}"
        );
    }
    // the worker's functions and the playbook trigger's are not theirs to call
    assert_eq!(
        refused(
            &a,
            "SELECT * FROM barecount.gateway_deliveries_claim('x', 10, '30 seconds')"
        )
        .await,
        "42501"
    );
    assert_eq!(refused(&a, &format!("SELECT barecount.gateway_delivery_report({id}, 1, 'x', now(), 'status', 200, NULL, NULL)")).await, "42501");
    assert_eq!(
        refused(&a, "SELECT barecount._playbooks_fire(ARRAY[1::bigint])").await,
        "42501"
    );
    assert_eq!(
        refused(&a, "SELECT barecount.secrets_rewrap()").await,
        "42501"
    );
    // the admin (not the owner) cannot fire playbooks by hand either
    assert_eq!(
        refused(c, "SELECT barecount._playbooks_fire(ARRAY[1::bigint])").await,
        "42501"
    );
    // hostile input is refused by name
    for (sql, code) in [
        ("SELECT barecount.action_define('x', 'webhook', '{\"url\": \"file:///etc/passwd\"}')", "22023"),
        ("SELECT barecount.action_define('x', 'webhook', '{\"url\": \"http://u:p@h/\"}')", "22023"),
        ("SELECT barecount.action_define('x', 'sql', '{\"function\": \"public.f(); DROP TABLE x; --\"}')", "22023"),
        ("SELECT barecount.action_define('x', 'shell', '{}')", "22023"),
        ("SELECT barecount.action_define('X Y', 'notify', '{\"channel\": \"c\"}')", "42602"),
        ("SELECT barecount.playbook_define('q', ARRAY['explosion'], '{}', ARRAY['ops'])", "22023"),
        ("SELECT barecount.playbook_define('q', ARRAY['anomaly'], '{\"colour\": 1}', ARRAY['ops'])", "22023"),
        ("SELECT barecount.playbook_define('q', ARRAY['anomaly'], '{}', ARRAY['nope'])", "42704"),
        ("SELECT barecount.playbook_define('q', ARRAY['anomaly'], '{}', ARRAY['ops'], '-1 hour')", "22023"),
        ("SELECT barecount.secret_set('t', '')", "22023"),
        ("SELECT * FROM barecount.kpi_anomalies('net', 'prophet')", "22023"),
        ("SELECT * FROM barecount.kpi_anomalies('net', 'mad', '{\"threshold\": \"high\"}')", "22023"),
        ("SELECT * FROM barecount.kpi_forecast('net', 0)", "22023"),
        ("SELECT * FROM barecount.kpi_forecast('net', 6, 'arima')", "22023"),
        ("SELECT * FROM barecount.kpi_forecast('net', 6, 'ets_mxm')", "22023"),
        ("SELECT * FROM barecount.kpi_forecast('nope', 6)", "42704"),
    ] {
        assert_eq!(refused(&a, sql).await, code, "{sql}");
    }
    // a revoked credential: a member removed from the tenant can do nothing more
    c.execute(
        &format!("SELECT barecount.tenant_remove_member('{eng_a}'::regrole)"),
        &[],
    )
    .await
    .unwrap();
    let a2 = connect_as(&r.db.url, &eng_a).await;
    assert_eq!(
        refused(
            &a2,
            "SELECT barecount.action_define('y', 'notify', '{\"channel\": \"c\"}')"
        )
        .await,
        "42501"
    );
    assert_eq!(
        refused(&a2, "SELECT barecount.webhook_secret_rotate('ops')").await,
        "42501"
    );
    assert_eq!(
        count(&a2, "SELECT count(*) FROM barecount.deliveries").await,
        0
    );
    // without a keyring, secrets are refused with a hint, not stored in the clear
    let dbname = r.db.url.rsplit('/').next().unwrap().to_owned();
    r.db.superuser
        .batch_execute(&format!(
            "ALTER DATABASE {dbname} RESET barecount.secrets_keyring"
        ))
        .await
        .unwrap();
    let fresh = connect_as(&r.db.url, TEST_ADMIN).await;
    assert_eq!(
        refused(&fresh, "SELECT barecount.secret_set('t', 'v')").await,
        "55000"
    );
    // a tenant role cannot point BareCount at a keyring of its own
    assert_eq!(
        refused(&b, "SET barecount.secrets_keyring = '/tmp/mine'").await,
        "42501"
    );
}

#[tokio::test]
async fn sql_and_notify_actions() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    // the tenant's own schema and functions (made by the superuser here; the admin may not CREATE)
    r.db.superuser
        .batch_execute(
            "CREATE SCHEMA ops; CREATE TABLE ops.seen (e jsonb);
             CREATE FUNCTION ops.on_event(e jsonb) RETURNS void LANGUAGE sql AS $$ INSERT INTO ops.seen VALUES (e) $$;
             CREATE FUNCTION ops.broken(e jsonb) RETURNS void LANGUAGE sql AS $$ SELECT 1/0 $$;
             GRANT USAGE ON SCHEMA ops TO PUBLIC; GRANT SELECT, INSERT ON ops.seen TO PUBLIC;",
        )
        .await
        .unwrap();
    c.batch_execute(
        "SELECT barecount.action_define('record', 'sql', '{\"function\": \"ops.on_event\"}');
         SELECT barecount.action_define('fail', 'sql', '{\"function\": \"ops.broken\"}');
         SELECT barecount.action_define('tell', 'notify', '{\"channel\": \"ops_alerts\"}');
         SELECT barecount.playbook_define('p', ARRAY['threshold_breach'], '{}', ARRAY['record', 'fail', 'tell']);
         LISTEN ops_alerts;",
    )
    .await
    .unwrap();
    breach(c, "2024-01", 5000).await;
    assert_eq!(count(c, "SELECT count(*) FROM barecount.deliveries WHERE action = 'tell' AND state = 'delivered'").await, 1);
    let ran = strings(c, "SELECT action || ' ' || state || ' ' || coalesce(error, '') FROM barecount.actions_run() ORDER BY action").await;
    assert_eq!(ran.len(), 2);
    assert!(ran[0].starts_with("fail dead 22012"), "{ran:?}");
    assert_eq!(ran[1].trim(), "record delivered");
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM ops.seen WHERE e->'data'->'payload'->>'level' = 'critical'"
        )
        .await,
        1
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.actions_run()").await,
        0,
        "nothing runs twice"
    );
}

#[tokio::test]
async fn anomalies_and_forecasts_from_sql() {
    let db = fresh_db().await;
    let c = &db.client;
    // a seasonal weekly series on the NRF calendar, FY2021-FY2023 (FY2023 has 53 weeks)
    c.batch_execute(
        "CREATE TABLE gdp.visits (tenant_id text NOT NULL DEFAULT 'default', d date, store text, n numeric);
         SELECT setseed(0.25);
         INSERT INTO gdp.visits (d, store, n)
              SELECT date '2021-01-31' + 7 * i, s, 1000 + 300 * sin(2 * pi() * i / 52.0) + 5 * i + 40 * (random() + random() + random() - 1.5)
                FROM generate_series(0, 155) i, unnest(ARRAY['a', 'b']) s;
         UPDATE gdp.visits SET n = n + 2500 WHERE store = 'a' AND d = date '2021-01-31' + 7 * 100;
         SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         SELECT barecount.kpi_define('visits', '{\"source\": \"gdp.visits\", \"time\": \"d\", \"calendar\": \"nrf\", \"grain\": \"week\",
             \"dimensions\": [\"store\"], \"measures\": {\"n\": \"sum(n)\"}}');
         SELECT * FROM barecount.kpi_materialize('visits', '2021-01-31', '2024-02-03');",
    )
    .await
    .unwrap();
    for method in ["seasonal", "esd", "mad"] {
        let flagged = strings(c, &format!("SELECT dims->>'store' || ' ' || period_start FROM barecount.kpi_anomalies('visits', '{method}') WHERE is_anomaly")).await;
        if method == "mad" {
            assert!(
                flagged.contains(&"a 2023-01-01".to_owned()),
                "{method}: {flagged:?}"
            );
        } else {
            assert_eq!(flagged, ["a 2023-01-01"], "{method}");
        }
    }
    // the next 6 retail weeks after FY2023-W52 start with the 53rd week
    let rows = c
        .query("SELECT period, period_start::text, step, forecast, lo95, hi95, lo80, hi80, model FROM barecount.kpi_forecast('visits', 6, 'holt_winters_additive') WHERE dims->>'store' = 'b' ORDER BY step", &[])
        .await
        .unwrap();
    let last: String = c
        .query_one("SELECT max(period) FROM kpi.visits", &[])
        .await
        .unwrap()
        .get(0);
    let labels: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), 6);
    assert!(labels[0] > last, "{labels:?} after {last}");
    for r in &rows {
        let (f, lo95, hi95, lo80, hi80): (f64, f64, f64, f64, f64) =
            (r.get(3), r.get(4), r.get(5), r.get(6), r.get(7));
        assert!(
            lo95 < lo80 && lo80 < f && f < hi80 && hi80 < hi95,
            "{f} [{lo80}, {hi80}] [{lo95}, {hi95}]"
        );
        assert_eq!(r.get::<_, String>(8), "ETS(A,A,A)");
    }
    assert_eq!(last, "FY2023-W52");
    assert_eq!(
        labels,
        [
            "FY2023-W53",
            "FY2024-W01",
            "FY2024-W02",
            "FY2024-W03",
            "FY2024-W04",
            "FY2024-W05"
        ]
    );
    // the series is 1000 + 300 sin(2 pi i / 52) + 5 i + noise: at i = 156 that is 1780
    let f1: f64 = rows[0].get(3);
    assert!((f1 - 1780.0).abs() < 60.0, "{f1}");
    // the 53rd week is outside the 52-week season: the model forecasts FY2024-W01 next, in
    // phase, and week 53 (the first step, its week before observed) takes that forecast
    assert_eq!(rows[0].get::<_, f64>(3), rows[1].get::<_, f64>(3));
    assert_ne!(rows[1].get::<_, f64>(3), rows[2].get::<_, f64>(3));
    // any ETS model by its letters: relative errors, additive trend and season
    let r = c
        .query_one("SELECT forecast, model FROM barecount.kpi_forecast('visits', 1, 'ets_maa') WHERE dims->>'store' = 'b'", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(1), "ETS(M,A,A)");
    assert!((r.get::<_, f64>(0) - 1780.0).abs() < 60.0);
    // auto combines three models by their Akaike weights; ets is the lowest AICc alone
    let model = |method: &'static str| {
        let c = &c;
        async move {
            c.query_one(&format!("SELECT model FROM barecount.kpi_forecast('visits', 1, '{method}') WHERE dims->>'store' = 'b'"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    let (auto, ets) = (model("auto").await, model("ets").await);
    assert_eq!(auto.matches(" + ").count(), 2, "{auto}");
    assert!(
        auto.starts_with(&format!("{ets} 0.")),
        "{auto} led by {ets}"
    );
    assert!(ets.starts_with("ETS(") && !ets.contains('+'), "{ets}");
}

#[tokio::test]
async fn a_forecast_crossing_a_threshold_is_an_event_once() {
    let db = fresh_db().await;
    let c = &db.client;
    // a rising monthly series: 60 months from 100 by 10 a month; the threshold is crossed only
    // in the forecast (the last month is 690, warn above 720)
    c.batch_execute(
        "CREATE TABLE gdp.signups (tenant_id text NOT NULL DEFAULT 'default', d date, n numeric);
         INSERT INTO gdp.signups (d, n) SELECT (date '2020-01-15' + make_interval(months => i))::date, 100 + 10 * i FROM generate_series(0, 59) i;
         SELECT barecount.kpi_define('signups', '{\"source\": \"gdp.signups\", \"time\": \"d\", \"grain\": \"month\",
             \"measures\": {\"n\": \"sum(n)\"}, \"thresholds\": [{\"measure\": \"n\", \"direction\": \"above\", \"warn\": 720, \"critical\": 1000}],
             \"forecast\": {\"method\": \"drift\", \"horizon\": 6}}');
         SELECT * FROM barecount.kpi_materialize('signups', '2020-01-01', '2024-12-31');",
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.events WHERE kind = 'threshold'"
        )
        .await,
        0,
        "no value has crossed yet"
    );
    let ev = c
        .query(
            "SELECT payload FROM barecount.events WHERE kind = 'forecast'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    let p: Value = ev[0].get(0);
    // drift: 690 + 10 h crosses 720 at h = 4, in 2025-04
    assert_eq!(
        (
            p["period"].as_str(),
            p["level"].as_str(),
            p["steps_ahead"].as_u64()
        ),
        (Some("2025-04"), Some("warn"), Some(4)),
        "{p}"
    );
    // the same forecast again is not news
    c.batch_execute(
        "SELECT * FROM barecount.kpi_materialize('signups', '2024-12-01', '2024-12-31')",
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.events WHERE kind = 'forecast'"
        )
        .await,
        1
    );
    // and a playbook reacts to it
    c.batch_execute(
        "SELECT barecount.action_define('tell', 'notify', '{\"channel\": \"growth\"}');
         SELECT barecount.playbook_define('growth', ARRAY['forecast_breach'], '{\"kpi\": \"signups\"}', ARRAY['tell']);
         UPDATE gdp.signups SET n = n + 200 WHERE d >= '2024-12-01';
         SELECT * FROM barecount.kpi_materialize('signups', '2024-12-01', '2024-12-31');",
    )
    .await
    .unwrap();
    assert_eq!(
        strings(
            c,
            "SELECT trigger || ' ' || decision FROM barecount.playbook_decisions"
        )
        .await,
        ["forecast_breach fired"]
    );
}

#[tokio::test]
async fn an_export_action_writes_the_dataset_through_barecount_flight() {
    let r = rig().await;
    let c = &r.c;
    sales_kpi(c).await;
    c.batch_execute("SELECT barecount.publish('net_by_month', 'SELECT period, net FROM kpi.net')")
        .await
        .unwrap();
    let exports = temp_dir("bc-action-exports");
    let mut config = barecount_flight::Config::local(&r.db.url);
    config.export_dir = exports.clone();
    let flight = Flight::start_with(config).await;
    // the export runs with an API token the tenant keeps as a secret: its tenant, scope and limits
    let row = c
        .query_one("SELECT token_id, token FROM barecount.token_create('default', ARRAY['export'], now() + interval '1 day')", &[])
        .await
        .unwrap();
    let (token_id, token): (String, String) = (row.get(0), row.get(1));
    c.execute("SELECT barecount.secret_set('export_token', $1)", &[&token])
        .await
        .unwrap();
    c.execute(
        "SELECT barecount.action_define('snapshot', 'export', jsonb_build_object('dataset', 'net_by_month', 'format', 'csv',
                 'flight_url', $1::text, 'token_secret', 'export_token', 'retry_schedule_s', jsonb_build_array(0.2)))",
        &[&flight.url],
    )
    .await
    .unwrap();
    c.batch_execute("SELECT barecount.playbook_define('snap', ARRAY['threshold_breach'], '{\"kpi\": \"net\"}', ARRAY['snapshot'])").await.unwrap();
    breach(c, "2024-01", 5000).await;
    let _w = r.worker("w1", 30).await;
    r.until_sql(
        60,
        "SELECT state = 'delivered' FROM barecount.deliveries WHERE action = 'snapshot'",
    )
    .await;
    let id: String = c
        .query_one(
            "SELECT webhook_id FROM barecount.deliveries WHERE action = 'snapshot'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let file = exports.join("default").join(format!("{id}.csv"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(
        text.lines().count(),
        1 + 24,
        "a header and the 24 published months: {text}"
    );
    // the export has its own receipt, besides the delivery's
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'export'"
        )
        .await,
        1
    );
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type = 'delivery' AND inputs->>'outcome' = 'delivered'").await, 1);
    // a revoked token: the next export fails and is retried, then dead-lettered with the reason
    c.execute("SELECT barecount.token_revoke($1)", &[&token_id])
        .await
        .unwrap();
    breach(c, "2024-02", 5000).await;
    r.until_sql(60, "SELECT count(*) = 1 FROM barecount.deliveries WHERE action = 'snapshot' AND state = 'dead'").await;
    let why: String = c.query_one("SELECT last_error FROM barecount.deliveries WHERE action = 'snapshot' AND state = 'dead'", &[]).await.unwrap().get(0);
    assert!(why.contains("export failed"), "{why}");
    flight.stop().await;
}

#[tokio::test]
async fn a_cool_down_quiets_a_playbook_after_it_fires() {
    let db = fresh_db().await;
    let c = &db.client;
    sales_kpi(c).await;
    c.batch_execute(
        "SELECT barecount.action_define('tell', 'notify', '{\"channel\": \"ops\"}');
         SELECT barecount.playbook_define('calm', ARRAY['threshold_breach'], '{\"kpi\": \"net\"}', ARRAY['tell'], '0', '1 hour');",
    )
    .await
    .unwrap();
    // two breaches of different months: not duplicates, but the second falls in the cool-down
    breach(c, "2024-01", 5000).await;
    breach(c, "2024-02", 5000).await;
    let rows = strings(
        c,
        "SELECT decision || ': ' || reason FROM barecount.playbook_decisions ORDER BY decision_id",
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].starts_with("fired"), "{rows:?}");
    assert!(rows[1].starts_with("suppressed: cool-down"), "{rows:?}");
    assert_eq!(
        count(c, "SELECT count(*) FROM barecount.deliveries").await,
        1
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM barecount.ledger WHERE event_type = 'playbook_decision'"
        )
        .await,
        2
    );
}
