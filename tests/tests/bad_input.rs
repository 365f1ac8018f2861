//! Every SQL function of BareCount called with hostile and random arguments: NULLs, empty and
//! huge strings, injection attempts, infinite and out-of-range dates, extreme integers, deep
//! and huge JSON, and generated documents (random JSON, calendar definitions, contract YAML).
//! Each call must give a result or an error whose SQLSTATE the README's error table lists —
//! never XX000 — within `statement_timeout` plus a small margin. Calls run as an admin and as a
//! reader, each in a transaction that is rolled back, against a database holding a contract, a
//! calendar, a dataset, a model and a KPI, so names resolve and calls reach their real work.
//!
//! Property-based in the plain sense: arguments are drawn from seeded generators; the seed is
//! printed and can be set with `BARECOUNT_FUZZ_SEED` to replay a run; `BARECOUNT_FUZZ_CALLS`
//! sets the calls per function (14 by default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{fresh_db, login_role, ORDERS_CONTRACT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const TIMEOUT_MS: u64 = 3_000;
const MARGIN: Duration = Duration::from_millis(2_000);

/// The SQLSTATEs the README's error table documents.
fn documented() -> BTreeSet<String> {
    let readme = include_str!("../../README.md");
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|c| c.len() == 5 && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .collect()
}

const WORDS: &[&str] = &[
    "amount",
    "order_id",
    "kind",
    "weekday",
    "year_end",
    "end_month",
    "holiday_rules",
    "easter",
    "measures",
    "source",
    "time",
    "grain",
    "weekend",
    "year_label",
    "max_datasets",
    "type",
    "properties",
    "required",
    "minimum",
    "multipleOf",
    "$ref",
    "items",
    "region",
    "",
];

fn random_string(rng: &mut StdRng) -> String {
    let alphabet = [
        'a', 'Z', '0', ' ', '\'', '"', '\\', ';', '-', '%', '_', '$', '.', 'é', '✓', '\n',
    ];
    let n = rng.random_range(0..24);
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

fn random_number(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => rng.random::<i64>().to_string(),
        1 => format!(
            "{}e{}",
            rng.random_range(-9..10),
            rng.random_range(-400..400)
        ),
        2 => format!("{}.{}", rng.random_range(-1000..1000), rng.random::<u32>()),
        3 => "0".to_owned(),
        4 => "-0.0".to_owned(),
        _ => rng.random_range(-3..40).to_string(),
    }
}

/// Random JSON text (numbers may lie beyond double precision: jsonb holds them).
fn random_json(rng: &mut StdRng, depth: u32) -> String {
    let choice = if depth == 0 {
        rng.random_range(0..4)
    } else {
        rng.random_range(0..7)
    };
    match choice {
        0 => "null".to_owned(),
        1 => (if rng.random() { "true" } else { "false" }).to_owned(),
        2 => random_number(rng),
        3 => Value::String(random_string(rng)).to_string(),
        4 | 5 => {
            let n = rng.random_range(0..5);
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    let k = WORDS[rng.random_range(0..WORDS.len())];
                    format!(
                        "{}: {}",
                        Value::String(k.to_owned()),
                        random_json(rng, depth - 1)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        _ => {
            let n = rng.random_range(0..5);
            let items: Vec<String> = (0..n).map(|_| random_json(rng, depth - 1)).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// A random calendar definition: the real keys with plausible and implausible values.
fn random_calendar(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, xs: &[Value]| xs[rng.random_range(0..xs.len())].clone();
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut spec = serde_json::Map::new();
    let kinds = [
        json!("gregorian"),
        json!("retail_454"),
        json!("retail_445"),
        json!("retail_544"),
        json!("fiscal"),
        json!("x"),
        json!(3),
    ];
    spec.insert("kind".into(), pick(rng, &kinds));
    if rng.random() {
        spec.insert(
            "year_end".into(),
            pick(
                rng,
                &[json!("nearest"), json!("last"), json!("x"), json!(null)],
            ),
        );
    }
    if rng.random() {
        spec.insert("end_month".into(), json!(rng.random_range(-2..16)));
    }
    if rng.random() {
        spec.insert(
            "weekday".into(),
            pick(rng, &[json!("sat"), json!("sun"), json!("x"), json!(7)]),
        );
    }
    if rng.random() {
        let weekend: Vec<&str> = days
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.4))
            .collect();
        spec.insert("weekend".into(), json!(weekend));
    }
    if rng.random() {
        let rules: Vec<Value> = (0..rng.random_range(0..4))
            .map(|_| match rng.random_range(0..4) {
                0 => json!({"easter": rng.random_range(-1_000_000_000i64..1_000_000_000)}),
                1 => json!({"month": rng.random_range(-1..14), "day": rng.random_range(-1..33)}),
                2 => json!({"month": rng.random_range(0..13), "weekday": days[rng.random_range(0..7)], "nth": rng.random_range(-6..7)}),
                _ => serde_json::from_str(&random_json(rng, 2)).unwrap_or(Value::Null),
            })
            .collect();
        spec.insert("holiday_rules".into(), json!(rules));
    }
    if rng.random_bool(0.2) {
        spec.insert(
            "year_label".into(),
            serde_json::from_str(&random_json(rng, 1)).unwrap_or(Value::Null),
        );
    }
    Value::Object(spec).to_string()
}

/// A random data contract (ODCS YAML) with random property types and constraints.
fn random_contract(rng: &mut StdRng) -> String {
    let types = [
        "string", "integer", "number", "boolean", "date", "object", "array", "uuid", "x",
    ];
    let mut props = String::new();
    for i in 0..rng.random_range(0..4) {
        props.push_str(&format!(
            "          - name: p{i}\n            logicalType: {}\n            required: {}\n",
            types[rng.random_range(0..types.len())],
            rng.random::<bool>()
        ));
        if rng.random() {
            props.push_str(&format!(
                "            logicalTypeOptions: {{minimum: {}, multipleOf: {}}}\n",
                random_number(rng),
                random_number(rng)
            ));
        }
    }
    format!(
        "apiVersion: v3.0.0\nkind: DataContract\nid: fuzz{}\nname: fuzz\nversion: {}.0.0\nstatus: active\nschema:\n  - name: {}\n    properties:\n{props}",
        rng.random_range(0..3),
        rng.random_range(0..3),
        ["orders", "fuzz", "", "a b"][rng.random_range(0..4)]
    )
}

/// Arguments for a parameter of `ty`, as text to cast, `None` for NULL.
fn pool(ty: &str, rng: &mut StdRng) -> Vec<Option<String>> {
    let s = |v: &str| Some(v.to_owned());
    let deep_arrays = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep_objects = format!("{}1{}", "{\"a\": ".repeat(130), "}".repeat(130));
    let mut out: Vec<Option<String>> = match ty {
        "text" | "name" => vec![
            None,
            s(""),
            s("x"),
            s("default"),
            s("orders"),
            s("nrf"),
            s("sales"),
            s("k"),
            s("m"),
            s("acme"),
            s("period"),
            s("month"),
            s("day"),
            s("read"),
            s("BACKWARD"),
            s("2024-01-01"),
            s("SELECT 1 AS v"),
            s("SELECT 1; SELECT 2"),
            s("'; DROP TABLE barecount.ledger; --"),
            s("published.sales@1"),
            s("raw.orders"),
            s("contract:orders@1.0.0"),
            s("gdp.orders"),
            s(&"a".repeat(10_000)),
            s("Ünïcødé ✓ \u{1F600}"),
            s(ORDERS_CONTRACT),
            s("COPY (SELECT 1) TO '/tmp/x'"),
            s("BEGIN"),
        ],
        "jsonb" => vec![
            None,
            s("{}"),
            s("[]"),
            s("null"),
            s("1"),
            s("\"s\""),
            s("1e400"),
            s("[1e400]"),
            s("{\"amount\": -1e999}"),
            s(&deep_arrays),
            s(&deep_objects),
            s(&format!("[{}]", vec!["{}"; 5000].join(","))),
            s(r#"{"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}"#),
            s(r#"{"source": "gdp.orders", "time": "order_date", "measures": {"n": "count(*)"}}"#),
        ],
        "date" => vec![
            None,
            s("infinity"),
            s("-infinity"),
            s("1899-12-31"),
            s("1900-01-01"),
            s("2200-12-31"),
            s("2201-01-01"),
            s("2024-02-29"),
            s("0001-01-01 BC"),
            s("5874897-12-31"),
            s("1970-01-01"),
        ],
        "integer" => vec![
            None,
            s("0"),
            s("1"),
            s("-1"),
            s("2147483647"),
            s("-2147483648"),
            s("7"),
        ],
        "bigint" => vec![
            None,
            s("0"),
            s("1"),
            s("-1"),
            s("9223372036854775807"),
            s("-9223372036854775808"),
        ],
        "boolean" => vec![None, s("true"), s("false")],
        "text[]" => vec![
            None,
            s("{}"),
            s("{NULL}"),
            s("{read}"),
            s("{read,export}"),
            s("{\"\",x}"),
            s("{admin}"),
        ],
        "timestamp with time zone" => vec![
            None,
            s("infinity"),
            s("-infinity"),
            s("1900-01-01"),
            s("2999-01-01"),
            s("epoch"),
            s(&format!("{}-06-01", 2027)),
        ],
        "oid" => vec![None, s("0"), s("1"), s("4294967295"), s("1259")],
        "jsonb[]" => vec![
            None,
            s("{}"),
            s("{NULL}"),
            s("{\"{}\"}"),
            s("{\"[1e400]\",\"{}\"}"),
        ],
        "regclass" => vec![
            None,
            s("pg_class"),
            s("barecount.ledger"),
            s("gdp.orders"),
            s("kpi.k"),
            s("no_such_table"),
        ],
        "regrole" => vec![
            None,
            s("postgres"),
            s("bc_test_admin"),
            s("pg_monitor"),
            s("no_such_role"),
        ],
        _ => vec![None],
    };
    // generated values: random JSON, calendars and contracts; random dates and numbers
    for _ in 0..6 {
        match ty {
            "jsonb" => {
                out.push(Some(random_json(rng, 4)));
                out.push(Some(random_calendar(rng)));
            }
            "text" => {
                out.push(Some(random_string(rng)));
                out.push(Some(random_contract(rng)));
            }
            "date" => out.push(Some(format!(
                "{:04}-{:02}-{:02}",
                rng.random_range(1..10_000),
                rng.random_range(1..13),
                rng.random_range(1..29)
            ))),
            "integer" => out.push(Some(rng.random::<i32>().to_string())),
            "bigint" => out.push(Some(rng.random::<i64>().to_string())),
            _ => {}
        }
    }
    out
}

struct Function {
    name: String,
    args: Vec<String>,
}

async fn functions(c: &Client) -> Vec<Function> {
    c.query(
        "SELECT p.proname::text,
                ARRAY(SELECT format_type(t.oid, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(oid, n)
                        JOIN pg_type t ON t.oid = a.oid ORDER BY a.n)
           FROM pg_proc p
          WHERE p.pronamespace = 'barecount'::regnamespace
            AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
          ORDER BY 1, 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Function {
        name: r.get(0),
        args: r.get(1),
    })
    .collect()
}

/// Calls every function `calls` times with random arguments as `c`, counting outcomes and
/// collecting every call that broke the promise.
async fn hammer(
    c: &mut Client,
    fns: &[Function],
    rng: &mut StdRng,
    calls: usize,
    who: &str,
    outcomes: &mut BTreeMap<String, usize>,
    failures: &mut Vec<String>,
) {
    let documented = documented();
    for f in fns {
        let pools: Vec<Vec<Option<String>>> = f.args.iter().map(|t| pool(t, rng)).collect();
        let casts: Vec<String> = f
            .args
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::text::{t}", i + 1))
            .collect();
        let sql = format!("SELECT * FROM barecount.{}({})", f.name, casts.join(", "));
        for attempt in 0..calls {
            let args: Vec<Option<String>> = pools
                .iter()
                .map(|p| {
                    if attempt == 0 {
                        None // all NULL first
                    } else {
                        p[rng.random_range(0..p.len())].clone()
                    }
                })
                .collect();
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                .iter()
                .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let tx = c.transaction().await.unwrap();
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {TIMEOUT_MS}"))
                .await
                .unwrap();
            let started = Instant::now();
            let result = tx.query(&sql, &params).await;
            let took = started.elapsed();
            let short = |a: &Option<String>| {
                a.as_deref()
                    .map(|s| s.chars().take(80).collect::<String>())
                    .unwrap_or_else(|| "NULL".into())
            };
            let shown: Vec<String> = args.iter().map(short).collect();
            let call = format!("{who}: barecount.{}({})", f.name, shown.join(", "));
            if took >= Duration::from_millis(TIMEOUT_MS) + MARGIN {
                failures.push(format!("{call} took {took:?}"));
            }
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => {
                    let code = e
                        .code()
                        .map(|c| c.code().to_owned())
                        .unwrap_or_else(|| "none".to_owned());
                    let known = format!("{who}: barecount.{}(", f.name);
                    let again = failures.iter().any(|x| {
                        x.starts_with(&known) && x.contains(&format!(" answered {code},"))
                    });
                    if (code == "XX000" || !documented.contains(&code)) && !again {
                        let message = e.as_db_error().map(|d| d.message().to_owned());
                        failures.push(format!(
                            "{call} answered {code}, which the README's error table does not list: {}",
                            message.unwrap_or_else(|| e.to_string())
                        ));
                    }
                    code
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
            tx.rollback().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_answers_hostile_and_random_input_with_a_documented_sqlstate() {
    let seed = std::env::var("BARECOUNT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("BARECOUNT_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = fresh_db().await;
    db.client
        .batch_execute(
            "CREATE TABLE gdp.orders AS
               SELECT 'default'::text AS tenant_id, (DATE '2024-01-01' + i % 90) AS order_date,
                      (ARRAY['east', 'west'])[1 + i % 2] AS region, (i % 7 + 1)::numeric AS amount
                 FROM generate_series(1, 500) i;
             SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
             SELECT barecount.kpi_define('k', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"month\", \"measures\": {\"net\": \"sum(amount)\"}}');
             SELECT * FROM barecount.kpi_materialize('k', '2024-01-01', '2024-03-31');
             SELECT barecount.model_define('m', 'SELECT tenant_id, region, sum(amount) AS net FROM gdp.orders GROUP BY 1, 2');
             SELECT barecount.publish('sales', 'SELECT region, amount FROM gdp.orders');
             SELECT barecount.tenant_create('acme', 'Acme');",
        )
        .await
        .unwrap();
    db.client
        .query(
            "SELECT barecount.contract_register($1)",
            &[&ORDERS_CONTRACT],
        )
        .await
        .unwrap();
    let fns = functions(&db.client).await;
    assert!(fns.len() > 60, "only {} functions found", fns.len());
    let mut outcomes = BTreeMap::new();
    // BARECOUNT_FUZZ_CALLS raises the calls per function for a longer run (default 14)
    let calls = std::env::var("BARECOUNT_FUZZ_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14);
    let mut failures = Vec::new();
    hammer(
        &mut db.client,
        &fns,
        &mut rng,
        calls,
        "admin",
        &mut outcomes,
        &mut failures,
    )
    .await;
    let reader = login_role(
        &db.client,
        "fuzz_reader",
        &["barecount_reader"],
        Some("default"),
    )
    .await;
    let mut reader = barecount_tests::connect_as(&db.url, &reader).await;
    hammer(
        &mut reader,
        &fns,
        &mut rng,
        4,
        "reader",
        &mut outcomes,
        &mut failures,
    )
    .await;
    println!("{} functions, outcomes: {outcomes:?}", fns.len());
    assert!(
        failures.is_empty(),
        "{} call(s) broke the promise (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        outcomes.get("ok").copied().unwrap_or(0) > 100,
        "too few calls got through: {outcomes:?}"
    );
}
