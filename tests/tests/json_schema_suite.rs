//! The official JSON-Schema-Test-Suite (draft 2020-12, required tests) through the SQL
//! functions of a real Postgres: `barecount.json_schema_validate(schema, data)`. Remote `$ref`s
//! resolve to the suite's `remotes/` files registered as resources under
//! `http://localhost:1234/`. Cases whose data Postgres jsonb cannot hold (`\u0000`) are
//! counted and reported, not run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::fresh_db;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn suite_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jsonschema-suite");
    assert!(
        dir.join("cases_draft2020-12.jsonl").is_file(),
        "the JSON-Schema-Test-Suite is expected at {} (vendored in tests/jsonschema-suite)",
        dir.display()
    );
    dir
}

fn remotes(dir: &Path, base: &Path, out: &mut Vec<(String, Value)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            remotes(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            out.push((format!("http://localhost:1234/{rel}"), v));
        }
    }
}

#[tokio::test]
async fn draft2020_12_required_tests_pass_through_sql() {
    let dir = suite_dir();
    let db = fresh_db().await;
    let c = &db.client;

    let mut resources = Vec::new();
    remotes(&dir.join("remotes"), &dir.join("remotes"), &mut resources);
    assert!(resources.len() > 10, "remotes found: {}", resources.len());
    for (uri, schema) in &resources {
        c.execute(
            "SELECT barecount.json_schema_resource_put($1, $2)",
            &[uri, schema],
        )
        .await
        .unwrap();
    }

    let text = std::fs::read_to_string(dir.join("cases_draft2020-12.jsonl")).unwrap();
    let (mut run, mut passed, mut hazards) = (0, 0, 0);
    let mut failures = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        if case["optional"].as_bool().unwrap_or(false) {
            continue;
        }
        if case["jsonb_hazard"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            hazards += 1;
            continue;
        }
        run += 1;
        let expected = case["valid"].as_bool().unwrap();
        let got = c
            .query_one(
                "SELECT barecount.json_schema_validate($1, $2)",
                &[&case["schema"], &case["data"]],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .map_err(|e| e.to_string());
        match got {
            Ok(v) if v == expected => passed += 1,
            other => failures.push(format!(
                "{} / {} / {}: expected {expected}, got {other:?}",
                case["file"], case["group"], case["description"]
            )),
        }
    }
    println!("JSON-Schema-Test-Suite draft2020-12 required: {passed}/{run} passed through SQL, {hazards} not runnable in jsonb");
    assert!(
        run + hazards >= 1299,
        "all required cases are considered: {run} run + {hazards} skipped"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
