#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::calendar::{period_by_label, Spec};
use chrono::NaiveDate;
use serde_json::json;

struct Cat;

impl Catalog for Cat {
    fn contract_exists(&self, dataset: &str) -> bool {
        dataset == "orders"
    }
    fn model_reads(&self, model: &str) -> Option<Vec<String>> {
        match model {
            "orders_clean" => Some(vec!["raw.orders__accepted".into()]),
            "daily" => Some(vec!["gdp.orders_clean".into()]),
            _ => None,
        }
    }
    fn kpi(&self, name: &str) -> Option<KpiInfo> {
        match name {
            "sales" => Some(KpiInfo {
                source: "gdp.orders_clean".into(),
                calendar: Some("nrf".into()),
                grain: "period".into(),
            }),
            "weekly" => Some(KpiInfo {
                source: "gdp.orders_clean".into(),
                calendar: Some("nrf".into()),
                grain: "week".into(),
            }),
            "monthly" => Some(KpiInfo {
                source: "gdp.orders_clean".into(),
                calendar: None,
                grain: "month".into(),
            }),
            _ => None,
        }
    }
    fn calendar_exists(&self, name: &str) -> bool {
        name == "nrf"
    }
}

fn retail() -> Value {
    json!({"calendar": "nrf", "grain": "period", "steps": [
        {"name": "tell", "kind": "hook", "event": "ready", "after": ["pub"]},
        {"name": "pub", "kind": "publish", "dataset": "sales", "source": "kpi.sales", "after": ["sales"]},
        {"name": "load", "kind": "ingest", "dataset": "orders", "source": {"table": "staging.feed"},
         "quarantine": {"max_share": 0.1, "on_breach": "warn"}},
        {"name": "sales", "kind": "kpi", "kpi": "sales", "after": ["clean"]},
        {"name": "clean", "kind": "model", "model": "orders_clean", "after": ["load"],
         "retry": {"attempts": 5, "backoff_ms": 10}}]})
}

fn err(v: Value) -> PipelineError {
    match Pipeline::parse(&v) {
        Ok(p) => match p.check_objects(&Cat) {
            Ok(()) => panic!("accepted: {v}"),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

#[test]
fn steps_come_out_in_dependency_order() {
    let p = Pipeline::parse(&retail()).unwrap();
    let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["load", "clean", "sales", "pub", "tell"]);
    p.check_objects(&Cat).unwrap();
    assert_eq!(p.step("clean").unwrap().retry.attempts, 5);
    assert_eq!(p.step("load").unwrap().retry, RetryPolicy::default());
    assert!(p.depends_on("tell", "load"));
    assert!(!p.depends_on("load", "tell"));
    match &p.step("load").unwrap().kind {
        StepKind::Ingest { quarantine, .. } => assert_eq!(
            quarantine,
            &Some(QuarantineRule {
                max_share: 0.1,
                fail: false
            })
        ),
        k => panic!("{k:?}"),
    }
}

#[test]
fn a_cycle_is_refused_naming_its_steps() {
    let e = err(json!({"steps": [
        {"name": "a", "kind": "hook", "event": "x", "after": ["c"]},
        {"name": "b", "kind": "hook", "event": "x", "after": ["a"]},
        {"name": "c", "kind": "hook", "event": "x", "after": ["b"]}]}));
    assert_eq!(
        e,
        PipelineError::Cycle(vec!["a".into(), "c".into(), "b".into(), "a".into()])
    );
    assert!(e.to_string().contains("a -> c -> b -> a"), "{e}");
    let e = err(json!({"steps": [{"name": "a", "kind": "hook", "event": "x", "after": ["a"]}]}));
    assert!(matches!(e, PipelineError::Cycle(_)), "{e}");
}

#[test]
fn unknown_objects_are_refused_with_the_step_named() {
    let mut v = retail();
    v["steps"][3]["kpi"] = json!("nope");
    let e = err(v);
    assert!(
        e.to_string().contains("step \"sales\" names KPI \"nope\""),
        "{e}"
    );
    let mut v = retail();
    v["steps"][4]["model"] = json!("nope");
    assert!(err(v)
        .to_string()
        .contains("\"clean\" names model \"nope\""));
    let mut v = retail();
    v["steps"][2]["dataset"] = json!("nope");
    assert!(err(v).to_string().contains("\"load\" names dataset"));
    let mut v = retail();
    v["calendar"] = json!("nope");
    assert!(err(v)
        .to_string()
        .contains("calendar \"nope\" does not exist"));
    let mut v = retail();
    v["steps"][0]["after"] = json!(["ghost"]);
    assert!(err(v)
        .to_string()
        .contains("\"tell\" names step (in \"after\") \"ghost\""));
}

#[test]
fn grain_mismatches_are_refused_with_the_step_named() {
    let mut v = retail();
    v["steps"][3]["kpi"] = json!("weekly");
    let e = err(v);
    assert!(
        matches!(e, PipelineError::GrainMismatch { ref step, .. } if step == "sales"),
        "{e}"
    );
    assert!(e.to_string().contains("week of calendar \"nrf\""), "{e}");
    let mut v = retail();
    v["steps"][3]["kpi"] = json!("monthly");
    assert!(err(v).to_string().contains("month (no calendar)"));
    // a pipeline by month (no calendar) refuses a KPI on a calendar
    let v = json!({"grain": "month", "steps": [{"name": "k", "kind": "kpi", "kpi": "sales"}]});
    assert!(matches!(err(v), PipelineError::GrainMismatch { .. }));
    // and takes one by month
    let v = json!({"grain": "month", "steps": [{"name": "k", "kind": "kpi", "kpi": "monthly"}]});
    Pipeline::parse(&v).unwrap().check_objects(&Cat).unwrap();
}

#[test]
fn a_step_reading_what_another_builds_must_come_after_it() {
    let mut v = retail();
    v["steps"][3]["after"] = json!([]);
    let e = err(v);
    assert!(
        e.to_string()
            .contains("\"sales\": reads gdp.orders_clean, which step \"clean\" builds"),
        "{e}"
    );
    let mut v = retail();
    v["steps"][4]["after"] = json!([]);
    assert!(err(v).to_string().contains("reads raw.orders__accepted"));
}

#[test]
fn bad_shapes_are_refused_clearly() {
    for (v, says) in [
        (json!([]), "must be a JSON object"),
        (json!({"steps": []}), "non-empty array"),
        (json!({"steps": [{"kind": "hook"}]}), "needs a \"name\""),
        (json!({"stepz": []}), "unknown field \"stepz\""),
        (
            json!({"steps": [{"name": "a", "kind": "sql"}]}),
            "unknown kind \"sql\"",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "hook", "event": "x", "model": "m"}]}),
            "unknown field \"model\"",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "hook", "event": "x"}, {"name": "a", "kind": "hook", "event": "y"}]}),
            "two steps have this name",
        ),
        (
            json!({"steps": [{"name": "Bad Name", "kind": "hook", "event": "x"}]}),
            "Bad Name",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "hook", "event": ""}]}),
            "\"event\" must be a non-empty string",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "ingest", "dataset": "orders", "source": {"file": "../etc/passwd", "format": "csv"}}]}),
            "\"..\"",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "ingest", "dataset": "orders", "source": {"file": "/etc/passwd", "format": "csv"}}]}),
            "relative to the load directory",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "ingest", "dataset": "orders", "source": {"file": "x.xls", "format": "xls"}}]}),
            "not csv, jsonl or parquet",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "ingest", "dataset": "orders", "source": {"query": "select 1"}}]}),
            "needs \"table\" or \"file\"",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "ingest", "dataset": "orders", "source": {"table": "t"}, "quarantine": {"max_share": 2}}]}),
            "max_share",
        ),
        (
            json!({"retry": {"attempts": 0}, "steps": [{"name": "a", "kind": "hook", "event": "x"}]}),
            "at least 1",
        ),
        (
            json!({"retry": {"attempts": 99}, "steps": [{"name": "a", "kind": "hook", "event": "x"}]}),
            "from 0 to 10",
        ),
        (
            json!({"calendar": "nrf", "steps": [{"name": "a", "kind": "hook", "event": "x"}]}),
            "needs its grain",
        ),
        (
            json!({"calendar": "nrf", "grain": "fortnight", "steps": [{"name": "a", "kind": "hook", "event": "x"}]}),
            "not a calendar grain",
        ),
    ] {
        let e = err(v.clone());
        assert!(e.to_string().contains(says), "{v}: {e}");
    }
}

#[test]
fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
    let p = RetryPolicy {
        attempts: 6,
        backoff_ms: 100,
        max_backoff_ms: 1000,
    };
    assert_eq!(p.delay_ms(2, 0.0), 50);
    assert_eq!(p.delay_ms(2, 0.999_999), 99);
    assert_eq!(p.delay_ms(3, 0.0), 100);
    assert_eq!(p.delay_ms(4, 0.5), 300);
    assert_eq!(p.delay_ms(5, 0.0), 400);
    assert_eq!(p.delay_ms(6, 0.0), 500, "capped at 1000");
    assert_eq!(p.delay_ms(40, 1.0), 1000);
    assert_eq!(p.delay_ms(3, f64::NAN), 100);
    for n in 2..20 {
        for u in [0.0, 0.3, 0.7, 1.0] {
            let d = p.delay_ms(n, u);
            assert!(d <= 1000 && d >= p.delay_ms(n, 0.0), "{n} {u} {d}");
        }
    }
}

#[test]
fn transient_errors_are_the_retryable_ones() {
    for s in ["40001", "40P01", "55P03", "08006", "08003"] {
        assert!(is_transient(s), "{s}");
    }
    for s in ["57014", "23505", "42P01", "22P02", "XX000", "53400"] {
        assert!(!is_transient(s), "{s}");
    }
}

#[test]
fn quarantine_rule_is_a_share_of_the_batch() {
    let r = QuarantineRule {
        max_share: 0.1,
        fail: true,
    };
    assert!(!r.breached(10, 100));
    assert!(r.breached(11, 100));
    assert!(!r.breached(0, 0));
}

#[test]
fn period_labels_resolve_on_the_calendar() {
    assert_eq!(
        parse_period_label("FY2024-P03").unwrap(),
        (Grain::Period, 2024, 3)
    );
    assert_eq!(
        parse_period_label("FY2024").unwrap(),
        (Grain::Year, 2024, 1)
    );
    assert_eq!(
        parse_period_label("FY2024-W53").unwrap(),
        (Grain::Week, 2024, 53)
    );
    for bad in [
        "2024-P03",
        "FY24-P03",
        "FY2024-X03",
        "FY2024-P",
        "FY2024-P0",
        "FY2024-P1234",
        "FYabcd",
    ] {
        assert!(parse_period_label(bad).is_err(), "{bad}");
    }
    let nrf = Spec::parse(
        &json!({"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}),
    )
    .unwrap();
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    // NRF FY2024 runs from 2024-02-04; P01 is 4 weeks, P06 ends after 26 weeks
    let p1 = period_by_label(&nrf, Grain::Period, 2024, 1)
        .unwrap()
        .unwrap();
    assert_eq!((p1.start, p1.end), (d("2024-02-04"), d("2024-03-02")));
    let p6 = period_by_label(&nrf, Grain::Period, 2024, 6)
        .unwrap()
        .unwrap();
    assert_eq!(p6.end, d("2024-08-03"));
    // FY2023 had 53 weeks, FY2024 has 52
    assert!(period_by_label(&nrf, Grain::Week, 2023, 53)
        .unwrap()
        .is_some());
    assert!(period_by_label(&nrf, Grain::Week, 2024, 53)
        .unwrap()
        .is_none());
    assert!(period_by_label(&nrf, Grain::Period, 2024, 13)
        .unwrap()
        .is_none());
    assert!(period_by_label(&nrf, Grain::Period, 3000, 1).is_err());
}
