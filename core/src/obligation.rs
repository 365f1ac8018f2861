//! Lineage obligations: declarative rules on the evidence that must exist before an event.
//!
//! Rules (JSON):
//! - `{"require": "validated_batches"}` — every raw batch upstream of the event has an ingest
//!   receipt with no quarantined rows outstanding, and there is at least one such batch.
//! - `{"require": "receipt", "event_type": "model_run", "subject": "gdp.orders"}` — a receipt of
//!   that type for that subject exists; `{dataset}` in the subject stands for the dataset
//!   being published.
//!
//! An `error` obligation refuses the event and lists every missing item; a `warning` one only
//! records them in the event's receipt.

use crate::lineage::{Hop, Step};
use serde_json::Value;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    ValidatedBatches,
    Receipt { event_type: String, subject: String },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ObligationError {
    #[error(
        "obligation rule must be a JSON object with \"require\" (validated_batches or receipt)"
    )]
    Shape,
    #[error(
        "obligation rule requires unknown evidence \"{0}\" (known: validated_batches, receipt)"
    )]
    UnknownRequirement(String),
    #[error("a receipt rule needs string fields \"event_type\" and \"subject\"")]
    ReceiptFields,
    #[error("severity must be \"error\" or \"warning\", not \"{0}\"")]
    Severity(String),
}

impl Rule {
    pub fn parse(v: &Value) -> Result<Rule, ObligationError> {
        let obj = v.as_object().ok_or(ObligationError::Shape)?;
        match obj.get("require").and_then(Value::as_str) {
            Some("validated_batches") => Ok(Rule::ValidatedBatches),
            Some("receipt") => {
                let field = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
                match (field("event_type"), field("subject")) {
                    (Some(event_type), Some(subject)) => Ok(Rule::Receipt {
                        event_type,
                        subject,
                    }),
                    _ => Err(ObligationError::ReceiptFields),
                }
            }
            Some(other) => Err(ObligationError::UnknownRequirement(other.to_owned())),
            None => Err(ObligationError::Shape),
        }
    }
}

pub fn check_severity(s: &str) -> Result<(), ObligationError> {
    match s {
        "error" | "warning" => Ok(()),
        other => Err(ObligationError::Severity(other.to_owned())),
    }
}

/// What the rules are evaluated against.
pub struct Evidence<'a> {
    /// Dataset the event is about.
    pub dataset: &'a str,
    /// Everything upstream of the event.
    pub upstream: &'a [Hop],
    /// The tenant's ledger, reduced.
    pub steps: &'a [Step],
    /// Quarantined rows still outstanding per batch (`batch:<id>`).
    pub quarantined: &'a HashMap<String, i64>,
}

/// Every missing item, in a stable order; empty when the rule is satisfied.
pub fn missing(rule: &Rule, ev: &Evidence<'_>) -> Vec<String> {
    match rule {
        Rule::ValidatedBatches => {
            let mut batches: Vec<&str> = ev
                .upstream
                .iter()
                .map(|h| h.object.as_str())
                .filter(|o| o.starts_with("batch:"))
                .collect();
            batches.sort();
            if batches.is_empty() {
                return vec!["no ingested batch upstream: the inputs have no recorded lineage to validated raw data".into()];
            }
            batches
                .into_iter()
                .filter_map(|b| match ev.quarantined.get(b) {
                    None => Some(format!("{b} has no ingest receipt")),
                    Some(n) if *n > 0 => {
                        Some(format!("{b} has {n} quarantined row(s) not replayed"))
                    }
                    Some(_) => None,
                })
                .collect()
        }
        Rule::Receipt {
            event_type,
            subject,
        } => {
            let subject = subject.replace("{dataset}", ev.dataset);
            if ev
                .steps
                .iter()
                .any(|s| s.event_type == *event_type && s.subject == subject)
            {
                Vec::new()
            } else {
                vec![format!("no {event_type} receipt for {subject}")]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_rules() {
        assert_eq!(
            Rule::parse(&json!({"require": "validated_batches"})),
            Ok(Rule::ValidatedBatches)
        );
        assert!(matches!(
            Rule::parse(
                &json!({"require": "receipt", "event_type": "period_close", "subject": "x"})
            ),
            Ok(Rule::Receipt { .. })
        ));
        assert_eq!(
            Rule::parse(&json!({"require": "receipt"})),
            Err(ObligationError::ReceiptFields)
        );
        assert_eq!(
            Rule::parse(&json!({"require": "magic"})),
            Err(ObligationError::UnknownRequirement("magic".into()))
        );
        assert_eq!(Rule::parse(&json!([1])), Err(ObligationError::Shape));
        assert!(check_severity("warning").is_ok() && check_severity("fatal").is_err());
    }

    #[test]
    fn lists_every_missing_item() {
        let hop = |o: &str| Hop {
            depth: 2,
            object: o.into(),
            via_seq: 1,
            via_event: "ingest".into(),
        };
        let upstream = vec![
            hop("raw.orders"),
            hop("batch:1"),
            hop("batch:2"),
            hop("batch:3"),
        ];
        let quarantined = HashMap::from([("batch:1".to_owned(), 0), ("batch:2".to_owned(), 4)]);
        let steps = vec![Step {
            seq: 9,
            event_type: "model_run".into(),
            subject: "gdp.orders".into(),
            inputs: vec![],
            outputs: vec![],
        }];
        let ev = Evidence {
            dataset: "sales",
            upstream: &upstream,
            steps: &steps,
            quarantined: &quarantined,
        };
        assert_eq!(
            missing(&Rule::ValidatedBatches, &ev),
            vec![
                "batch:2 has 4 quarantined row(s) not replayed".to_owned(),
                "batch:3 has no ingest receipt".to_owned()
            ]
        );
        let ok = Rule::Receipt {
            event_type: "model_run".into(),
            subject: "gdp.orders".into(),
        };
        assert!(missing(&ok, &ev).is_empty());
        let period = Rule::Receipt {
            event_type: "period_close".into(),
            subject: "{dataset}:FY2024-P01".into(),
        };
        assert_eq!(
            missing(&period, &ev),
            vec!["no period_close receipt for sales:FY2024-P01".to_owned()]
        );
        let none = Evidence {
            dataset: "sales",
            upstream: &[],
            steps: &steps,
            quarantined: &quarantined,
        };
        assert_eq!(missing(&Rule::ValidatedBatches, &none).len(), 1);
    }
}
