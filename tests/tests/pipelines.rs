//! Pipelines in a real Postgres, as the real roles: a retail pipeline (table connector →
//! contract → model → KPI on the NRF calendar → publish → hook) run over FY2024 P01–P06,
//! idempotency keys, receipts linked to the run, keyset-paged history, retries of transient
//! errors, failure and resume, quarantine thresholds, file connectors, the events outbox, and
//! the attacks: another tenant, hostile input, a revoked credential.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{
    connect_as, count, fresh_db, login_role, refused, sample_orders, sqlstate, strings, temp_dir,
    TestDb, ORDERS_CONTRACT,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const NRF: &str =
    r#"{"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}"#;

const MODEL: &str = "SELECT payload->>'order_id' AS order_id, (payload->>'order_date')::date AS order_date, \
     payload->>'region' AS region, (payload->>'amount')::numeric AS amount FROM raw.orders__accepted";

const SALES: &str = r#"{"source": "gdp.orders_clean", "time": "order_date", "grain": "period", "calendar": "nrf",
  "dimensions": ["region"], "measures": {"net": "sum(amount)", "orders": "count(*)"}}"#;

fn retail(quarantine: Value) -> Value {
    json!({"calendar": "nrf", "grain": "period", "retry": {"attempts": 3, "backoff_ms": 10},
      "steps": [
        {"name": "load", "kind": "ingest", "dataset": "orders", "source": {"table": "staging.feed"}, "quarantine": quarantine},
        {"name": "clean", "kind": "model", "model": "orders_clean", "after": ["load"]},
        {"name": "sales", "kind": "kpi", "kpi": "sales", "after": ["clean"]},
        {"name": "pub", "kind": "publish", "dataset": "sales_by_period", "source": "kpi.sales", "after": ["sales"]},
        {"name": "tell", "kind": "hook", "event": "sales_ready", "after": ["pub"]}]})
}

/// An engineer and publisher of the default tenant, with a staging schema of its own, the
/// orders contract, the NRF calendar, the model and the KPI.
async fn setup(db: &TestDb) -> (String, Client) {
    let eng = login_role(
        &db.client,
        "pl_eng",
        &["barecount_engineer", "barecount_publisher"],
        Some("default"),
    )
    .await;
    db.superuser
        .batch_execute(&format!("CREATE SCHEMA staging AUTHORIZATION {eng}"))
        .await
        .unwrap();
    let e = connect_as(&db.url, &eng).await;
    e.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await
    .unwrap();
    e.batch_execute(&format!(
        "SELECT barecount.calendar_create('nrf', '{NRF}');
         CREATE TABLE staging.feed (order_id text, order_date text, store_id text, region text, amount numeric, quantity int);
         SELECT barecount.model_define('orders_clean', $m${MODEL}$m$);
         SELECT * FROM barecount.model_run('orders_clean');
         SELECT barecount.kpi_define('sales', '{SALES}');"
    ))
    .await
    .unwrap();
    (eng, e)
}

/// Fills staging.feed with sample orders (2023-01-01 .. 2024-12-31) and `bad` invalid rows.
async fn feed(e: &Client, n: usize, bad: usize) {
    let mut rows: Vec<Value> = sample_orders(n);
    for i in 0..bad {
        rows.push(json!({"order_id": format!("bad{i}"), "order_date": "2024-03-01", "store_id": "S1", "region": "mars", "amount": 1, "quantity": 1}));
    }
    e.execute(
        "INSERT INTO staging.feed SELECT * FROM jsonb_populate_recordset(NULL::staging.feed, $1)",
        &[&Value::Array(rows)],
    )
    .await
    .unwrap();
}

async fn run(e: &Client, from: &str, to: &str, key: &str) -> (i64, String, bool) {
    let r = e
        .query_one(
            "SELECT run_id, status, replayed FROM barecount.pipeline_run('retail', $1, $2, $3)",
            &[&from, &to, &key],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test]
async fn a_retail_pipeline_backfills_calendar_periods_once_with_receipts() {
    let db = fresh_db().await;
    let (_, e) = setup(&db).await;
    feed(&e, 2000, 3).await;
    let v: i32 = e
        .query_one(
            "SELECT barecount.pipeline_define('retail', $1)",
            &[&retail(json!({"max_share": 0.05, "on_breach": "warn"}))],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
    // the same definition again is the same version
    let again: i32 = e
        .query_one(
            "SELECT barecount.pipeline_define('retail', $1)",
            &[&retail(json!({"max_share": 0.05, "on_breach": "warn"}))],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 1);
    // a playbook on the pipeline's publish and its hook (issue 16)
    e.batch_execute(
        "SELECT barecount.action_define('tell', 'notify', '{\"channel\": \"ops\"}');
         SELECT barecount.playbook_define('published', ARRAY['publish'], '{\"dataset\": \"sales_by_period\"}', ARRAY['tell'], '0');
         SELECT barecount.playbook_define('finished', ARRAY['hook', 'run_finished'], '{\"pipeline\": \"retail\"}', ARRAY['tell'], '0');",
    )
    .await
    .unwrap();

    let (run1, status, replayed) = run(&e, "FY2024-P01", "FY2024-P06", "backfill-2024-h1").await;
    assert_eq!((status.as_str(), replayed), ("succeeded", false));
    assert_eq!(
        strings(&e, "SELECT trigger || ' ' || decision FROM barecount.playbook_decisions ORDER BY decision_id").await,
        ["publish fired", "hook fired", "run_finished fired"]
    );
    // exactly the periods asked, on the retail calendar
    assert_eq!(
        strings(&e, "SELECT DISTINCT period FROM kpi.sales ORDER BY 1").await,
        [
            "FY2024-P01",
            "FY2024-P02",
            "FY2024-P03",
            "FY2024-P04",
            "FY2024-P05",
            "FY2024-P06"
        ]
    );
    // and the numbers are a plain GROUP BY's (NRF FY2024 P03 is 2024-04-07 .. 2024-05-04)
    let oracle = count(&e, "SELECT (sum(amount) * 100)::bigint FROM gdp.orders_clean WHERE order_date BETWEEN '2024-04-07' AND '2024-05-04' AND region = 'east'").await;
    assert_eq!(count(&e, "SELECT (net * 100)::bigint FROM kpi.sales WHERE period = 'FY2024-P03' AND region = 'east'").await, oracle);
    assert!(oracle > 0);

    // every step succeeded once, in order, with a receipt that names the receipts it wrote
    let steps = e
        .query(
            "SELECT step, status, attempts, rows_in, rows_out, receipts, ledger_seq FROM barecount.pipeline_run_steps WHERE run_id = $1 ORDER BY ordinal",
            &[&run1],
        )
        .await
        .unwrap();
    let names: Vec<String> = steps.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["load", "clean", "sales", "pub", "tell"]);
    for s in &steps {
        let step: String = s.get(0);
        assert_eq!(s.get::<_, String>(1), "succeeded", "{step}");
        assert_eq!(s.get::<_, i32>(2), 1, "{step}");
        let receipts: Vec<i64> = s.get(5);
        let seq: i64 = s.get(6);
        assert_eq!(step == "tell", receipts.is_empty(), "{step}: {receipts:?}");
        let inputs: Value = e
            .query_one("SELECT inputs FROM barecount.ledger WHERE seq = $1 AND event_type = 'pipeline_step'", &[&seq])
            .await
            .unwrap()
            .get(0);
        assert_eq!(inputs["run_id"], json!(run1), "{step}");
        for r in receipts {
            assert!(
                inputs["inputs"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(format!("ledger:{r}"))),
                "{step}: {inputs}"
            );
        }
    }
    let load = &steps[0];
    assert_eq!(
        (load.get::<_, Option<i64>>(3), load.get::<_, Option<i64>>(4)),
        (Some(2003), Some(2000))
    );
    // the run's own receipt lists the steps' receipts; the chain verifies
    let run_receipt: Value = e
        .query_one(
            "SELECT l.inputs FROM barecount.pipeline_runs r JOIN barecount.ledger l ON l.seq = r.ledger_seq WHERE r.run_id = $1",
            &[&run1],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(run_receipt["step_receipts"].as_array().unwrap().len(), 5);
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.ledger_verify() WHERE NOT ok"
        )
        .await,
        0
    );

    // the same key again returns the first run and runs nothing
    let ledger_before = count(&e, "SELECT count(*) FROM barecount.ledger").await;
    let (again, status, replayed) = run(&e, "FY2024-P01", "FY2024-P06", "backfill-2024-h1").await;
    assert_eq!(
        (again, status.as_str(), replayed),
        (run1, "succeeded", true)
    );
    assert_eq!(
        count(&e, "SELECT count(*) FROM barecount.ledger").await,
        ledger_before
    );
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);

    // a new run over the same input: the connector recognises it and lands nothing twice
    let (run2, status, _) = run(&e, "FY2024-P01", "FY2024-P01", "again").await;
    assert_eq!(status, "succeeded");
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    assert_eq!(
        strings(&e, &format!("SELECT status FROM barecount.pipeline_run_steps WHERE run_id = {run2} AND step = 'load'")).await,
        ["skipped"]
    );
    // a third run, dates instead of labels
    let (run3, _, _) = run(&e, "2024-02-04", "2024-03-02", "third").await;

    // history, newest first, a page at a time (keyset: the last run_id is the cursor)
    let page1: Vec<i64> = e
        .query(
            "SELECT run_id FROM barecount.pipeline_runs_page('retail', NULL, 2)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(page1, [run3, run2]);
    let page2: Vec<i64> = e
        .query(
            "SELECT run_id FROM barecount.pipeline_runs_page('retail', $1, 2)",
            &[&run2],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(page2, [run1]);
    assert_eq!(
        count(
            &e,
            &format!("SELECT count(*) FROM barecount.pipeline_runs_page('retail', {run1}, 2)")
        )
        .await,
        0
    );
    assert_eq!(
        refused(
            &e,
            "SELECT * FROM barecount.pipeline_runs_page('retail', NULL, 0)"
        )
        .await,
        "22023"
    );

    // the outbox: every run, the publishes, the quarantine and the hook, each claimed once
    let claimed: Vec<String> =
        strings(&e, "SELECT kind FROM barecount.events_claim('audit', 1000)").await;
    for k in [
        "run_started",
        "run_finished",
        "publish",
        "quarantine",
        "hook",
    ] {
        assert!(claimed.iter().any(|c| c == k), "{k} in {claimed:?}");
    }
    assert_eq!(claimed.iter().filter(|k| *k == "run_started").count(), 3);
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.events_claim('audit', 1000)"
        )
        .await,
        0,
        "claimed, not yet due again"
    );
    // another consumer sees everything too
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.events_claim('other', 1000)"
        )
        .await as usize,
        claimed.len()
    );
}

#[tokio::test]
async fn transient_errors_are_retried_and_a_failed_run_resumes_from_its_failed_step() {
    let db = fresh_db().await;
    let (_, e) = setup(&db).await;
    feed(&e, 300, 0).await;
    // a model that fails twice with a serialization failure (a sequence is not rolled back
    // with the attempt), then with a division by zero while the divisor the test controls is 0
    e.batch_execute(
        "CREATE SEQUENCE staging.flaky_calls;
         CREATE TABLE staging.divisor AS SELECT 0 AS d;
         CREATE FUNCTION staging.flaky() RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
           IF nextval('staging.flaky_calls') <= 2 THEN
             RAISE EXCEPTION 'simulated serialization failure' USING ERRCODE = '40001';
           END IF;
           RETURN 1 / (SELECT d FROM staging.divisor) = 1;
         END $f$;",
    )
    .await
    .unwrap();
    e.batch_execute(&format!(
        "SELECT barecount.model_define('orders_clean', $m${MODEL} WHERE staging.flaky()$m$)"
    ))
    .await
    .unwrap();
    e.query_one(
        "SELECT barecount.pipeline_define('retail', $1)",
        &[&retail(Value::Null)],
    )
    .await
    .unwrap_err();
    let spec = {
        let mut s = retail(json!({"max_share": 0.5}));
        s["steps"][0].as_object_mut().unwrap().remove("quarantine");
        s
    };
    e.query_one("SELECT barecount.pipeline_define('retail', $1)", &[&spec])
        .await
        .unwrap();

    let r = e
        .query_one("SELECT run_id, status, failed_step, error_sqlstate, error_message FROM barecount.pipeline_run('retail', 'FY2023-P01', 'FY2023-P02', 'k')", &[])
        .await
        .unwrap();
    let run_id: i64 = r.get(0);
    assert_eq!(
        (
            r.get::<_, String>(1),
            r.get::<_, Option<String>>(2),
            r.get::<_, Option<String>>(3)
        ),
        ("failed".into(), Some("clean".into()), Some("22012".into()))
    );
    // the model's step: two transient failures retried, then the division by zero (not
    // transient) failed the run; each attempt's SQLSTATE is kept
    let (attempts, errors): (i32, Value) = {
        let r = e
            .query_one("SELECT attempts, attempt_errors FROM barecount.pipeline_run_steps WHERE run_id = $1 AND step = 'clean'", &[&run_id])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(attempts, 3);
    let states: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sqlstate"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["40001", "40001", "22012"]);
    assert!(errors[0]["retry_in_ms"].as_i64().unwrap() >= 5);
    assert_eq!(
        strings(&e, &format!("SELECT step || ':' || status FROM barecount.pipeline_run_steps WHERE run_id = {run_id} ORDER BY ordinal")).await,
        ["load:succeeded", "clean:failed", "sales:pending", "pub:pending", "tell:pending"]
    );
    // what the failed attempts did was rolled back; the load before them stands
    assert_eq!(count(&e, "SELECT count(*) FROM gdp.orders_clean").await, 0);
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.pipeline_runs WHERE status = 'failed' AND failed_step = 'clean' AND error_sqlstate = '22012'").await, 1);

    // fixed, the run resumes from the failed step: the load is not run again
    e.batch_execute("UPDATE staging.divisor SET d = 1")
        .await
        .unwrap();
    let r = e
        .query_one(
            "SELECT status, replayed FROM barecount.pipeline_resume($1)",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "succeeded");
    assert_eq!(
        strings(&e, &format!("SELECT step || ':' || status || ':' || attempts FROM barecount.pipeline_run_steps WHERE run_id = {run_id} ORDER BY ordinal")).await,
        ["load:succeeded:1", "clean:succeeded:4", "sales:succeeded:1", "pub:succeeded:1", "tell:succeeded:1"]
    );
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    assert!(count(&e, "SELECT count(*) FROM kpi.sales").await > 0);
    // a succeeded run cannot be resumed; the same key still returns it
    assert_eq!(
        refused(
            &e,
            &format!("SELECT * FROM barecount.pipeline_resume({run_id})")
        )
        .await,
        "55000"
    );
    let again = e.query_one("SELECT run_id, replayed FROM barecount.pipeline_run('retail', 'FY2023-P01', 'FY2023-P02', 'k')", &[]).await.unwrap();
    assert_eq!(
        (again.get::<_, i64>(0), again.get::<_, bool>(1)),
        (run_id, true)
    );
    let failed = count(
        &e,
        "SELECT count(*) FROM barecount.events WHERE kind = 'run_failed'",
    )
    .await;
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn a_quarantine_spike_fails_the_run_and_lands_nothing() {
    let db = fresh_db().await;
    let (_, e) = setup(&db).await;
    feed(&e, 20, 10).await;
    e.query_one(
        "SELECT barecount.pipeline_define('retail', $1)",
        &[&retail(json!({"max_share": 0.1, "on_breach": "fail"}))],
    )
    .await
    .unwrap();
    // a playbook on the spike and the failure (issue 16): both decided, in the run's transaction
    e.batch_execute(
        "SELECT barecount.action_define('tell', 'notify', '{\"channel\": \"ops\"}');
         SELECT barecount.playbook_define('ops', ARRAY['quarantine_spike', 'run_failed'], '{\"pipeline\": \"retail\"}', ARRAY['tell']);",
    )
    .await
    .unwrap();
    let r = e
        .query_one("SELECT status, failed_step, error_sqlstate, error_message FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P01')", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, Option<String>>(1),
            r.get::<_, Option<String>>(2)
        ),
        ("failed".into(), Some("load".into()), Some("23514".into()))
    );
    let msg: String = r.get(3);
    assert!(msg.contains("quarantined 10 of 30 rows"), "{msg}");
    assert_eq!(
        count(&e, "SELECT count(*) FROM barecount.batches").await,
        0,
        "the batch is rolled back"
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.events WHERE kind = 'quarantine_threshold'"
        )
        .await,
        1
    );
    assert_eq!(
        strings(&e, "SELECT trigger || ' ' || decision FROM barecount.playbook_decisions ORDER BY decision_id").await,
        ["quarantine_spike fired", "run_failed fired"]
    );
    // as a warning, the run goes on and the step says so
    e.query_one(
        "SELECT barecount.pipeline_define('retail', $1)",
        &[&retail(json!({"max_share": 0.1, "on_breach": "warn"}))],
    )
    .await
    .unwrap();
    let r = e.query_one("SELECT run_id, status FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P01')", &[]).await.unwrap();
    assert_eq!(r.get::<_, String>(1), "succeeded");
    let id: i64 = r.get(0);
    assert_eq!(strings(&e, &format!("SELECT status FROM barecount.pipeline_run_steps WHERE run_id = {id} AND step = 'load'")).await, ["warned"]);
}

#[tokio::test]
async fn definitions_are_checked_and_refusals_name_the_step() {
    let db = fresh_db().await;
    let (_, e) = setup(&db).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"steps": [{"name": "k", "kind": "kpi", "kpi": "nope"}]}),
            "42704",
            "step \"k\" names KPI \"nope\"",
        ),
        (
            json!({"steps": [{"name": "m", "kind": "model", "model": "nope"}]}),
            "42704",
            "step \"m\" names model \"nope\"",
        ),
        (
            json!({"steps": [{"name": "i", "kind": "ingest", "dataset": "nope", "source": {"table": "staging.feed"}}]}),
            "42704",
            "step \"i\" names dataset",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "hook", "event": "x", "after": ["b"]}, {"name": "b", "kind": "hook", "event": "x", "after": ["a"]}]}),
            "42P19",
            "a -> b -> a",
        ),
        (
            json!({"calendar": "nrf", "grain": "week", "steps": [{"name": "k", "kind": "kpi", "kpi": "sales"}]}),
            "22023",
            "step \"k\": KPI \"sales\" is by period of calendar \"nrf\"",
        ),
        (
            json!({"calendar": "nope", "grain": "week", "steps": [{"name": "k", "kind": "hook", "event": "x"}]}),
            "22023",
            "calendar \"nope\"",
        ),
        (
            json!({"calendar": "nrf", "grain": "period", "steps": [{"name": "k", "kind": "kpi", "kpi": "sales"}, {"name": "m", "kind": "model", "model": "orders_clean"}]}),
            "22023",
            "\"k\": reads gdp.orders_clean, which step \"m\" builds",
        ),
        (
            json!({"steps": [{"name": "x", "kind": "sql", "sql": "DROP TABLE raw.orders"}]}),
            "22023",
            "unknown kind \"sql\"",
        ),
        (json!("steps"), "22023", "must be a JSON object"),
    ];
    for (spec, state, says) in cases {
        let err = e
            .query_one("SELECT barecount.pipeline_define('p', $1)", &[&spec])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), state, "{spec}: {err:?}");
        let msg = err.as_db_error().unwrap().message().to_owned();
        assert!(msg.contains(says), "{spec}: {msg}");
    }
    assert_eq!(
        refused(
            &e,
            "SELECT barecount.pipeline_define('Bad Name', '{\"steps\": []}')"
        )
        .await,
        "42602"
    );
    assert_eq!(
        count(&e, "SELECT count(*) FROM barecount.pipelines").await,
        0
    );
}

#[tokio::test]
async fn pipelines_refuse_other_tenants_hostile_input_and_revoked_credentials() {
    let db = fresh_db().await;
    let (eng, e) = setup(&db).await;
    feed(&e, 50, 0).await;
    e.query_one(
        "SELECT barecount.pipeline_define('retail', $1)",
        &[&retail(Value::Null)],
    )
    .await
    .unwrap_err();
    let mut spec = retail(json!({"max_share": 0.5}));
    spec["steps"][0]
        .as_object_mut()
        .unwrap()
        .remove("quarantine");
    e.query_one("SELECT barecount.pipeline_define('retail', $1)", &[&spec])
        .await
        .unwrap();
    let (run_id, _, _) = run(&e, "FY2024-P01", "FY2024-P01", "k").await;

    // another tenant sees no pipeline, no run, no event, and cannot resume ours
    db.client
        .batch_execute("SELECT barecount.tenant_create('acme', 'Acme')")
        .await
        .unwrap();
    let other = login_role(
        &db.client,
        "pl_acme",
        &["barecount_engineer", "barecount_publisher"],
        Some("acme"),
    )
    .await;
    let o = connect_as(&db.url, &other).await;
    assert_eq!(
        refused(
            &o,
            "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P01')"
        )
        .await,
        "42704"
    );
    assert_eq!(
        refused(
            &o,
            &format!("SELECT * FROM barecount.pipeline_resume({run_id})")
        )
        .await,
        "42704"
    );
    assert_eq!(
        count(&o, "SELECT count(*) FROM barecount.pipeline_runs").await,
        0
    );
    assert_eq!(
        count(&o, "SELECT count(*) FROM barecount.pipeline_run_steps").await,
        0
    );
    assert_eq!(
        count(
            &o,
            "SELECT count(*) FROM barecount.events_claim('audit', 100)"
        )
        .await,
        0
    );
    assert_eq!(
        count(&o, "SELECT count(*) FROM barecount.pipeline_runs_page()").await,
        0
    );
    // acking ids of our events from there does nothing to ours
    assert_eq!(count(&o, "SELECT barecount.events_ack('audit', ARRAY(SELECT generate_series(1, 100)::bigint))::bigint").await, 0);

    // hostile input: clear errors, nothing run
    for (sql, state) in [
        ("SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P99', 'FY2024-P99')", "22007"),
        ("SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P06', 'FY2024-P01')", "22007"),
        ("SELECT * FROM barecount.pipeline_run('retail', '''; DROP TABLE raw.orders; --', '2024-01-01')", "22007"),
        ("SELECT * FROM barecount.pipeline_run('retail', '2024-01-01', '2024-02-01', repeat('k', 500))", "22023"),
        ("SELECT * FROM barecount.pipeline_run('nope', '2024-01-01', '2024-02-01')", "42704"),
        ("SELECT * FROM barecount.pipeline_resume(-1)", "42704"),
        ("SELECT * FROM barecount.events_claim('''; drop', 10)", "22023"),
        ("SELECT * FROM barecount.events_claim('ok', 0)", "22023"),
        ("SELECT * FROM barecount.events_claim('ok', 10, '0 seconds')", "22023"),
        ("SELECT * FROM barecount.pipeline_schedule('retail', '* * * * *', true)", "55000"),
    ] {
        assert_eq!(refused(&e, sql).await, state, "{sql}");
    }
    // the bookkeeping is BareCount's: no role writes it directly
    for sql in [
        "UPDATE barecount.pipeline_runs SET status = 'succeeded'",
        "DELETE FROM barecount.pipeline_run_steps",
        "INSERT INTO barecount.events (tenant_id, kind, subject) VALUES ('default', 'hook', 'forged')",
        "SELECT barecount._event_emit('default', 'hook', 'forged', '{}')",
    ] {
        assert_eq!(refused(&e, sql).await, "42501", "{sql}");
    }
    // a reader may not run pipelines
    let reader = login_role(
        &db.client,
        "pl_reader",
        &["barecount_reader"],
        Some("default"),
    )
    .await;
    let r = connect_as(&db.url, &reader).await;
    assert_eq!(
        refused(
            &r,
            "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P01')"
        )
        .await,
        "42501"
    );

    // a revoked credential: removed from its tenant, the role runs nothing
    db.client
        .execute(
            "SELECT barecount.tenant_remove_member($1::text::regrole)",
            &[&eng],
        )
        .await
        .unwrap();
    let e2 = connect_as(&db.url, &eng).await;
    assert_eq!(
        refused(
            &e2,
            "SELECT * FROM barecount.pipeline_run('retail', 'FY2024-P01', 'FY2024-P01', 'x')"
        )
        .await,
        "42501"
    );
    assert_eq!(
        refused(&e2, "SELECT * FROM barecount.events_claim('audit', 10)").await,
        "42501"
    );
}

#[tokio::test]
async fn file_connectors_read_only_the_allowed_directory_and_land_each_file_once() {
    let db = fresh_db().await;
    let (_, e) = setup(&db).await;
    let dir = temp_dir("bc-loads");
    let outside = temp_dir("bc-outside");
    std::fs::write(
        dir.join("orders.csv"),
        "order_id,order_date,store_id,region,amount,quantity\nA1,2024-02-10,S1,east,10.50,1\nA2,2024-02-11,S1,west,3,2\nbad,2024-02-11,S1,mars,1,1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("orders.jsonl"),
        "{\"order_id\": \"B1\", \"order_date\": \"2024-02-12\", \"store_id\": \"S2\", \"region\": \"north\", \"amount\": 4, \"quantity\": 1}\n\n",
    )
    .unwrap();
    std::fs::write(outside.join("secret.csv"), "order_id\nX1\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.csv"), dir.join("escape.csv")).unwrap();
    for d in [&dir, &outside] {
        std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(d)
            .status()
            .unwrap();
    }

    // off until a superuser names the directory
    assert_eq!(
        refused(
            &e,
            "SELECT * FROM barecount.ingest_file('orders', 'orders.csv', 'csv')"
        )
        .await,
        "55000"
    );
    let dbname = db.url.rsplit('/').next().unwrap().to_owned();
    db.superuser
        .batch_execute(&format!(
            "ALTER DATABASE {dbname} SET barecount.load_directory = '{}'",
            dir.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        refused(&e, "SET barecount.load_directory = '/'").await,
        "42501",
        "only a superuser sets it"
    );
    let e = connect_as(
        &db.url,
        &login_role(
            &db.client,
            "pl_files",
            &["barecount_engineer"],
            Some("default"),
        )
        .await,
    )
    .await;

    let r = e.query_one("SELECT batch_id, accepted, quarantined, already_landed FROM barecount.ingest_file('orders', 'orders.csv', 'csv')", &[]).await.unwrap();
    assert_eq!(
        (r.get::<_, i64>(1), r.get::<_, i64>(2), r.get::<_, bool>(3)),
        (2, 1, false)
    );
    // CSV cells are typed by the contract: the amount is a number
    assert_eq!(
        strings(
            &e,
            "SELECT payload->>'amount' FROM raw.orders__accepted WHERE payload->>'order_id' = 'A1'"
        )
        .await,
        ["10.5"],
        "numbers as the text path holds them (doubles)"
    );
    assert_eq!(count(&e, "SELECT count(*) FROM raw.orders__accepted WHERE jsonb_typeof(payload->'amount') = 'number'").await, 2);
    // the same file again is recognised
    let r = e.query_one("SELECT batch_id, accepted, already_landed FROM barecount.ingest_file('orders', 'orders.csv', 'csv')", &[]).await.unwrap();
    assert_eq!((r.get::<_, i64>(1), r.get::<_, bool>(2)), (0, true));
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    let r = e
        .query_one(
            "SELECT accepted FROM barecount.ingest_file('orders', 'orders.jsonl', 'jsonl')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 1);
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.connector_reads WHERE source LIKE 'file:orders.%'"
        )
        .await,
        2
    );

    // Parquet (snappy-compressed, as pyarrow writes by default): typed columns keep their
    // types, decimals their digits; a row the contract refuses is quarantined
    {
        use arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int64Array, StringArray};
        use arrow::record_batch::RecordBatch;
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "order_id",
                std::sync::Arc::new(StringArray::from(vec!["P1", "P2", "P3"])),
            ),
            (
                "order_date",
                std::sync::Arc::new(Date32Array::from(vec![19_763, 19_764, 19_765])),
            ),
            (
                "store_id",
                std::sync::Arc::new(StringArray::from(vec!["S1", "S2", "S3"])),
            ),
            (
                "region",
                std::sync::Arc::new(StringArray::from(vec!["east", "mars", "north"])),
            ),
            (
                "amount",
                std::sync::Arc::new(
                    Decimal128Array::from(vec![725, 100, 1_234_567_890_123])
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ),
            (
                "quantity",
                std::sync::Arc::new(Int64Array::from(vec![1, 2, 3])),
            ),
        ];
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let file = std::fs::File::create(dir.join("orders.parquet")).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(dir.join("broken.parquet"), b"PAR1 this is not parquet PAR1").unwrap();
        std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .unwrap();
    }
    let r = e
        .query_one(
            "SELECT accepted, quarantined, already_landed FROM barecount.ingest_file('orders', 'orders.parquet', 'parquet')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, bool>(2)),
        (2, 1, false)
    );
    assert_eq!(
        strings(
            &e,
            "SELECT payload->>'order_date' || ' ' || (payload->'amount')::text || ' ' || jsonb_typeof(payload->'quantity') \
               FROM raw.orders__accepted WHERE payload->>'order_id' LIKE 'P%' ORDER BY 1"
        )
        .await,
        ["2024-02-10 7.25 number", "2024-02-12 12345678901.23 number"],
        "dates as dates, decimals exact, integers as numbers"
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.quarantine WHERE payload->>'order_id' = 'P2'"
        )
        .await,
        1
    );
    let r = e
        .query_one(
            "SELECT accepted, already_landed FROM barecount.ingest_file('orders', 'orders.parquet', 'parquet')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, bool>(1)),
        (0, true),
        "the same Parquet file once"
    );
    assert_eq!(
        refused(
            &e,
            "SELECT * FROM barecount.ingest_file('orders', 'broken.parquet', 'parquet')"
        )
        .await,
        "22P04",
        "a file that is not Parquet"
    );

    // never any path
    for (path, state) in [
        ("../bc-outside/secret.csv", "42501"),
        ("/etc/passwd", "42501"),
        ("escape.csv", "42501"),
        (".hidden", "42501"),
        ("missing.csv", "58P01"),
    ] {
        assert_eq!(
            refused(
                &e,
                &format!("SELECT * FROM barecount.ingest_file('orders', '{path}', 'csv')")
            )
            .await,
            state,
            "{path}"
        );
    }
    assert_eq!(
        refused(
            &e,
            "SELECT * FROM barecount.ingest_file('orders', 'orders.csv', 'xls')"
        )
        .await,
        "22023"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&outside).ok();
}

/// A foreign table (postgres_fdw) is a source like any table: a pipeline's ingest step reads it
/// through the foreign server, lands it once, and recognises the same remote rows again.
#[tokio::test]
async fn a_foreign_table_is_a_source_read_once() {
    let db = fresh_db().await;
    let (eng, e) = setup(&db).await;
    let (host_port, dbname) = db.url.rsplit_once('@').unwrap().1.split_once('/').unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let remote = login_role(&db.superuser, "fdw_remote", &[], None).await;
    db.superuser
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS postgres_fdw;
             CREATE SCHEMA remote_src;
             CREATE TABLE remote_src.orders_feed (order_id text, order_date text, store_id text, region text, amount numeric, quantity int);
             INSERT INTO remote_src.orders_feed VALUES
               ('R1', '2024-02-10', 'S1', 'east', 10.5, 1), ('R2', '2024-02-11', 'S2', 'west', 3, 2), ('R3', '2024-02-12', 'S1', 'mars', 1, 1);
             GRANT USAGE ON SCHEMA remote_src TO {remote}; GRANT SELECT ON remote_src.orders_feed TO {remote};
             CREATE SERVER feed_server FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '{host}', port '{port}', dbname '{dbname}');
             CREATE USER MAPPING FOR {eng} SERVER feed_server OPTIONS (user '{remote}', password_required 'false');
             CREATE FOREIGN TABLE staging.orders_remote (order_id text, order_date text, store_id text, region text, amount numeric, quantity int)
               SERVER feed_server OPTIONS (schema_name 'remote_src', table_name 'orders_feed');
             GRANT SELECT ON staging.orders_remote TO {eng};"
        ))
        .await
        .unwrap();
    let spec = json!({"steps": [{"name": "load", "kind": "ingest", "dataset": "orders",
                                 "source": {"table": "staging.orders_remote"}}]});
    e.execute("SELECT barecount.pipeline_define('remote', $1)", &[&spec])
        .await
        .unwrap();
    let run = |key: &'static str| {
        let e = &e;
        async move {
            let r = e
                .query_one(
                    "SELECT status, error_message FROM barecount.pipeline_run('remote', '2024-02-01', '2024-02-29', $1)",
                    &[&key],
                )
                .await
                .unwrap();
            assert_eq!(
                r.get::<_, String>(0),
                "succeeded",
                "{:?}",
                r.get::<_, Option<String>>(1)
            );
        }
    };
    run("first").await;
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM raw.orders__accepted WHERE payload->>'order_id' LIKE 'R%'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.quarantine WHERE payload->>'order_id' = 'R3'"
        )
        .await,
        1
    );
    let source: String = e
        .query_one("SELECT source FROM barecount.connector_reads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(source, "table:staging.orders_remote");
    // the same remote rows again: recognised, nothing lands
    run("second").await;
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 1);
    let note: String = e
        .query_one("SELECT note FROM barecount.pipeline_run_steps s JOIN barecount.pipeline_runs r USING (run_id) WHERE r.idempotency_key = 'second'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(note.contains("already landed"), "{note}");
    // the remote side changes: the next run lands the new content
    db.superuser
        .batch_execute(
            "INSERT INTO remote_src.orders_feed VALUES ('R4', '2024-02-13', 'S3', 'north', 7, 1)",
        )
        .await
        .unwrap();
    run("third").await;
    assert_eq!(count(&e, "SELECT count(*) FROM barecount.batches").await, 2);

    // a lost connection (SQLSTATE class 08: the foreign server does not answer) is transient:
    // the step is tried as often as the retry policy says, then the run fails naming it
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    db.superuser
        .batch_execute(&format!(
            "CREATE SERVER dead_server FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{dead_port}', dbname 'x', connect_timeout '2');
             CREATE USER MAPPING FOR {eng} SERVER dead_server OPTIONS (user '{remote}', password_required 'false');
             CREATE FOREIGN TABLE staging.orders_gone (order_id text) SERVER dead_server OPTIONS (table_name 'orders_feed');
             GRANT SELECT ON staging.orders_gone TO {eng};"
        ))
        .await
        .unwrap();
    let spec = json!({"retry": {"attempts": 3, "backoff_ms": 10, "max_backoff_ms": 20},
                      "steps": [{"name": "load", "kind": "ingest", "dataset": "orders",
                                 "source": {"table": "staging.orders_gone"}}]});
    e.execute("SELECT barecount.pipeline_define('gone', $1)", &[&spec])
        .await
        .unwrap();
    let r = e
        .query_one(
            "SELECT status, failed_step, error_sqlstate FROM barecount.pipeline_run('gone', '2024-02-01', '2024-02-29', 'k')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, Option<String>>(1),
            r.get::<_, Option<String>>(2)
        ),
        (
            "failed".to_owned(),
            Some("load".to_owned()),
            Some("08001".to_owned())
        )
    );
    let attempts: i32 = e
        .query_one(
            "SELECT s.attempts FROM barecount.pipeline_run_steps s JOIN barecount.pipeline_runs r USING (run_id) WHERE r.pipeline = 'gone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3, "a lost connection is retried");
}

#[tokio::test]
async fn events_are_claimed_once_across_concurrent_claimers_and_come_back_when_not_acknowledged() {
    let db = fresh_db().await;
    let (eng, e) = setup(&db).await;
    // 40 hook events from 20 runs
    e.query_one(
        "SELECT barecount.pipeline_define('hooks', '{\"steps\": [{\"name\": \"a\", \"kind\": \"hook\", \"event\": \"x\"}]}')",
        &[],
    )
    .await
    .unwrap();
    for i in 0..20 {
        e.query(
            "SELECT * FROM barecount.pipeline_run('hooks', '2024-01-01', '2024-01-01', $1)",
            &[&format!("k{i}")],
        )
        .await
        .unwrap();
    }
    let total = count(&e, "SELECT count(*) FROM barecount.events").await;
    assert_eq!(total, 60, "run_started, hook and run_finished per run");
    // the consumer's first claim offers it every event (committed here: one claimed and acked)
    let first: i64 = e
        .query_one(
            "SELECT event_id FROM barecount.events_claim('worker', 1)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    e.query_one(
        "SELECT barecount.events_ack('worker', ARRAY[$1::bigint])",
        &[&first],
    )
    .await
    .unwrap();
    // two claimers of one consumer, each in an open transaction: SKIP LOCKED splits the events
    let a = connect_as(&db.url, &eng).await;
    let b = connect_as(&db.url, &eng).await;
    a.batch_execute("BEGIN").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    let ids = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<Vec<i64>>()
    };
    let got_a = ids(a
        .query(
            "SELECT event_id FROM barecount.events_claim('worker', 35)",
            &[],
        )
        .await
        .unwrap());
    let got_b = ids(b
        .query(
            "SELECT event_id FROM barecount.events_claim('worker', 35)",
            &[],
        )
        .await
        .unwrap());
    assert_eq!(got_a.len(), 35);
    assert_eq!(got_b.len(), 24, "the rest, none of a's");
    assert!(got_a.iter().all(|x| !got_b.contains(x)));
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    // acknowledged events never come back; unacknowledged ones do after the visibility timeout
    let acked: i32 = e
        .query_one("SELECT barecount.events_ack('worker', $1)", &[&got_a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(acked, 35);
    let again: i32 = e
        .query_one("SELECT barecount.events_ack('worker', $1)", &[&got_a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0, "acknowledging twice changes nothing");
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.events_claim('worker', 100)"
        )
        .await,
        0
    );
    // b's claim had the default 30 s timeout; claim the rest again with a 1 s one once due
    e.batch_execute("SELECT count(*) FROM barecount.events_claim('short', 100, '1 second')")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        let rows = e
            .query(
                "SELECT event_id, delivery FROM barecount.events_claim('short', 100, '1 second')",
                &[],
            )
            .await
            .unwrap();
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "unacknowledged events never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // polling the visibility deadline
    };
    assert_eq!(back.len(), 60);
    assert!(
        back.iter().all(|r| r.get::<_, i32>(1) == 2),
        "second delivery of each"
    );
}
