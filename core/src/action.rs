//! Actions and playbooks: what BareCount does when something happens.
//!
//! An action is a named, versioned target: a `webhook` (signed per Standard Webhooks), a `sql`
//! function of the tenant's (called with the event as jsonb, by the tenant's own role), or a
//! `notify` channel. A playbook maps events to actions: which events (`on`), under which
//! conditions (`when`), with a de-duplication window (the same event identity again within it
//! is suppressed) and a cool-down (after a firing, the playbook stays quiet for that long).

use crate::webhook::{check_schedule, check_url, DEFAULT_SCHEDULE};
use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("{0}")]
pub struct ActionError(pub String);

fn err<T>(s: impl Into<String>) -> Result<T, ActionError> {
    Err(ActionError(s.into()))
}

/// The kinds of action.
pub const KINDS: [&str; 4] = ["webhook", "sql", "notify", "export"];

/// A checked action definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Webhook {
        url: String,
        timeout_ms: u64,
        schedule: Vec<f64>,
        auth_secret: Option<String>,
    },
    Sql {
        function: String,
    },
    Notify {
        channel: String,
    },
    Export {
        dataset: String,
        format: String,
        flight_url: String,
        token_secret: String,
        schedule: Vec<f64>,
    },
}

fn only(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ActionError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => err(format!(
            "{what}: unknown key \"{k}\" (allowed: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// A lower-case SQL identifier of 1 to 63 characters.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The retry schedule a config gives (`retry_schedule_s`), or the default.
fn schedule(o: &Map<String, Value>) -> Result<Vec<f64>, ActionError> {
    match o.get("retry_schedule_s") {
        None => Ok(DEFAULT_SCHEDULE.to_vec()),
        Some(Value::Array(a)) => {
            let s: Option<Vec<f64>> = a.iter().map(Value::as_f64).collect();
            let s =
                s.ok_or_else(|| ActionError("\"retry_schedule_s\" is a list of seconds".into()))?;
            check_schedule(&s).map_err(|e| ActionError(e.to_string()))?;
            Ok(s)
        }
        Some(v) => err(format!(
            "\"retry_schedule_s\" is a list of seconds, not {v}"
        )),
    }
}

impl Action {
    /// The waits between attempts of the deliveries the worker sends (webhooks and exports).
    pub fn schedule(&self) -> Vec<f64> {
        match self {
            Action::Webhook { schedule, .. } | Action::Export { schedule, .. } => schedule.clone(),
            _ => DEFAULT_SCHEDULE.to_vec(),
        }
    }

    pub fn parse(kind: &str, config: &Value) -> Result<Action, ActionError> {
        let o = config
            .as_object()
            .ok_or_else(|| ActionError("the config is a JSON object".into()))?;
        match kind {
            "webhook" => {
                only(
                    o,
                    &["url", "timeout_ms", "retry_schedule_s", "auth_secret"],
                    "webhook config",
                )?;
                let url = o.get("url").and_then(Value::as_str).ok_or_else(|| {
                    ActionError("webhook config: \"url\" is required (a string)".into())
                })?;
                check_url(url).map_err(|e| ActionError(e.to_string()))?;
                let timeout_ms = match o.get("timeout_ms") {
                    None => 10_000,
                    Some(v) => match v.as_u64() {
                        Some(t) if (100..=120_000).contains(&t) => t,
                        _ => return err(format!("webhook config: \"timeout_ms\" must be a whole number from 100 to 120000, not {v}")),
                    },
                };
                let schedule = schedule(o)?;
                let auth_secret = match o.get("auth_secret") {
                    None => None,
                    Some(Value::String(s)) if is_name(s) => Some(s.clone()),
                    Some(v) => return err(format!("webhook config: \"auth_secret\" names a secret (a lower-case name), not {v}")),
                };
                Ok(Action::Webhook {
                    url: url.to_owned(),
                    timeout_ms,
                    schedule,
                    auth_secret,
                })
            }
            "sql" => {
                only(o, &["function"], "sql config")?;
                let f = o.get("function").and_then(Value::as_str).ok_or_else(|| ActionError("sql config: \"function\" is required: schema.name of a function taking jsonb".into()))?;
                match f.split_once('.') {
                    Some((s, n)) if is_name(s) && is_name(n) => Ok(Action::Sql {
                        function: f.to_owned(),
                    }),
                    _ => err(format!(
                        "sql config: \"function\" must be schema.name in lower case, not {f:?}"
                    )),
                }
            }
            "notify" => {
                only(o, &["channel"], "notify config")?;
                let c = o
                    .get("channel")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ActionError("notify config: \"channel\" is required".into()))?;
                if !is_name(c) {
                    return err(format!(
                        "notify config: \"channel\" must be a lower-case name, not {c:?}"
                    ));
                }
                Ok(Action::Notify {
                    channel: c.to_owned(),
                })
            }
            "export" => {
                only(
                    o,
                    &[
                        "dataset",
                        "format",
                        "flight_url",
                        "token_secret",
                        "retry_schedule_s",
                    ],
                    "export config",
                )?;
                let text = |k: &str| o.get(k).and_then(Value::as_str);
                let dataset = text("dataset").ok_or_else(|| {
                    ActionError(
                        "export config: \"dataset\" is required (a published dataset)".into(),
                    )
                })?;
                if !is_name(dataset) {
                    return err(format!(
                        "export config: \"dataset\" must be a dataset name, not {dataset:?}"
                    ));
                }
                let format = text("format").unwrap_or("parquet");
                if !["parquet", "csv", "arrow"].contains(&format) {
                    return err(format!(
                        "export config: \"format\" is parquet, csv or arrow, not {format:?}"
                    ));
                }
                let flight_url = text("flight_url").ok_or_else(|| ActionError("export config: \"flight_url\" is required (the barecount-flight that writes the file)".into()))?;
                check_url(flight_url).map_err(|e| ActionError(format!("export config: {e}")))?;
                let token_secret = match text("token_secret") {
                    Some(t) if is_name(t) => t.to_owned(),
                    _ => return err("export config: \"token_secret\" names the secret holding an API token with the export scope (barecount.secret_set)"),
                };
                Ok(Action::Export {
                    dataset: dataset.to_owned(),
                    format: format.to_owned(),
                    flight_url: flight_url.to_owned(),
                    token_secret,
                    schedule: schedule(o)?,
                })
            }
            other => err(format!(
                "unknown action kind \"{other}\" (kinds: {})",
                KINDS.join(", ")
            )),
        }
    }
}

/// The events a playbook can react to, and the outbox event kinds they come from.
pub const TRIGGERS: [&str; 9] = [
    "threshold_breach",
    "threshold_recovery",
    "anomaly",
    "forecast_breach",
    "publish",
    "quarantine_spike",
    "run_failed",
    "run_finished",
    "hook",
];

/// The trigger an outbox event is, from its kind and payload.
pub fn trigger_of(kind: &str, payload: &Value) -> Option<&'static str> {
    Some(match kind {
        "threshold" => match payload.get("kind").and_then(Value::as_str) {
            Some("recovery") => "threshold_recovery",
            _ => "threshold_breach",
        },
        "anomaly" => "anomaly",
        "forecast" => "forecast_breach",
        "publish" => "publish",
        "quarantine_threshold" => "quarantine_spike",
        "run_failed" => "run_failed",
        "run_finished" => "run_finished",
        "hook" => "hook",
        _ => return None,
    })
}

const WHEN_KEYS: [&str; 8] = [
    "kpi",
    "measure",
    "level",
    "dims",
    "dataset",
    "pipeline",
    "event",
    "min_score",
];

/// A playbook's conditions; every condition given must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct When(Map<String, Value>);

impl When {
    pub fn parse(v: &Value) -> Result<When, ActionError> {
        let o = match v {
            Value::Null => return Ok(When::default()),
            Value::Object(o) => o,
            _ => return err("\"when\" is a JSON object of conditions"),
        };
        only(o, &WHEN_KEYS, "when")?;
        for (k, v) in o {
            let ok = match k.as_str() {
                "dims" => v.as_object().is_some_and(|d| {
                    d.values()
                        .all(|x| x.is_string() || x.is_number() || x.is_boolean())
                }),
                "min_score" => v.as_f64().is_some_and(|s| s.is_finite() && s >= 0.0),
                "level" => strings(v)
                    .is_some_and(|l| l.iter().all(|x| ["warn", "critical"].contains(&x.as_str()))),
                _ => strings(v).is_some(),
            };
            if !ok {
                let expect = match k.as_str() {
                    "dims" => "an object of dimension values",
                    "min_score" => "a number of at least 0",
                    "level" => "\"warn\", \"critical\" or a list of them",
                    _ => "a string or a list of strings",
                };
                return err(format!("when.{k}: expected {expect}, got {v}"));
            }
        }
        Ok(When(o.clone()))
    }

    /// Whether an event's payload meets every condition.
    pub fn matches(&self, payload: &Value) -> bool {
        self.0.iter().all(|(k, want)| match k.as_str() {
            "dims" => want.as_object().is_some_and(|d| {
                d.iter().all(|(dk, dv)| {
                    payload
                        .get("dims")
                        .and_then(|p| p.get(dk))
                        .is_some_and(|got| same(got, dv))
                })
            }),
            "min_score" => payload
                .get("score")
                .and_then(Value::as_f64)
                .is_some_and(|s| s.abs() >= want.as_f64().unwrap_or(f64::INFINITY)),
            key => {
                let field = if key == "dataset" {
                    payload.get("dataset").or_else(|| payload.get("contract"))
                } else {
                    payload.get(key)
                };
                field
                    .and_then(Value::as_str)
                    .is_some_and(|got| strings(want).is_some_and(|w| w.iter().any(|x| x == got)))
            }
        })
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => {
            a.iter().map(|x| x.as_str().map(str::to_owned)).collect()
        }
        _ => None,
    }
}

/// Checks a playbook's event list.
pub fn check_triggers(on: &[String]) -> Result<(), ActionError> {
    if on.is_empty() {
        return err("a playbook reacts to at least one event");
    }
    match on.iter().find(|t| !TRIGGERS.contains(&t.as_str())) {
        Some(t) => err(format!(
            "unknown event \"{t}\" (events: {})",
            TRIGGERS.join(", ")
        )),
        None => Ok(()),
    }
}

/// The identity of an event for de-duplication: the trigger, the subject and the dimension
/// values (so a breach of the same KPI period and dimensions twice within the window fires once).
pub fn dedup_key(trigger: &str, subject: &str, payload: &Value) -> String {
    let dims = payload
        .get("dims")
        .map(Value::to_string)
        .unwrap_or_default();
    let measure = payload.get("measure").and_then(Value::as_str).unwrap_or("");
    format!("{trigger}|{subject}|{measure}|{dims}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_are_checked_by_kind() {
        assert!(matches!(
            Action::parse("webhook", &json!({"url": "https://h.example/x"})),
            Ok(Action::Webhook {
                timeout_ms: 10_000,
                ..
            })
        ));
        let bad = [
            ("webhook", json!({})),
            ("webhook", json!({"url": "ftp://x"})),
            ("webhook", json!({"url": "https://u:p@h/"})),
            ("webhook", json!({"url": "https://h/", "timeout_ms": 5})),
            (
                "webhook",
                json!({"url": "https://h/", "retry_schedule_s": []}),
            ),
            ("webhook", json!({"url": "https://h/", "method": "GET"})),
            ("sql", json!({"function": "x; drop table y"})),
            ("sql", json!({"function": "f"})),
            ("notify", json!({"channel": "Bad Channel"})),
            ("email", json!({})),
            ("webhook", json!([1])),
        ];
        for (k, c) in bad {
            assert!(Action::parse(k, &c).is_err(), "{k} {c}");
        }
        assert_eq!(
            Action::parse("sql", &json!({"function": "ops.on_event"})),
            Ok(Action::Sql {
                function: "ops.on_event".into()
            })
        );
        let e = Action::parse(
            "export",
            &json!({"dataset": "sales", "flight_url": "http://127.0.0.1:50051", "token_secret": "t", "retry_schedule_s": [1]}),
        );
        assert!(
            matches!(&e, Ok(Action::Export { format, .. }) if format == "parquet"),
            "{e:?}"
        );
        assert_eq!(e.map(|a| a.schedule()), Ok(vec![1.0]));
        for bad in [
            json!({"dataset": "../x", "flight_url": "http://h", "token_secret": "t"}),
            json!({"dataset": "s", "flight_url": "h", "token_secret": "t"}),
            json!({"dataset": "s", "flight_url": "http://h", "format": "xlsx", "token_secret": "t"}),
            json!({"dataset": "s", "flight_url": "http://h"}),
        ] {
            assert!(Action::parse("export", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_match_payloads() {
        let w =
            When::parse(&json!({"kpi": "sales", "level": ["critical"], "dims": {"region": "EU"}}))
                .unwrap_or_default();
        let ev = json!({"kpi": "sales", "level": "critical", "dims": {"region": "EU", "store": 3}, "value": 1.0});
        assert!(w.matches(&ev));
        assert!(!w.matches(&json!({"kpi": "sales", "level": "warn", "dims": {"region": "EU"}})));
        assert!(!w.matches(&json!({"kpi": "sales", "level": "critical", "dims": {"region": "US"}})));
        assert!(!w.matches(&json!({"kpi": "other", "level": "critical", "dims": {"region": "EU"}})));
        assert!(When::parse(&json!({"min_score": 4}))
            .unwrap_or_default()
            .matches(&json!({"score": -4.5})));
        assert!(When::default().matches(&json!({})));
        for bad in [
            json!({"colour": "red"}),
            json!({"level": "fatal"}),
            json!({"dims": [1]}),
            json!({"min_score": -1}),
            json!([1]),
        ] {
            assert!(When::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_map_to_triggers() {
        assert_eq!(
            trigger_of("threshold", &json!({"kind": "breach"})),
            Some("threshold_breach")
        );
        assert_eq!(
            trigger_of("threshold", &json!({"kind": "recovery"})),
            Some("threshold_recovery")
        );
        assert_eq!(
            trigger_of("quarantine_threshold", &json!({})),
            Some("quarantine_spike")
        );
        assert_eq!(trigger_of("run_started", &json!({})), None);
        assert!(check_triggers(&["anomaly".into()]).is_ok());
        assert!(check_triggers(&[]).is_err());
        assert!(check_triggers(&["explosion".into()]).is_err());
        assert_ne!(
            dedup_key("anomaly", "kpi:s/2024-01", &json!({"dims": {"r": "EU"}})),
            dedup_key("anomaly", "kpi:s/2024-01", &json!({"dims": {"r": "US"}}))
        );
    }
}
