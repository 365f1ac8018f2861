#![allow(clippy::unwrap_used, clippy::panic)]

use super::encode::{encode, numeric, Doc};
use super::*;
use crate::ledger::canonical_json;
use proptest::prelude::*;

fn digits(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, 0..max)
        .prop_map(|d| d.iter().map(|x| char::from(b'0' + x)).collect())
}

fn number() -> impl Strategy<Value = Doc> {
    (
        any::<bool>(),
        prop_oneof![
            Just("0".to_owned()),
            (1u8..10, digits(30)).prop_map(|(h, t)| format!("{h}{t}")),
            // beyond 64 bits and far beyond (some beyond double precision: an error)
            (1u8..10, digits(400)).prop_map(|(h, t)| format!("{h}{t}")),
        ],
        prop_oneof![3 => Just(String::new()), 2 => digits(12), 1 => digits(90)],
    )
        .prop_map(|(n, i, f)| Doc::Num(n, i, f))
}

fn string() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("zz"),
            Just("\""),
            Just("\\"),
            Just("\n"),
            Just("\u{1}"),
            Just("é"),
            Just("✓"),
            Just("\u{7f}"),
            Just("😀"),
            Just(" "),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        string().prop_map(Doc::Str),
        number(),
    ];
    leaf.prop_recursive(5, 400, 70, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..70).prop_map(Doc::Arr),
            proptest::collection::vec((string(), inner), 0..40).prop_map(Doc::Obj),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The reader gives the value, and the canonical bytes, the text path gives.
    #[test]
    fn reader_agrees_with_the_text_path(d in doc()) {
        let bytes = encode(&d);
        let node = Container::root_node(&bytes).unwrap();
        let via_text = serde_json::from_str::<Value>(&d.deduplicated().text());
        match (node.to_value(), via_text) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a, &b);
                let mut canonical = String::new();
                node.write_canonical(&mut canonical).unwrap();
                prop_assert_eq!(canonical, canonical_json(&b));
            }
            (Err(JsonbError::OutOfRange(_)), Err(e)) => {
                prop_assert!(e.to_string().contains("number out of range"), "{}", e)
            }
            (a, b) => prop_assert!(false, "reader {:?}, text {:?}", a.err(), b.err()),
        }
    }

    /// Numbers print as `numeric_out` prints them, in short and long form.
    #[test]
    fn numerics_print_as_postgres_does(n in number()) {
        let text = n.number_text();
        let mut out = String::new();
        numeric_text(&numeric(&text), &mut out).unwrap();
        prop_assert_eq!(out, text);
    }

    /// Cut or corrupted bytes are an error or a value, never a panic or a read outside.
    #[test]
    fn damaged_documents_never_panic(d in doc(), cut in any::<prop::sample::Index>(),
                                     flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = encode(&d);
        for (at, b) in flips {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= b;
            }
        }
        let len = cut.index(bytes.len() + 1);
        if let Ok(node) = Container::root_node(&bytes[..len]) {
            let _ = node.to_value();
            let _ = node.check();
        }
    }

    /// Key lookup finds every key and no other.
    #[test]
    fn get_finds_keys(pairs in proptest::collection::vec((string(), number()), 0..50), probe in string()) {
        let d = Doc::Obj(pairs.clone());
        let bytes = encode(&d);
        let Node::Object(c) = Container::root_node(&bytes).unwrap() else { panic!("not an object") };
        for (k, _) in &pairs {
            prop_assert!(c.get(k).unwrap().is_some(), "{}", k);
        }
        prop_assert_eq!(c.get(&probe).unwrap().is_some(), pairs.iter().any(|(k, _)| *k == probe));
    }
}

#[test]
fn nesting_past_127_levels_is_refused_as_the_text_path_does() {
    let mut d = Doc::Num(false, "1".into(), String::new());
    for _ in 0..127 {
        d = Doc::Arr(vec![d]);
    }
    let ok = encode(&d);
    assert!(Container::root_node(&ok).unwrap().to_value().is_ok());
    assert!(serde_json::from_str::<Value>(&d.text()).is_ok());
    let deeper = encode(&Doc::Arr(vec![d.clone()]));
    assert_eq!(
        Container::root_node(&deeper).unwrap().check(),
        Err(JsonbError::TooDeep)
    );
    assert!(serde_json::from_str::<Value>(&Doc::Arr(vec![d]).text()).is_err());
}

#[test]
fn top_level_scalars_and_empty_containers() {
    for d in [
        Doc::Null,
        Doc::Bool(true),
        Doc::Str("x".into()),
        Doc::Num(true, "12".into(), "50".into()),
        Doc::Arr(vec![]),
        Doc::Obj(vec![]),
    ] {
        let bytes = encode(&d);
        let v = Container::root_node(&bytes).unwrap().to_value().unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(&d.text()).unwrap());
    }
    assert!(Container::root(&[]).is_err());
    assert!(Container::root(&[0, 0, 0, 0]).is_err()); // neither array nor object
}

#[test]
fn zero_and_scales_print_as_numeric_out() {
    for t in [
        "0",
        "0.00",
        "1",
        "-1",
        "10000",
        "0.0001",
        "-0.5",
        "123456789.000001",
        "1.10",
    ] {
        let mut out = String::new();
        numeric_text(&numeric(t), &mut out).unwrap();
        assert_eq!(out, t);
    }
    // a 1-byte varlena header (a packed numeric) reads the same
    let long = numeric("12.5");
    let mut packed = vec![((long.len() - 3) as u8) << 1 | 1];
    packed.extend_from_slice(&long[4..]);
    let mut out = String::new();
    numeric_text(&packed, &mut out).unwrap();
    assert_eq!(out, "12.5");
}

/// A contract exercising every keyword contracts compile to.
const CONTRACT: &str = r#"
apiVersion: v3.0.2
kind: DataContract
id: rows
name: rows
version: 1.0.0
status: active
schema:
  - name: rows
    properties:
      - { name: id, logicalType: string, required: true, logicalTypeOptions: { minLength: 2, maxLength: 5, pattern: "^[a-z]+$" } }
      - { name: day, logicalType: date, required: true }
      - { name: at, logicalType: timestamp }
      - { name: amount, logicalType: number, required: true, logicalTypeOptions: { minimum: 0, exclusiveMaximum: 1000, multipleOf: 0.5 } }
      - { name: qty, logicalType: integer, logicalTypeOptions: { maximum: 99 } }
      - { name: tier, logicalType: string, logicalTypeOptions: { enum: [gold, silver] } }
      - { name: ok, logicalType: boolean }
      - { name: tags, logicalType: array, logicalTypeOptions: { minItems: 1, maxItems: 2 } }
      - { name: meta, logicalType: object }
"#;

fn small_number() -> impl Strategy<Value = Doc> {
    // at most 15 significant digits: the text path's doubles hold them exactly
    (
        any::<bool>(),
        0u64..2000,
        prop_oneof![Just(String::new()), digits(2)],
    )
        .prop_map(|(n, i, f)| Doc::Num(n, i.to_string(), f))
}

fn field_value() -> impl Strategy<Value = Doc> {
    prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        small_number(),
        prop_oneof![
            Just("ab"),
            Just("abcdef"),
            Just("a"),
            Just("AB"),
            Just("gold"),
            Just("silver"),
            Just("2024-02-29"),
            Just("2023-02-29"),
            Just("2024-13-01"),
            Just("2024-01-01T10:00:00Z"),
            Just("2024-01-01T25:00:00Z"),
            Just("é✓"),
        ]
        .prop_map(|s| Doc::Str(s.to_owned())),
        proptest::collection::vec(small_number(), 0..4).prop_map(Doc::Arr),
        Just(Doc::Obj(vec![("k".into(), Doc::Null)])),
    ]
}

fn row() -> impl Strategy<Value = Doc> {
    let keys = prop_oneof![
        Just("id"),
        Just("day"),
        Just("at"),
        Just("amount"),
        Just("qty"),
        Just("tier"),
        Just("ok"),
        Just("tags"),
        Just("meta"),
        Just("extra"),
    ];
    prop_oneof![
        20 => proptest::collection::vec((keys.prop_map(str::to_owned), field_value()), 0..10)
            .prop_map(Doc::Obj),
        1 => field_value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The compiled validator run over the jsonb reader gives the verdict and the errors the
    /// text path gives.
    #[test]
    fn validation_in_place_agrees_with_the_text_path(mut d in row(), fill in any::<bool>()) {
        if fill {
            // mostly-valid rows too, so both verdicts are common
            if let Doc::Obj(pairs) = &mut d {
                pairs.insert(0, ("id".into(), Doc::Str("abc".into())));
                pairs.insert(0, ("day".into(), Doc::Str("2024-05-01".into())));
                pairs.insert(0, ("amount".into(), Doc::Num(false, "12".into(), "5".into())));
            }
        }
        let contract = crate::contract::Contract::parse(CONTRACT).unwrap();
        let schema = &contract.schema("rows").unwrap().row_schema;
        let v = crate::contract::RowValidator::new("rows", schema).unwrap();
        let bytes = encode(&d);
        let node = Container::root_node(&bytes).unwrap();
        let value = serde_json::from_str::<Value>(&d.deduplicated().text()).unwrap();
        prop_assert_eq!(v.is_valid_jsonb(node).unwrap(), v.is_valid(&value));
        prop_assert_eq!(v.errors_jsonb(node).unwrap(), v.errors(&value));
    }
}

#[test]
fn in_place_numbers_compare_as_the_text_paths_doubles() {
    let schema = serde_json::json!({"type": "object", "properties": {"x": {"maximum": 1}}});
    let v = crate::contract::RowValidator::new("t", &schema).unwrap();
    // 1 + 1e-20 and 1.1: both paths compare a number's nearest double, so both accept the first
    // (its double is 1.0) and refuse the second, the same way
    for (frac, valid) in [("00000000000000000001", true), ("1", false), ("000", true)] {
        let d = Doc::Obj(vec![("x".into(), Doc::Num(false, "1".into(), frac.into()))]);
        let bytes = encode(&d);
        let node = Container::root_node(&bytes).unwrap();
        assert_eq!(v.is_valid_jsonb(node).unwrap(), valid, "1.{frac}");
        assert_eq!(
            v.is_valid(&serde_json::from_str(&d.text()).unwrap()),
            valid,
            "1.{frac}"
        );
    }
}
