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

/// A ledger entry as stored, for verification.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub seq: i64,
    pub tenant_id: String,
    pub actor: String,
    pub at: String,
    pub event_type: String,
    pub subject: String,
    pub inputs: Value,
    pub content_hash: Option<String>,
    pub prev_hash: String,
    pub entry_hash: String,
}

impl StoredEntry {
    pub fn as_entry(&self) -> LedgerEntry<'_> {
        LedgerEntry {
            seq: self.seq,
            tenant_id: &self.tenant_id,
            actor: &self.actor,
            at: &self.at,
            event_type: &self.event_type,
            subject: &self.subject,
            inputs: &self.inputs,
            content_hash: self.content_hash.as_deref(),
            prev_hash: &self.prev_hash,
        }
    }
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The stored hash is not the hash of the stored fields: the entry was changed.
    HashMismatch { seq: i64 },
    /// The entry does not point at its predecessor's hash: something before it was inserted,
    /// removed or rewritten.
    BrokenLink { seq: i64 },
    /// Sequence numbers skip: entries were deleted (or the order was changed).
    Gap { expected: i64, found: i64 },
    /// The entry at the kept digest's sequence has another hash: history up to it was rewritten.
    DigestMismatch { seq: i64 },
    /// The ledger ends before the kept digest's sequence: its tail was removed.
    Truncated { digest_seq: i64, last_seq: i64 },
}

impl Break {
    pub fn seq(&self) -> i64 {
        match self {
            Break::HashMismatch { seq }
            | Break::BrokenLink { seq }
            | Break::DigestMismatch { seq } => *seq,
            Break::Gap { expected, .. } => *expected,
            Break::Truncated { last_seq, .. } => last_seq + 1,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Break::HashMismatch { seq } => format!(
                "entry {seq}: its stored hash is not the hash of its contents (the entry was changed)"
            ),
            Break::BrokenLink { seq } => format!(
                "entry {seq}: prev_hash is not the hash of entry {} (an entry was inserted, removed or rewritten before it)",
                seq - 1
            ),
            Break::Gap { expected, found } if found > expected => format!(
                "entry {expected} is missing: the next entry is {found} (entries were deleted)"
            ),
            Break::Gap { expected, found } => {
                format!("entry {found} appears where entry {expected} was expected (entries were reordered or duplicated)")
            }
            Break::DigestMismatch { seq } => format!(
                "entry {seq}: its hash differs from the kept digest (history up to {seq} was rewritten)"
            ),
            Break::Truncated { digest_seq, last_seq } => format!(
                "the ledger ends at entry {last_seq} but the kept digest is at {digest_seq} (entries were removed from the tail)"
            ),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: u64,
    /// Bytes of canonical encoding hashed.
    pub bytes: u64,
    pub last_seq: i64,
    pub last_hash: String,
    pub first_break: Option<Break>,
}

/// Recomputes a chain entry by entry: every hash, every link, every sequence number, and the
/// kept digest if one is given. Feed entries in sequence order from the first.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    digest: Option<(i64, String)>,
    report: Report,
}

impl Verifier {
    pub fn new(digest: Option<(i64, String)>) -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            digest,
            report: Report {
                checked: 0,
                bytes: 0,
                last_seq: 0,
                last_hash: GENESIS_HASH.to_owned(),
                first_break: None,
            },
        }
    }

    /// Checks one entry; returns false once the chain is broken (later entries prove nothing).
    pub fn push(&mut self, e: &StoredEntry) -> bool {
        if self.report.first_break.is_some() {
            return false;
        }
        let brk = if e.seq != self.expected_seq {
            Some(Break::Gap {
                expected: self.expected_seq,
                found: e.seq,
            })
        } else {
            let bytes = e.as_entry().canonical_bytes();
            self.report.bytes += bytes.len() as u64;
            let computed = hex::encode(Sha256::digest(&bytes));
            if computed != e.entry_hash {
                Some(Break::HashMismatch { seq: e.seq })
            } else if e.prev_hash != self.prev_hash {
                Some(Break::BrokenLink { seq: e.seq })
            } else {
                match &self.digest {
                    Some((dseq, dhash)) if *dseq == e.seq && *dhash != e.entry_hash => {
                        Some(Break::DigestMismatch { seq: e.seq })
                    }
                    _ => None,
                }
            }
        };
        if let Some(b) = brk {
            self.report.first_break = Some(b);
            return false;
        }
        self.report.checked += 1;
        self.report.last_seq = e.seq;
        self.report.last_hash = e.entry_hash.clone();
        self.prev_hash = e.entry_hash.clone();
        self.expected_seq = e.seq + 1;
        true
    }

    pub fn finish(mut self) -> Report {
        if self.report.first_break.is_none() {
            if let Some((dseq, _)) = &self.digest {
                if *dseq > self.report.last_seq {
                    self.report.first_break = Some(Break::Truncated {
                        digest_seq: *dseq,
                        last_seq: self.report.last_seq,
                    });
                }
            }
        }
        self.report
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

    fn chain(n: i64) -> Vec<StoredEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = StoredEntry {
                    seq,
                    tenant_id: "t".into(),
                    actor: "a".into(),
                    at: "2024-01-01T00:00:00.000000Z".into(),
                    event_type: "ingest".into(),
                    subject: format!("batch:{seq}"),
                    inputs: json!({"n": seq}),
                    content_hash: None,
                    prev_hash: prev.clone(),
                    entry_hash: String::new(),
                };
                e.entry_hash = e.as_entry().hash();
                prev = e.entry_hash.clone();
                e
            })
            .collect()
    }

    fn verify(entries: &[StoredEntry], digest: Option<(i64, String)>) -> Report {
        let mut v = Verifier::new(digest);
        for e in entries {
            if !v.push(e) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = chain(5);
        let r = verify(&c, Some((5, c[4].entry_hash.clone())));
        assert_eq!(r.first_break, None);
        assert_eq!((r.checked, r.last_seq), (5, 5));
        assert!(r.bytes > 0);
    }

    #[test]
    fn every_tamper_kind_is_found() {
        let c = chain(6);
        let mut changed = c.clone();
        changed[2].inputs = json!({"n": 99});
        assert_eq!(
            verify(&changed, None).first_break,
            Some(Break::HashMismatch { seq: 3 })
        );

        let mut deleted = c.clone();
        deleted.remove(2);
        assert_eq!(
            verify(&deleted, None).first_break,
            Some(Break::Gap {
                expected: 3,
                found: 4
            })
        );

        let mut reordered = c.clone();
        reordered.swap(2, 3);
        assert_eq!(
            verify(&reordered, None).first_break,
            Some(Break::Gap {
                expected: 3,
                found: 4
            })
        );
        // reordered with the sequence numbers swapped back: the hashes cover seq
        let (s2, s3) = (reordered[2].seq, reordered[3].seq);
        reordered[2].seq = s3;
        reordered[3].seq = s2;
        assert_eq!(
            verify(&reordered, None).first_break,
            Some(Break::HashMismatch { seq: 3 })
        );

        // a forged entry, correctly hashed, slipped in at 3 with the rest renumbered
        let mut forged = c.clone();
        let mut f = c[2].clone();
        f.subject = "forged".into();
        f.prev_hash = c[1].entry_hash.clone();
        f.entry_hash = f.as_entry().hash();
        forged.insert(2, f);
        for (i, e) in forged.iter_mut().enumerate().skip(3) {
            e.seq = i as i64 + 1;
        }
        let r = verify(&forged, None);
        assert_eq!(r.first_break, Some(Break::HashMismatch { seq: 4 }));

        // a whole rewritten history is consistent; only the kept digest catches it
        let mut rewritten = chain(6);
        rewritten[0].actor = "mallory".into();
        let mut prev = GENESIS_HASH.to_owned();
        for e in rewritten.iter_mut() {
            e.prev_hash = prev.clone();
            e.entry_hash = e.as_entry().hash();
            prev = e.entry_hash.clone();
        }
        assert_eq!(verify(&rewritten, None).first_break, None);
        let kept = (4, c[3].entry_hash.clone());
        assert_eq!(
            verify(&rewritten, Some(kept.clone())).first_break,
            Some(Break::DigestMismatch { seq: 4 })
        );

        // a truncated tail is consistent; the digest catches it
        let truncated = &c[..3];
        assert_eq!(verify(truncated, None).first_break, None);
        assert_eq!(
            verify(truncated, Some(kept)).first_break,
            Some(Break::Truncated {
                digest_seq: 4,
                last_seq: 3
            })
        );
    }
}
