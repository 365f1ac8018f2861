//! Quality rules beyond row shape, declared in a contract's schema object under `quality`:
//!
//! ```yaml
//! quality:
//!   - rule: notNull        # property must be present and not null
//!     property: order_id
//!     severity: blocking   # blocking quarantines the whole batch; warning (default) records
//!   - rule: unique         # within the batch and against rows already accepted
//!     property: order_id
//!   - rule: range          # min and/or max, inclusive, for numbers
//!     property: amount
//!     min: 0
//!     max: 100000
//!   - rule: allowedValues
//!     property: region
//!     values: [east, west, north, south]
//!   - rule: pattern
//!     property: store_id
//!     pattern: "^S[0-9]+$"
//!   - rule: references     # value must exist in a tenant-scoped table's column
//!     property: store_id
//!     table: gdp.stores
//!     column: store_id
//!   - rule: rowCount       # rows per batch
//!     min: 1
//!     max: 1000000
//!   - rule: freshness      # newest date in the batch at most maxAgeDays old
//!     property: order_date
//!     maxAgeDays: 7
//! ```
//!
//! Row-local rules are evaluated here; `unique` against stored rows and `references` need the
//! database, so evaluation returns the keys to look up and the extension completes them.

use regex::Regex;
use serde_json::Value;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("quality rule {index} of dataset \"{dataset}\": {problem}")]
pub struct RuleError {
    pub dataset: String,
    pub index: usize,
    pub problem: String,
}

#[derive(Debug, Clone)]
pub enum Check {
    NotNull,
    Unique,
    Range { min: Option<f64>, max: Option<f64> },
    AllowedValues(Vec<Value>),
    Pattern(Regex),
    References { table: String, column: String },
    RowCount { min: Option<u64>, max: Option<u64> },
    Freshness { max_age_days: i64 },
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub property: Option<String>,
    pub check: Check,
    pub blocking: bool,
    pub definition: Value,
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses a schema object's `quality` list.
pub fn parse(dataset: &str, rules: &[Value]) -> Result<Vec<Rule>, RuleError> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let err = |problem: String| RuleError {
            dataset: dataset.to_owned(),
            index: i,
            problem,
        };
        let obj = r
            .as_object()
            .ok_or_else(|| err("must be an object".into()))?;
        let kind = obj
            .get("rule")
            .and_then(Value::as_str)
            .ok_or_else(|| err("needs \"rule\"".into()))?;
        let property = obj
            .get("property")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let need_property = || {
            property
                .clone()
                .ok_or_else(|| err(format!("rule {kind} needs \"property\"")))
        };
        let num = |k: &str| obj.get(k).and_then(Value::as_f64);
        let check = match kind {
            "notNull" => {
                need_property()?;
                Check::NotNull
            }
            "unique" => {
                need_property()?;
                Check::Unique
            }
            "range" => {
                need_property()?;
                if num("min").is_none() && num("max").is_none() {
                    return Err(err("range needs \"min\" or \"max\"".into()));
                }
                Check::Range { min: num("min"), max: num("max") }
            }
            "allowedValues" => {
                need_property()?;
                let values = obj.get("values").and_then(Value::as_array).ok_or_else(|| err("allowedValues needs a \"values\" list".into()))?;
                Check::AllowedValues(values.clone())
            }
            "pattern" => {
                need_property()?;
                let p = obj.get("pattern").and_then(Value::as_str).ok_or_else(|| err("pattern needs \"pattern\"".into()))?;
                Check::Pattern(Regex::new(p).map_err(|e| err(format!("bad pattern: {e}")))?)
            }
            "references" => {
                need_property()?;
                let table = obj.get("table").and_then(Value::as_str).unwrap_or_default();
                let column = obj.get("column").and_then(Value::as_str).unwrap_or_default();
                let (schema, rel) = table.split_once('.').unwrap_or(("", ""));
                if crate::layer::layer_of(schema).is_none() || !ident_ok(rel) || !ident_ok(column) {
                    return Err(err("references needs \"table\" as raw|gdp|kpi|published.<name> (a tenant's: gdp_<tenant>.<name>, ...) and a \"column\"".into()));
                }
                Check::References { table: table.to_owned(), column: column.to_owned() }
            }
            "rowCount" => {
                let u = |k: &str| obj.get(k).and_then(Value::as_u64);
                if u("min").is_none() && u("max").is_none() {
                    return Err(err("rowCount needs \"min\" or \"max\"".into()));
                }
                Check::RowCount { min: u("min"), max: u("max") }
            }
            "freshness" => {
                need_property()?;
                let d = obj.get("maxAgeDays").and_then(Value::as_i64).ok_or_else(|| err("freshness needs \"maxAgeDays\"".into()))?;
                Check::Freshness { max_age_days: d }
            }
            other => return Err(err(format!("unknown rule \"{other}\" (notNull, unique, range, allowedValues, pattern, references, rowCount, freshness)"))),
        };
        let blocking = match obj.get("severity").and_then(Value::as_str) {
            None | Some("warning") => false,
            Some("blocking") => true,
            Some(other) => {
                return Err(err(format!(
                    "severity \"{other}\" is neither blocking nor warning"
                )))
            }
        };
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| match &property {
                Some(p) => format!("{kind}:{p}"),
                None => kind.to_owned(),
            });
        out.push(Rule {
            name,
            property,
            check,
            blocking,
            definition: r.clone(),
        });
    }
    Ok(out)
}

/// The outcome of one rule on one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub failing: u64,
    /// Up to ten failing row numbers (1-based) or values.
    pub sample: Vec<Value>,
    /// Values still to check against the database (unique against stored rows, references).
    pub lookup: Vec<String>,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` prefix, or None.
pub fn epoch_days(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    // days from civil (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Evaluates a rule on a batch's rows; `today` is days since 1970-01-01.
pub fn evaluate(rule: &Rule, rows: &[&Value], today: i64) -> Outcome {
    let mut failing_rows: Vec<usize> = Vec::new();
    let mut lookup = Vec::new();
    let get = |row: &&Value| rule.property.as_ref().and_then(|p| row.get(p)).cloned();
    match &rule.check {
        Check::NotNull => {
            for (i, r) in rows.iter().enumerate() {
                if get(r).is_none_or(|v| v.is_null()) {
                    failing_rows.push(i);
                }
            }
        }
        Check::Unique => {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, r) in rows.iter().enumerate() {
                if let Some(t) = get(r).as_ref().and_then(text_of) {
                    if seen.insert(t.clone(), i).is_some() {
                        failing_rows.push(i);
                    } else {
                        lookup.push(t);
                    }
                }
            }
        }
        Check::Range { min, max } => {
            for (i, r) in rows.iter().enumerate() {
                if let Some(x) = get(r).as_ref().and_then(Value::as_f64) {
                    if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                        failing_rows.push(i);
                    }
                }
            }
        }
        Check::AllowedValues(values) => {
            for (i, r) in rows.iter().enumerate() {
                if let Some(v) = get(r) {
                    if !v.is_null() && !values.contains(&v) {
                        failing_rows.push(i);
                    }
                }
            }
        }
        Check::Pattern(re) => {
            for (i, r) in rows.iter().enumerate() {
                if let Some(Value::String(s)) = get(r) {
                    if !re.is_match(&s) {
                        failing_rows.push(i);
                    }
                }
            }
        }
        Check::References { .. } => {
            let mut seen = std::collections::HashSet::new();
            for r in rows {
                if let Some(t) = get(r).as_ref().and_then(text_of) {
                    if seen.insert(t.clone()) {
                        lookup.push(t);
                    }
                }
            }
        }
        Check::RowCount { min, max } => {
            let n = rows.len() as u64;
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                return Outcome {
                    failing: 1,
                    sample: vec![Value::from(n)],
                    lookup,
                };
            }
        }
        Check::Freshness { max_age_days } => {
            let newest = rows
                .iter()
                .filter_map(get)
                .filter_map(|v| v.as_str().and_then(epoch_days))
                .max();
            let stale = newest.is_none_or(|d| today - d > *max_age_days);
            if stale {
                return Outcome {
                    failing: 1,
                    sample: vec![newest.map_or(Value::Null, Value::from)],
                    lookup,
                };
            }
        }
    }
    Outcome {
        failing: failing_rows.len() as u64,
        sample: failing_rows
            .iter()
            .take(10)
            .map(|i| Value::from(i + 1))
            .collect(),
        lookup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        parse("orders", &[v]).unwrap().remove(0)
    }

    #[test]
    fn row_local_rules() {
        let rows = [
            json!({"id": "A1", "amount": 5, "region": "east", "store": "S1", "d": "2024-05-01"}),
            json!({"id": "A1", "amount": -1, "region": "mars", "store": "X", "d": "2024-05-03"}),
            json!({"amount": 500, "region": null}),
        ];
        let today = epoch_days("2024-05-04").unwrap();
        let refs: Vec<&Value> = rows.iter().collect();
        let out = |v| evaluate(&rule(v), &refs, today);
        assert_eq!(
            out(json!({"rule": "notNull", "property": "id"})).sample,
            vec![json!(3)]
        );
        let u = out(json!({"rule": "unique", "property": "id"}));
        assert_eq!((u.failing, u.lookup), (1, vec!["A1".to_owned()]));
        assert_eq!(
            out(json!({"rule": "range", "property": "amount", "min": 0, "max": 100})).failing,
            2
        );
        assert_eq!(
            out(json!({"rule": "allowedValues", "property": "region", "values": ["east", "west"]}))
                .sample,
            vec![json!(2)]
        );
        assert_eq!(
            out(json!({"rule": "pattern", "property": "store", "pattern": "^S[0-9]+$"})).failing,
            1
        );
        assert_eq!(out(json!({"rule": "rowCount", "min": 5})).failing, 1);
        assert_eq!(
            out(json!({"rule": "freshness", "property": "d", "maxAgeDays": 2})).failing,
            0
        );
        assert_eq!(
            out(json!({"rule": "freshness", "property": "d", "maxAgeDays": 0})).failing,
            1
        );
        let r = out(
            json!({"rule": "references", "property": "store", "table": "gdp.stores", "column": "store_id"}),
        );
        assert_eq!(r.lookup, vec!["S1".to_owned(), "X".to_owned()]);
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            json!({"rule": "notNull"}),
            json!({"rule": "range", "property": "a"}),
            json!({"rule": "pattern", "property": "a", "pattern": "("}),
            json!({"rule": "references", "property": "a", "table": "pg_catalog.pg_authid", "column": "rolname"}),
            json!({"rule": "telepathy"}),
            json!({"rule": "notNull", "property": "a", "severity": "fatal"}),
        ] {
            assert!(parse("t", std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
        let r = rule(json!({"rule": "notNull", "property": "a", "severity": "blocking"}));
        assert!(r.blocking);
        assert_eq!(r.name, "notNull:a");
        assert_eq!(epoch_days("1970-01-02"), Some(1));
        assert_eq!(epoch_days("2000-03-01"), Some(11017));
    }
}
