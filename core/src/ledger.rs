//! The evidence ledger's hash chain.
//!
//! Every entry's hash is SHA-256 over a canonical encoding of its fields and the previous
//! entry's hash, so changing, removing or reordering any entry breaks every later link.
//!
//! Canonical encoding (version 1): the ASCII tag `barecount-ledger-v1`, then each field in the
//! order of [`LedgerEntry`] as an 8-byte big-endian length followed by its UTF-8 bytes. `seq` is
//! written in decimal, `at` as RFC 3339 UTC with microseconds (`2024-03-01T12:00:00.000000Z`),
//! `inputs` as canonical JSON (object keys sorted by code point, no whitespace), absent content
//! hash as the empty string. The first entry's `prev_hash` is [`GENESIS_HASH`].

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Event types the ledger records.
pub const EVENT_TYPES: &[&str] = &[
    "contract_register",
    "ingest",
    "quarantine",
    "replay",
    "model_run",
    "kpi_materialize",
    "period_close",
    "period_reopen",
    "restatement",
    "publish",
    "export",
];

/// The fields of one ledger entry that its hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry<'a> {
    pub seq: i64,
    pub tenant_id: &'a str,
    pub actor: &'a str,
    pub at: &'a str,
    pub event_type: &'a str,
    pub subject: &'a str,
    pub inputs: &'a Value,
    pub content_hash: Option<&'a str>,
    pub prev_hash: &'a str,
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    buf.extend_from_slice(bytes);
}

impl LedgerEntry<'_> {
    /// The canonical byte encoding the hash is taken over.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"barecount-ledger-v1");
        put(&mut buf, self.seq.to_string().as_bytes());
        put(&mut buf, self.tenant_id.as_bytes());
        put(&mut buf, self.actor.as_bytes());
        put(&mut buf, self.at.as_bytes());
        put(&mut buf, self.event_type.as_bytes());
        put(&mut buf, self.subject.as_bytes());
        put(&mut buf, canonical_json(self.inputs).as_bytes());
        put(&mut buf, self.content_hash.unwrap_or("").as_bytes());
        put(&mut buf, self.prev_hash.as_bytes());
        buf
    }

    /// Lower-case hex SHA-256 of [`Self::canonical_bytes`].
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

/// JSON with object keys sorted by code point and no insignificant whitespace, independent of
/// how `serde_json` was built (with or without `preserve_order`).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(*k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry<'a>(inputs: &'a Value, prev: &'a str) -> LedgerEntry<'a> {
        LedgerEntry {
            seq: 1,
            tenant_id: "default",
            actor: "alice",
            at: "2024-03-01T12:00:00.000000Z",
            event_type: "ingest",
            subject: "raw.orders",
            inputs,
            content_hash: Some("ab"),
            prev_hash: prev,
        }
    }

    #[test]
    fn hash_is_stable_and_covers_every_field() {
        let inputs = json!({"b": 1, "a": [1, {"y": 2, "x": 1}]});
        let e = entry(&inputs, GENESIS_HASH);
        let h = e.hash();
        assert_eq!(h.len(), 64);
        assert_eq!(h, e.clone().hash());
        let mut changed = e.clone();
        changed.actor = "mallory";
        assert_ne!(changed.hash(), h);
        let mut changed = e.clone();
        changed.content_hash = None;
        assert_ne!(changed.hash(), h);
        let mut changed = e.clone();
        changed.seq = 2;
        assert_ne!(changed.hash(), h);
        let other_prev = "1".repeat(64);
        let changed = entry(&inputs, &other_prev);
        assert_ne!(changed.hash(), h);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let inputs = json!([]);
        let mut a = entry(&inputs, GENESIS_HASH);
        a.actor = "ab";
        a.subject = "c";
        let mut b = a.clone();
        b.actor = "a";
        b.subject = "bc";
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": [true, null], "c": "x"}})),
            r#"{"a":{"c":"x","d":[true,null]},"b":1}"#
        );
    }
}
