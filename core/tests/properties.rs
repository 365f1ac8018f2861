//! Property tests of the core's invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_core::compat::diff_schema;
use barecount_core::content_hash::ContentHasher;
use barecount_core::ledger::{StoredEntry, Verifier, GENESIS_HASH};
use proptest::prelude::*;
use serde_json::json;

fn hash_rows(rows: &[Vec<Option<String>>]) -> String {
    let mut h = ContentHasher::new(&[("a", "text"), ("b", "text")]);
    for r in rows {
        h.add_row(r).unwrap();
    }
    h.finish()
}

fn chain(payloads: &[u32]) -> Vec<StoredEntry> {
    let mut prev = GENESIS_HASH.to_owned();
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = StoredEntry {
                seq: i as i64 + 1,
                tenant_id: "t".into(),
                actor: "a".into(),
                at: "2024-01-01T00:00:00.000000Z".into(),
                event_type: "ingest".into(),
                subject: format!("batch:{i}"),
                inputs: json!({"p": p}),
                content_hash: None,
                prev_hash: prev.clone(),
                entry_hash: String::new(),
            };
            e.entry_hash = e.hash();
            prev = e.entry_hash.clone();
            e
        })
        .collect()
}

fn first_break(entries: &[StoredEntry]) -> Option<i64> {
    let mut v = Verifier::new(None);
    for e in entries {
        if !v.push(&e.canonical(), &e.entry_hash) {
            break;
        }
    }
    v.finish().first_break.map(|b| b.seq())
}

fn row() -> impl Strategy<Value = Vec<Option<String>>> {
    prop::collection::vec(prop::option::of("[a-z0-9]{0,4}"), 2)
}

proptest! {
    #[test]
    fn content_hash_ignores_row_order(rows in prop::collection::vec(row(), 0..20), seed in any::<u64>()) {
        let mut shuffled = rows.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        prop_assert_eq!(hash_rows(&rows), hash_rows(&shuffled));
    }

    #[test]
    fn content_hash_sees_any_changed_cell(rows in prop::collection::vec(row(), 1..20), at in any::<usize>(), col in 0usize..2) {
        let mut changed = rows.clone();
        let i = at % changed.len();
        changed[i][col] = match &changed[i][col] {
            None => Some(String::new()),
            Some(s) => Some(format!("{s}x")),
        };
        prop_assert_ne!(hash_rows(&rows), hash_rows(&changed));
    }

    #[test]
    fn honest_chains_verify_and_any_edit_is_found_where_it_is(payloads in prop::collection::vec(any::<u32>(), 1..30), at in any::<usize>()) {
        let c = chain(&payloads);
        prop_assert_eq!(first_break(&c), None);
        let i = at % c.len();
        let mut edited = c.clone();
        edited[i].inputs = json!({"p": payloads[i].wrapping_add(1)});
        prop_assert_eq!(first_break(&edited), Some(i as i64 + 1));
        let mut removed = c.clone();
        removed.remove(i);
        if i + 1 < c.len() {
            prop_assert_eq!(first_break(&removed), Some(i as i64 + 1));
        }
    }

    #[test]
    fn narrowing_one_way_is_widening_the_other(a in -1000i64..1000, b in -1000i64..1000, closed in any::<bool>()) {
        let s = |min: i64| json!({"type": "object", "additionalProperties": !closed,
                                  "properties": {"x": {"type": "integer", "minimum": min}}, "required": ["x"]});
        prop_assert!(diff_schema("t", &s(a), &s(a)).is_empty());
        let forward = diff_schema("t", &s(a), &s(b));
        let backward = diff_schema("t", &s(b), &s(a));
        prop_assert_eq!(forward.len(), backward.len());
        for (f, r) in forward.iter().zip(&backward) {
            prop_assert_eq!(f.narrows, r.widens);
            prop_assert_eq!(f.widens, r.narrows);
        }
    }
}
