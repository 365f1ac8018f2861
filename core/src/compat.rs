//! Contract evolution: what changed between two compiled row schemas, and whether each change
//! breaks readers, with the meanings Confluent Schema Registry gives its modes for JSON Schema.
//!
//! - BACKWARD: the new schema accepts every row the old one accepted (consumers on the new
//!   version can read old data). A change "narrows" when the new schema rejects some row the
//!   old one accepted; narrowing breaks BACKWARD.
//! - FORWARD: the old schema accepts every row the new one accepts. A change "widens" when the
//!   new schema accepts some row the old one rejected; widening breaks FORWARD.
//! - FULL: both. NONE: no check. `*_TRANSITIVE`: against every earlier version, not only the
//!   latest one below.
//!
//! Open content model: a schema object that is open (`additionalProperties` not false) accepts
//! any value for properties it does not declare. So adding a property to an open model
//! narrows (old rows may carry that property with any value), and only a closed model makes
//! adding an optional property backward compatible; removing a property from a closed model
//! narrows. BareCount compiles schema objects closed unless the contract says
//! `additionalProperties: true`.

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Backward,
    Forward,
    Full,
    None,
    BackwardTransitive,
    ForwardTransitive,
    FullTransitive,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("compatibility mode \"{0}\" is unknown (BACKWARD, FORWARD, FULL, NONE, and the _TRANSITIVE variants)")]
pub struct UnknownMode(pub String);

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, UnknownMode> {
        Ok(match s.trim().to_ascii_uppercase().as_str() {
            "BACKWARD" => Mode::Backward,
            "FORWARD" => Mode::Forward,
            "FULL" => Mode::Full,
            "NONE" => Mode::None,
            "BACKWARD_TRANSITIVE" => Mode::BackwardTransitive,
            "FORWARD_TRANSITIVE" => Mode::ForwardTransitive,
            "FULL_TRANSITIVE" => Mode::FullTransitive,
            _ => return Err(UnknownMode(s.to_owned())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Backward => "BACKWARD",
            Mode::Forward => "FORWARD",
            Mode::Full => "FULL",
            Mode::None => "NONE",
            Mode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Mode::ForwardTransitive => "FORWARD_TRANSITIVE",
            Mode::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn transitive(self) -> bool {
        matches!(
            self,
            Mode::BackwardTransitive | Mode::ForwardTransitive | Mode::FullTransitive
        )
    }

    /// Whether a change breaks this mode.
    pub fn broken_by(self, c: &Change) -> bool {
        match self {
            Mode::None => false,
            Mode::Backward | Mode::BackwardTransitive => c.narrows,
            Mode::Forward | Mode::ForwardTransitive => c.widens,
            Mode::Full | Mode::FullTransitive => c.narrows || c.widens,
        }
    }
}

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Where, e.g. `/orders/properties/amount/minimum`.
    pub path: String,
    pub kind: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// The new version rejects some row the old one accepted (breaks BACKWARD).
    pub narrows: bool,
    /// The new version accepts some row the old one rejected (breaks FORWARD).
    pub widens: bool,
}

fn change(
    path: String,
    kind: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    narrows: bool,
    widens: bool,
) -> Change {
    Change {
        path,
        kind: kind.to_owned(),
        old: old.cloned(),
        new: new.cloned(),
        narrows,
        widens,
    }
}

/// A property's schema without the `anyOf [S, null]` wrapper optional properties get.
fn unwrap_optional(v: &Value) -> &Value {
    if let Some(Value::Array(alts)) = v.get("anyOf") {
        if alts.len() == 2 && alts[1] == serde_json::json!({"type": "null"}) {
            return &alts[0];
        }
    }
    v
}

fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn types(v: Option<&Value>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = match v {
        Some(Value::String(s)) => BTreeSet::from([s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => BTreeSet::new(),
    };
    // number includes integer
    if out.contains("number") {
        out.insert("integer".into());
    }
    out
}

/// Compares two keyword values where a larger value narrows (`minimum`, `minLength`, …) or
/// widens (`maximum`, `maxLength`, …); `lower` says which.
fn bound(
    path: &str,
    key: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    lower: bool,
    out: &mut Vec<Change>,
) {
    let (o, n) = (old.and_then(Value::as_f64), new.and_then(Value::as_f64));
    let (narrows, widens) = match (o, n) {
        (None, None) => return,
        (None, Some(_)) => (true, false),
        (Some(_), None) => (false, true),
        (Some(a), Some(b)) if a == b => return,
        (Some(a), Some(b)) => {
            let tighter = if lower { b > a } else { b < a };
            (tighter, !tighter)
        }
    };
    out.push(change(
        format!("{path}/{key}"),
        &format!("{key}_changed"),
        old,
        new,
        narrows,
        widens,
    ));
}

/// A JSON number as an exact decimal: (digits, scale) with value digits / 10^scale.
fn decimal(v: &Value) -> Option<(i128, u32)> {
    let text = v.as_number()?.to_string();
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m.to_owned(), e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((&mantissa, ""));
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let scale = i32::try_from(frac.len()).ok()? - exp;
    if scale >= 0 {
        Some((digits, u32::try_from(scale).ok()?))
    } else {
        let up = 10_i128.checked_pow(u32::try_from(-scale).ok()?)?;
        Some((digits.checked_mul(up)?, 0))
    }
}

/// Orders two JSON numbers exactly where both are decimals an i128 holds, else as doubles.
fn cmp_num(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    if let (Some((da, sa)), Some((db, sb))) = (decimal(a), decimal(b)) {
        let s = sa.max(sb);
        let up = |v: i128, sc: u32| 10_i128.checked_pow(s - sc).and_then(|f| v.checked_mul(f));
        if let (Some(x), Some(y)) = (up(da, sa), up(db, sb)) {
            return Some(x.cmp(&y));
        }
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// The bound a schema puts on numbers from below (`lower`) or above: its value and whether
/// the value itself is admitted (`minimum`) or not (`exclusiveMinimum`); the tighter of the
/// two keywords when both are given; `None` when unbounded.
fn number_bound(schema: &Value, lower: bool) -> Option<(Value, bool)> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let (inclusive, exclusive) = if lower {
        ("minimum", "exclusiveMinimum")
    } else {
        ("maximum", "exclusiveMaximum")
    };
    [
        schema.get(inclusive).map(|v| (v.clone(), true)),
        schema.get(exclusive).map(|v| (v.clone(), false)),
    ]
    .into_iter()
    .flatten()
    .filter(|(v, _)| v.is_number())
    .reduce(|a, b| match cmp_num(&a.0, &b.0) {
        Some(Equal) => {
            if a.1 {
                b
            } else {
                a
            }
        }
        Some(Greater) => {
            if lower {
                a
            } else {
                b
            }
        }
        Some(Less) => {
            if lower {
                b
            } else {
                a
            }
        }
        None => a,
    })
}

/// Whether bound `new` admits every number bound `old` admits.
fn admits_all(old: &Option<(Value, bool)>, new: &Option<(Value, bool)>, lower: bool) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (old, new) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((o, old_inclusive)), Some((n, new_inclusive))) => match cmp_num(n, o) {
            Some(Equal) => *new_inclusive || !*old_inclusive,
            Some(Less) => lower,
            Some(Greater) => !lower,
            None => false,
        },
    }
}

/// Whether `d` divides `n` exactly (both positive decimals); false when unsure.
fn divides(d: (i128, u32), n: (i128, u32)) -> bool {
    let s = d.1.max(n.1);
    let scale = |(v, sc): (i128, u32)| 10_i128.checked_pow(s - sc).and_then(|f| v.checked_mul(f));
    match (scale(d), scale(n)) {
        (Some(d), Some(n)) if d != 0 => n % d == 0,
        _ => false,
    }
}

fn compare_property(path: &str, old: &Value, new: &Value, out: &mut Vec<Change>) {
    let (o, n) = (unwrap_optional(old), unwrap_optional(new));
    let (to, tn) = (types(o.get("type")), types(n.get("type")));
    if to != tn {
        let narrows = !to.is_empty() && (tn.is_empty() || !to.is_subset(&tn))
            || to.is_empty() && !tn.is_empty();
        let widens = !tn.is_empty() && (to.is_empty() || !tn.is_subset(&to))
            || tn.is_empty() && !to.is_empty();
        out.push(change(
            format!("{path}/type"),
            "type_changed",
            o.get("type"),
            n.get("type"),
            narrows,
            widens,
        ));
    }
    // numeric bounds: the rule is whether the new bound admits every number the old one
    // admitted, minimum and exclusiveMinimum (maximum and exclusiveMaximum) taken together and
    // compared as exact decimals: minimum 0 -> exclusiveMinimum -1 breaks no old row
    for (key, lower) in [
        ("minimum", true),
        ("exclusiveMinimum", true),
        ("maximum", false),
        ("exclusiveMaximum", false),
    ] {
        let (a, b) = (o.get(key), n.get(key));
        if a == b {
            continue;
        }
        let (was, now) = (number_bound(o, lower), number_bound(n, lower));
        out.push(change(
            format!("{path}/{key}"),
            &format!("{key}_changed"),
            a,
            b,
            !admits_all(&was, &now, lower),
            !admits_all(&now, &was, lower),
        ));
    }
    for (key, lower) in [
        ("minLength", true),
        ("minItems", true),
        ("maxLength", false),
        ("maxItems", false),
    ] {
        bound(path, key, o.get(key), n.get(key), lower, out);
    }
    // multipleOf: the new value accepts every value the old one accepted exactly when it
    // divides it (every multiple of 10 is a multiple of 2), compared as exact decimals
    if let (Some(a), Some(b)) = (o.get("multipleOf"), n.get("multipleOf")) {
        if a != b {
            let (narrows, widens) = match (decimal(a), decimal(b)) {
                (Some(a), Some(b)) => (!divides(b, a), !divides(a, b)),
                _ => (true, true),
            };
            out.push(change(
                format!("{path}/multipleOf"),
                "multipleOf_changed",
                Some(a),
                Some(b),
                narrows,
                widens,
            ));
        }
    }
    for key in ["format", "pattern", "multipleOf"] {
        if key == "multipleOf" && o.get(key).is_some() && n.get(key).is_some() {
            continue; // compared above
        }
        match (o.get(key), n.get(key)) {
            (a, b) if a == b => {}
            (None, Some(_)) => out.push(change(
                format!("{path}/{key}"),
                &format!("{key}_added"),
                None,
                n.get(key),
                true,
                false,
            )),
            (Some(_), None) => out.push(change(
                format!("{path}/{key}"),
                &format!("{key}_removed"),
                o.get(key),
                None,
                false,
                true,
            )),
            (a, b) => out.push(change(
                format!("{path}/{key}"),
                &format!("{key}_changed"),
                a,
                b,
                true,
                true,
            )),
        }
    }
    let set = |v: Option<&Value>| -> Option<BTreeSet<String>> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().map(Value::to_string).collect())
    };
    match (set(o.get("enum")), set(n.get("enum"))) {
        (a, b) if a == b => {}
        (None, Some(_)) => out.push(change(
            format!("{path}/enum"),
            "enum_added",
            None,
            n.get("enum"),
            true,
            false,
        )),
        (Some(_), None) => out.push(change(
            format!("{path}/enum"),
            "enum_removed",
            o.get("enum"),
            None,
            false,
            true,
        )),
        (Some(a), Some(b)) => {
            let narrows = !a.is_subset(&b);
            let widens = !b.is_subset(&a);
            out.push(change(
                format!("{path}/enum"),
                "enum_changed",
                o.get("enum"),
                n.get("enum"),
                narrows,
                widens,
            ));
        }
        (None, None) => {}
    }
}

/// Every change from `old` to `new` for one schema object named `dataset`.
pub fn diff_schema(dataset: &str, old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    let empty = Map::new();
    let po = old
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let pn = new
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let (ro, rn) = (required(old), required(new));
    let (co, cn) = (closed(old), closed(new));
    if co != cn {
        // open -> closed rejects rows with undeclared properties; closed -> open admits them
        out.push(change(
            format!("/{dataset}/additionalProperties"),
            "content_model_changed",
            Some(&Value::Bool(!co)),
            Some(&Value::Bool(!cn)),
            cn,
            co,
        ));
    }
    let names: BTreeSet<&String> = po.keys().chain(pn.keys()).collect();
    for name in names {
        let path = format!("/{dataset}/properties/{name}");
        match (po.get(name), pn.get(name)) {
            (None, Some(s)) => {
                let req = rn.contains(name);
                // new rows may carry it: an old closed model rejects them
                let widens = co;
                // old rows may lack it (if required) or carry any value for it (old open model)
                let narrows = req || !co;
                out.push(change(
                    path,
                    if req {
                        "required_property_added"
                    } else {
                        "optional_property_added"
                    },
                    None,
                    Some(s),
                    narrows,
                    widens,
                ));
            }
            (Some(s), None) => {
                let req = ro.contains(name);
                // old rows carrying it are rejected by a new closed model
                let narrows = cn;
                // new rows lack it: an old schema that required it rejects them; an old model
                // that constrained it accepted fewer values than a new open one
                let widens = req || !cn;
                out.push(change(
                    path,
                    if req {
                        "required_property_removed"
                    } else {
                        "optional_property_removed"
                    },
                    Some(s),
                    None,
                    narrows,
                    widens,
                ));
            }
            (Some(a), Some(b)) => {
                match (ro.contains(name), rn.contains(name)) {
                    (false, true) => out.push(change(
                        format!("{path}/required"),
                        "became_required",
                        Some(&Value::Bool(false)),
                        Some(&Value::Bool(true)),
                        true,
                        false,
                    )),
                    (true, false) => out.push(change(
                        format!("{path}/required"),
                        "became_optional",
                        Some(&Value::Bool(true)),
                        Some(&Value::Bool(false)),
                        false,
                        true,
                    )),
                    _ => {}
                }
                compare_property(&path, a, b, &mut out);
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(closed: bool, props: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": props, "required": required, "additionalProperties": !closed})
    }
    fn opt(s: Value) -> Value {
        json!({"anyOf": [s, {"type": "null"}]})
    }
    fn kinds(c: &[Change]) -> Vec<(&str, bool, bool)> {
        c.iter()
            .map(|c| (c.kind.as_str(), c.narrows, c.widens))
            .collect()
    }

    #[test]
    fn multiple_of_follows_divisibility_exactly() {
        let m = |v: Value| {
            schema(
                true,
                json!({"a": {"type": "number", "multipleOf": v}}),
                &["a"],
            )
        };
        let cases = [
            // (old, new, narrows: breaks BACKWARD, widens: breaks FORWARD)
            (json!(10), json!(2), false, true), // every multiple of 10 is one of 2
            (json!(2), json!(10), true, false), // 4 was valid and is not now
            (json!(3), json!(2), true, true),   // neither contains the other
            (json!(0.1), json!(0.01), false, true),
            (json!(0.01), json!(0.1), true, false),
            (json!(1e1), json!(5), false, true), // exponent notation, compared exactly
            (json!(0.3), json!(0.1), false, true), // 0.3 / 0.1 is not exact in binary floats
        ];
        for (old, new, narrows, widens) in cases {
            let c = diff_schema("t", &m(old.clone()), &m(new.clone()));
            assert_eq!(
                kinds(&c),
                vec![("multipleOf_changed", narrows, widens)],
                "{old} -> {new}"
            );
            assert_eq!(Mode::Backward.broken_by(&c[0]), narrows, "{old} -> {new}");
        }
        let same = diff_schema("t", &m(json!(5)), &m(json!(5)));
        assert!(same.is_empty());
    }

    #[test]
    fn numeric_bounds_follow_what_they_admit() {
        let m = |v: Value| schema(true, json!({"a": v}), &["a"]);
        // (old, new, narrows: breaks BACKWARD, widens: breaks FORWARD), for each changed key
        let cases = [
            (
                json!({"minimum": 0}),
                json!({"minimum": -1}),
                vec![(false, true)],
            ),
            (
                json!({"minimum": 0}),
                json!({"minimum": 1}),
                vec![(true, false)],
            ),
            (
                json!({"maximum": 10}),
                json!({"maximum": 20}),
                vec![(false, true)],
            ),
            // inclusive to exclusive at the same value: 0 is no longer admitted
            (
                json!({"minimum": 0}),
                json!({"exclusiveMinimum": 0}),
                vec![(true, false), (true, false)],
            ),
            // exclusive below the old inclusive bound admits every old value
            (
                json!({"minimum": 0}),
                json!({"exclusiveMinimum": -1}),
                vec![(false, true), (false, true)],
            ),
            (
                json!({"exclusiveMaximum": 10}),
                json!({"maximum": 10}),
                vec![(false, true), (false, true)],
            ),
            // exact decimals: 0.3 and 0.30 are the same bound, 0.1 + 0.2 style noise is not
            (
                json!({"maximum": 0.3}),
                json!({"maximum": 0.30000000000000004}),
                vec![(false, true)],
            ),
            // removing a bound widens, adding one narrows
            (json!({"maximum": 5}), json!({}), vec![(false, true)]),
            (
                json!({}),
                json!({"exclusiveMinimum": 5}),
                vec![(true, false)],
            ),
            // a looser keyword next to a tighter one changes nothing the schema admits
            (
                json!({"minimum": 0, "exclusiveMinimum": -5}),
                json!({"minimum": 0, "exclusiveMinimum": -9}),
                vec![(false, false)],
            ),
        ];
        for (old, new, want) in cases {
            let c = diff_schema("t", &m(old.clone()), &m(new.clone()));
            let got: Vec<(bool, bool)> = c.iter().map(|c| (c.narrows, c.widens)).collect();
            assert_eq!(got, want, "{old} -> {new}: {c:?}");
            for x in &c {
                assert_eq!(Mode::Backward.broken_by(x), x.narrows, "{old} -> {new}");
                assert_eq!(Mode::Forward.broken_by(x), x.widens, "{old} -> {new}");
            }
        }
    }

    #[test]
    fn adding_an_optional_property_depends_on_the_content_model() {
        let base = json!({"a": {"type": "string"}});
        let plus = json!({"a": {"type": "string"}, "b": opt(json!({"type": "integer"}))});
        // closed: old rows never had b -> backward compatible; old readers reject b -> forward breaks
        let c = diff_schema(
            "t",
            &schema(true, base.clone(), &["a"]),
            &schema(true, plus.clone(), &["a"]),
        );
        assert_eq!(kinds(&c), vec![("optional_property_added", false, true)]);
        assert!(!Mode::Backward.broken_by(&c[0]) && Mode::Forward.broken_by(&c[0]));
        // open: old rows may carry b with any value -> backward breaks; old readers accept b
        let c = diff_schema(
            "t",
            &schema(false, base, &["a"]),
            &schema(false, plus, &["a"]),
        );
        assert_eq!(kinds(&c), vec![("optional_property_added", true, false)]);
    }

    #[test]
    fn required_type_and_constraint_changes() {
        let old = json!({"a": {"type": "number", "minimum": 0}, "b": opt(json!({"type": "string", "enum": ["x", "y"]}))});
        let new = json!({"a": {"type": "integer", "minimum": 1}, "b": {"type": "string", "enum": ["x", "y", "z"]}});
        let c = diff_schema(
            "t",
            &schema(true, old, &["a"]),
            &schema(true, new, &["a", "b"]),
        );
        assert_eq!(
            kinds(&c),
            vec![
                ("type_changed", true, false),
                ("minimum_changed", true, false),
                ("became_required", true, false),
                ("enum_changed", false, true),
            ]
        );
        assert_eq!(c[0].path, "/t/properties/a/type");
        assert!(c.iter().all(|x| !Mode::None.broken_by(x)));
        assert!(c.iter().any(|x| Mode::Full.broken_by(x)));
    }

    #[test]
    fn removing_and_reopening() {
        let old = schema(
            true,
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a", "b"],
        );
        let new = schema(true, json!({"a": {"type": "string"}}), &["a"]);
        assert_eq!(
            kinds(&diff_schema("t", &old, &new)),
            vec![("required_property_removed", true, true)]
        );
        let reopened = schema(
            false,
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a", "b"],
        );
        assert_eq!(
            kinds(&diff_schema("t", &old, &reopened)),
            vec![("content_model_changed", false, true)]
        );
        assert_eq!(Mode::parse("full_transitive"), Ok(Mode::FullTransitive));
        assert!(Mode::parse("SIDEWAYS").is_err());
        assert!(diff_schema("t", &old, &old).is_empty());
    }
}
