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

/// Ascending row numbers as `[first, last]` ranges of consecutive numbers (`[1, 2, 3, 7]` →
/// `[[1, 3], [7, 7]]`): how a receipt lists many rows compactly. Unsorted input is sorted.
pub fn row_ranges(rows: &[i32]) -> Vec<[i32; 2]> {
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<[i32; 2]> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if last[1].checked_add(1) == Some(r) => last[1] = r,
            _ => out.push([r, r]),
        }
    }
    out
}

/// The fields of one ledger entry that its hash covers: what [`LedgerEntry::canonical_bytes`]
/// encodes and [`decode`] reads back (borrowed from the stored bytes, which are the truth: the
/// ledger's readable columns are computed from them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry<'a> {
    pub seq: i64,
    pub tenant_id: &'a str,
    pub actor: &'a str,
    pub at: &'a str,
    pub event_type: &'a str,
    pub subject: &'a str,
    /// Canonical JSON text ([`canonical_json`] of the inputs as stored).
    pub inputs: &'a str,
    /// `None` when encoded as the empty string.
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
        put(&mut buf, self.inputs.as_bytes());
        put(&mut buf, self.content_hash.unwrap_or("").as_bytes());
        put(&mut buf, self.prev_hash.as_bytes());
        buf
    }

    /// Lower-case hex SHA-256 of [`Self::canonical_bytes`].
    pub fn hash(&self) -> String {
        hash_of(&self.canonical_bytes())
    }
}

/// Lower-case hex SHA-256 of an entry's canonical bytes: its `entry_hash`.
pub fn hash_of(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
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

/// Number of length-prefixed fields after the tag in encoding version 1.
const FIELDS: usize = 9;
const TAG: &[u8] = b"barecount-ledger-v1";

/// Why stored canonical bytes are not a version-1 encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("it does not start with the tag barecount-ledger-v1")]
    Tag,
    #[error("field {0} is cut short")]
    Short(usize),
    #[error("bytes follow the last field")]
    Trailing,
    #[error("field {0} is not UTF-8")]
    Utf8(usize),
    #[error("the sequence number is not a positive decimal without leading zeros")]
    Seq,
    #[error("the time is not YYYY-MM-DDTHH:MM:SS.ffffffZ")]
    At,
    #[error("the previous hash is not 64 lower-case hex digits")]
    PrevHash,
}

/// The raw field slices of an encoding, checked for framing only.
fn fields(bytes: &[u8]) -> Result<[&[u8]; FIELDS], DecodeError> {
    let mut rest = bytes.strip_prefix(TAG).ok_or(DecodeError::Tag)?;
    let mut out: [&[u8]; FIELDS] = [&[]; FIELDS];
    for (i, slot) in out.iter_mut().enumerate() {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or(DecodeError::Short(i + 1))?;
        let len =
            usize::try_from(u64::from_be_bytes(*len)).map_err(|_| DecodeError::Short(i + 1))?;
        if tail.len() < len {
            return Err(DecodeError::Short(i + 1));
        }
        let (field, tail) = tail.split_at(len);
        *slot = field;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(out)
}

fn parse_seq(b: &[u8]) -> Result<i64, DecodeError> {
    if b.is_empty() || b.len() > 19 || b[0] == b'0' || !b.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::Seq);
    }
    b.iter()
        .try_fold(0i64, |n, d| {
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or(DecodeError::Seq)
}

/// 64 lower-case hex digits: a hash as the ledger writes it.
fn is_hash(b: &[u8]) -> bool {
    b.len() == 64 && b.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the chain needs of an encoding — its sequence number and previous hash — with the
/// framing checked (the tag, nine fields, nothing after): no other field is looked at, so
/// verification spends its time hashing.
fn chain_fields(bytes: &[u8]) -> Result<(i64, &[u8]), DecodeError> {
    let f = fields(bytes)?;
    let prev = f[8];
    if !is_hash(prev) {
        return Err(DecodeError::PrevHash);
    }
    Ok((parse_seq(f[0])?, prev))
}

/// Decodes and checks a version-1 encoding: framing, UTF-8, the sequence number, the time and
/// the previous hash (the inputs' JSON is checked where it is turned into jsonb).
pub fn decode(bytes: &[u8]) -> Result<LedgerEntry<'_>, DecodeError> {
    let f = fields(bytes)?;
    let text = |i: usize| std::str::from_utf8(f[i]).map_err(|_| DecodeError::Utf8(i + 1));
    let at = text(3)?;
    at_micros(at)?;
    let prev_hash = text(8)?;
    if !is_hash(prev_hash.as_bytes()) {
        return Err(DecodeError::PrevHash);
    }
    let content_hash = text(7)?;
    Ok(LedgerEntry {
        seq: parse_seq(f[0])?,
        tenant_id: text(1)?,
        actor: text(2)?,
        at,
        event_type: text(4)?,
        subject: text(5)?,
        inputs: text(6)?,
        content_hash: (!content_hash.is_empty()).then_some(content_hash),
        prev_hash,
    })
}

/// Microseconds since 2000-01-01 00:00:00 UTC (Postgres' timestamp epoch) of a canonical time,
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, years 1..=9999.
pub fn at_micros(at: &str) -> Result<i64, DecodeError> {
    let b = at.as_bytes();
    if b.len() != 27 {
        return Err(DecodeError::At);
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return Err(DecodeError::At);
        }
    }
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    // year 0 is not a year of the encoding (chrono's proleptic calendar has one)
    let year = i32::try_from(num(0..4))
        .ok()
        .filter(|y| *y >= 1)
        .ok_or(DecodeError::At)?;
    let time = chrono::NaiveDate::from_ymd_opt(year, num(5..7), num(8..10))
        .and_then(|d| d.and_hms_micro_opt(num(11..13), num(14..16), num(17..19), num(20..26)))
        .ok_or(DecodeError::At)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or(DecodeError::At)?;
    (time - epoch).num_microseconds().ok_or(DecodeError::At)
}

/// A ledger entry with owned fields and its hash: for building (and tampering with) chains
/// outside the database, as the verification tests do.
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
    /// The canonical bytes of the entry's fields, as the ledger stores them.
    pub fn canonical(&self) -> Vec<u8> {
        LedgerEntry {
            seq: self.seq,
            tenant_id: &self.tenant_id,
            actor: &self.actor,
            at: &self.at,
            event_type: &self.event_type,
            subject: &self.subject,
            inputs: &canonical_json(&self.inputs),
            content_hash: self.content_hash.as_deref(),
            prev_hash: &self.prev_hash,
        }
        .canonical_bytes()
    }

    /// The hash of [`StoredEntry::canonical`]: what `entry_hash` should be.
    pub fn hash(&self) -> String {
        hash_of(&self.canonical())
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
    /// The stored bytes are not a canonical encoding (they can only have been written past the
    /// ledger's guards).
    Malformed { seq: i64, why: DecodeError },
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
            | Break::DigestMismatch { seq }
            | Break::Malformed { seq, .. } => *seq,
            Break::Gap { expected, .. } => *expected,
            Break::Truncated { last_seq, .. } => last_seq + 1,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Break::HashMismatch { seq } => format!(
                "entry {seq}: its stored hash is not the hash of its contents (the entry was changed)"
            ),
            Break::Malformed { seq, why } => format!(
                "entry {seq}: its stored bytes are not a canonical ledger entry ({why}; the entry was changed)"
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
    /// Entries redacted (an offboarded tenant's): their links were checked, their contents
    /// are gone, so their hashes are taken as recorded.
    pub redacted: u64,
    /// Bytes of canonical encoding hashed.
    pub bytes: u64,
    pub last_seq: i64,
    pub last_hash: String,
    pub first_break: Option<Break>,
}

/// Recomputes a chain entry by entry from the stored canonical bytes: every hash, every link,
/// every sequence number, and the kept digest if one is given. Feed entries in sequence order
/// from the first. Nothing is rebuilt: each entry's bytes are decoded in place and hashed.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_seq: i64,
    /// Hash of the last entry that checked out (the genesis hash before the first).
    prev_hash: String,
    digest: Option<(i64, String)>,
    checked: u64,
    redacted: u64,
    bytes: u64,
    last_seq: i64,
    first_break: Option<Break>,
}

impl Verifier {
    pub fn new(digest: Option<(i64, String)>) -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            digest,
            checked: 0,
            redacted: 0,
            bytes: 0,
            last_seq: 0,
            first_break: None,
        }
    }

    /// Checks one entry, given its stored canonical bytes and stored hash; returns false once
    /// the chain is broken (later entries prove nothing).
    pub fn push(&mut self, canonical: &[u8], entry_hash: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(canonical).into();
        self.check(
            chain_fields(canonical),
            canonical.len(),
            entry_hash,
            &digest,
        )
    }

    /// Takes a redacted entry (its contents deleted with an offboarded tenant; its sequence
    /// number, previous hash and hash kept): its place in the sequence and its link to the
    /// entry before are checked, its hash is taken as recorded (the next entry's link and any
    /// kept digest still check it). Returns false once the chain is broken.
    pub fn push_redacted(&mut self, seq: i64, prev_hash: &str, entry_hash: &str) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        let brk = if seq != self.expected_seq {
            Some(Break::Gap {
                expected: self.expected_seq,
                found: seq,
            })
        } else if prev_hash != self.prev_hash {
            Some(Break::BrokenLink { seq })
        } else {
            self.digest_break(seq, entry_hash)
        };
        self.settle(brk, entry_hash, |v| v.redacted += 1)
    }

    /// A kept digest at `seq` with another hash than `entry_hash`.
    fn digest_break(&self, seq: i64, entry_hash: &str) -> Option<Break> {
        match &self.digest {
            Some((dseq, dhash)) if *dseq == seq && dhash != entry_hash => {
                Some(Break::DigestMismatch { seq })
            }
            _ => None,
        }
    }

    /// Records a break, or takes the entry: `count` counts it, its hash is the next link.
    fn settle(&mut self, brk: Option<Break>, entry_hash: &str, count: impl Fn(&mut Self)) -> bool {
        if let Some(b) = brk {
            self.first_break = Some(b);
            return false;
        }
        count(self);
        self.last_seq = self.expected_seq;
        self.prev_hash.clear();
        self.prev_hash.push_str(entry_hash);
        self.expected_seq += 1;
        true
    }

    /// The checks, given the entry's framing already read (sequence number and previous hash),
    /// its length and its SHA-256.
    fn check(
        &mut self,
        framed: Result<(i64, &[u8]), DecodeError>,
        len: usize,
        entry_hash: &str,
        digest: &[u8; 32],
    ) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        let brk = match framed {
            Err(why) => Some(Break::Malformed {
                seq: self.expected_seq,
                why,
            }),
            Ok((seq, _)) if seq != self.expected_seq => Some(Break::Gap {
                expected: self.expected_seq,
                found: seq,
            }),
            Ok((seq, prev_hash)) => {
                self.bytes += len as u64;
                let mut computed = [0u8; 64];
                // 32 bytes always fit 64 hex digits
                let _ = hex::encode_to_slice(digest, &mut computed);
                if computed != entry_hash.as_bytes() {
                    Some(Break::HashMismatch { seq })
                } else if prev_hash != self.prev_hash.as_bytes() {
                    Some(Break::BrokenLink { seq })
                } else {
                    self.digest_break(seq, entry_hash)
                }
            }
        };
        self.settle(brk, entry_hash, |v| v.checked += 1)
    }

    pub fn finish(mut self) -> Report {
        if self.first_break.is_none() {
            if let Some((dseq, _)) = &self.digest {
                if *dseq > self.last_seq {
                    self.first_break = Some(Break::Truncated {
                        digest_seq: *dseq,
                        last_seq: self.last_seq,
                    });
                }
            }
        }
        Report {
            checked: self.checked,
            redacted: self.redacted,
            bytes: self.bytes,
            last_seq: self.last_seq,
            last_hash: self.prev_hash,
            first_break: self.first_break,
        }
    }
}

/// Entries copied out of storage, hashed on the helper thread.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    /// (start of the canonical bytes, start of the stored hash, end) in `data`.
    spans: Vec<(usize, usize, usize)>,
    /// Each entry's framing, read while its bytes were at hand: its sequence number and where
    /// its previous hash is in `data`.
    framing: Vec<Result<(i64, std::ops::Range<usize>), DecodeError>>,
    digests: Vec<[u8; 32]>,
}

/// The helper's part: each entry's framing and SHA-256.
fn hash_batch(b: &mut Batch) {
    b.framing.clear();
    b.digests.clear();
    for &(start, hash, _) in &b.spans {
        let canonical = &b.data[start..hash];
        b.framing.push(chain_fields(canonical).map(|(seq, prev)| {
            // prev is a sub-slice of canonical
            let at = start + (prev.as_ptr() as usize - canonical.as_ptr() as usize);
            (seq, at..at + prev.len())
        }));
        b.digests.push(Sha256::digest(canonical).into());
    }
}

/// Bytes per batch handed to the helper thread.
const BATCH_BYTES: usize = 128 << 10;

/// Verification over entries read in any order — a heap scan, where rewritten tuples and
/// concurrent writers leave entries out of sequence — with SHA-256 on a helper thread: the
/// caller reads entries out of storage (copied into batches) while the helper frames and hashes
/// the batch before, and the caller checks the chain in sequence order. An entry met before its
/// turn waits — its hash, previous hash and length only, about 200 bytes — until the ones
/// before it have been checked; `None` when more than `max_waiting_bytes` would have to wait
/// (the caller then reads in sequence order). The checks and the report are [`Verifier`]'s: a
/// report without a break is definitive, every entry checked in sequence. A break found here
/// may sit at the wrong place (a missing entry, or one that does not decode, shows up where it
/// was met), so a caller that wants its exact place verifies again in sequence order. The
/// helper touches nothing but the bytes it is given.
pub fn verify_unordered(
    digest: Option<(i64, String)>,
    max_waiting_bytes: usize,
    feed: impl FnOnce(&mut dyn FnMut(&[u8], &str) -> bool),
) -> Option<Report> {
    std::thread::scope(|scope| {
        let (to_helper, helper_rx) = std::sync::mpsc::sync_channel::<Batch>(2);
        let (helper_tx, from_helper) = std::sync::mpsc::sync_channel::<Batch>(2);
        scope.spawn(move || {
            for mut b in helper_rx {
                hash_batch(&mut b);
                if helper_tx.send(b).is_err() {
                    break;
                }
            }
        });
        let mut p = Pipeline {
            verifier: Verifier::new(digest),
            current: Batch::default(),
            in_flight: 0,
            to_helper: Some(to_helper),
            from_helper,
            broken: false,
            spare: None,
            next: 1,
            waiting: std::collections::BTreeMap::new(),
            waiting_bytes: 0,
            max_waiting_bytes,
            overflow: false,
        };
        feed(&mut |canonical, entry_hash| p.push(canonical, entry_hash));
        p.flush();
        while p.in_flight > 0 {
            p.check_next();
        }
        p.check_waiting();
        // closing the channel ends the helper, which the scope then joins
        p.to_helper = None;
        (!p.overflow).then(|| p.verifier.finish())
    })
}

/// An entry checked out of its turn: what the chain check needs of it.
struct Waiting {
    prev_hash: [u8; 64],
    len: usize,
    entry_hash: String,
    digest: [u8; 32],
}

/// What a waiting entry costs, for the bound on waiting.
const WAITING_COST: usize = std::mem::size_of::<Waiting>() + 64 + 48;

struct Pipeline {
    verifier: Verifier,
    current: Batch,
    in_flight: usize,
    to_helper: Option<std::sync::mpsc::SyncSender<Batch>>,
    from_helper: std::sync::mpsc::Receiver<Batch>,
    broken: bool,
    /// A checked batch, cleared for reuse (no fresh pages to fault in for every batch).
    spare: Option<Batch>,
    /// The sequence number to check next.
    next: i64,
    waiting: std::collections::BTreeMap<i64, Waiting>,
    waiting_bytes: usize,
    max_waiting_bytes: usize,
    overflow: bool,
}

impl Pipeline {
    fn push(&mut self, canonical: &[u8], entry_hash: &str) -> bool {
        if self.broken || self.overflow {
            return false;
        }
        let b = &mut self.current;
        let start = b.data.len();
        b.data.extend_from_slice(canonical);
        b.data.extend_from_slice(entry_hash.as_bytes());
        b.spans.push((start, start + canonical.len(), b.data.len()));
        if b.data.len() >= BATCH_BYTES {
            self.flush();
            // keep at most two batches with the helper: check the older one meanwhile
            if self.in_flight > 1 {
                self.check_next();
            }
        }
        !self.broken && !self.overflow
    }

    fn flush(&mut self) {
        if self.current.spans.is_empty() {
            return;
        }
        let next = match self.spare.take() {
            Some(mut b) => {
                b.data.clear();
                b.spans.clear();
                b.framing.clear();
                b.digests.clear();
                b
            }
            None => Batch::default(),
        };
        let batch = std::mem::replace(&mut self.current, next);
        let unsent = match &self.to_helper {
            Some(tx) => match tx.send(batch) {
                Ok(()) => {
                    self.in_flight += 1;
                    return;
                }
                Err(std::sync::mpsc::SendError(b)) => b,
            },
            None => batch,
        };
        // the helper is gone (it has nothing that fails, but if it did): hash here instead
        let mut b = unsent;
        hash_batch(&mut b);
        self.check(b);
    }

    fn check_next(&mut self) {
        let Ok(b) = self.from_helper.recv() else {
            self.in_flight = 0;
            return;
        };
        self.in_flight -= 1;
        self.check(b);
    }

    fn check(&mut self, b: Batch) {
        self.check_entries(&b);
        self.spare = Some(b);
    }

    fn check_entries(&mut self, b: &Batch) {
        for ((&(start, hash, end), digest), framed) in
            b.spans.iter().zip(&b.digests).zip(&b.framing)
        {
            if self.broken || self.overflow {
                return;
            }
            let entry_hash = std::str::from_utf8(&b.data[hash..end]).unwrap_or("");
            let len = hash - start;
            match framed {
                Ok((seq, prev)) if *seq == self.next => {
                    self.next += 1;
                    let framed = Ok((*seq, &b.data[prev.clone()]));
                    if !self.verifier.check(framed, len, entry_hash, digest) {
                        self.broken = true;
                        return;
                    }
                    self.check_ready();
                }
                Ok((seq, prev)) if *seq > self.next && !self.waiting.contains_key(seq) => {
                    self.waiting_bytes += WAITING_COST;
                    if self.waiting_bytes > self.max_waiting_bytes {
                        self.overflow = true;
                        return;
                    }
                    let mut prev_hash = [0u8; 64];
                    // framing checked the previous hash is 64 hex digits
                    prev_hash.copy_from_slice(&b.data[prev.clone()]);
                    self.waiting.insert(
                        *seq,
                        Waiting {
                            prev_hash,
                            len,
                            entry_hash: entry_hash.to_owned(),
                            digest: *digest,
                        },
                    );
                }
                // seen before, twice, or not an entry: the verifier says what is wrong
                other => {
                    let framed = match other {
                        Ok((seq, prev)) => Ok((*seq, &b.data[prev.clone()])),
                        Err(e) => Err(e.clone()),
                    };
                    if !self.verifier.check(framed, len, entry_hash, digest) {
                        self.broken = true;
                        return;
                    }
                }
            }
        }
    }

    /// Checks the waiting entries whose turn has come.
    fn check_ready(&mut self) {
        while let Some(w) = self.waiting.remove(&self.next) {
            self.waiting_bytes -= WAITING_COST;
            let seq = self.next;
            self.next += 1;
            if !self
                .verifier
                .check(Ok((seq, &w.prev_hash)), w.len, &w.entry_hash, &w.digest)
            {
                self.broken = true;
                return;
            }
        }
    }

    /// At the end: whatever still waits comes after a missing entry; checked in order, the
    /// first of them reports the gap.
    fn check_waiting(&mut self) {
        if self.overflow {
            return;
        }
        for (seq, w) in std::mem::take(&mut self.waiting) {
            if self.broken {
                return;
            }
            if !self
                .verifier
                .check(Ok((seq, &w.prev_hash)), w.len, &w.entry_hash, &w.digest)
            {
                self.broken = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry<'a>(inputs: &'a str, prev: &'a str) -> LedgerEntry<'a> {
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
        let inputs = canonical_json(&json!({"b": 1, "a": [1, {"y": 2, "x": 1}]}));
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
        let inputs = canonical_json(&json!([]));
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
                e.entry_hash = e.hash();
                prev = e.entry_hash.clone();
                e
            })
            .collect()
    }

    fn verify(entries: &[StoredEntry], digest: Option<(i64, String)>) -> Report {
        let mut v = Verifier::new(digest);
        for e in entries {
            if !v.push(&e.canonical(), &e.entry_hash) {
                break;
            }
        }
        v.finish()
    }

    /// An offboarded tenant's entries are redacted: kept as (seq, prev_hash, entry_hash) only.
    /// The chain still verifies around them; a redaction that does not fit its place breaks it.
    #[test]
    fn redacted_entries_keep_the_chain_verifiable() {
        let c = chain(5);
        let run = |redacted: &[usize], fake: Option<(usize, &str)>| {
            let mut v = Verifier::new(Some((5, c[4].entry_hash.clone())));
            for (i, e) in c.iter().enumerate() {
                let ok = if redacted.contains(&i) {
                    let hash = match fake {
                        Some((j, h)) if j == i => h.to_owned(),
                        _ => e.entry_hash.clone(),
                    };
                    v.push_redacted(e.seq, &e.prev_hash, &hash)
                } else {
                    v.push(&e.canonical(), &e.entry_hash)
                };
                if !ok {
                    break;
                }
            }
            v.finish()
        };
        let r = run(&[1, 2], None);
        assert_eq!(r.first_break, None);
        assert_eq!((r.checked, r.redacted, r.last_seq), (3, 2, 5));
        // a redaction claiming another hash: the next entry's link refuses it
        let r = run(&[1], Some((1, "00")));
        assert_eq!(r.first_break, Some(Break::BrokenLink { seq: 3 }));
        // redacting the last entry under a kept digest with another hash: refused too
        let r = run(&[4], Some((4, "00")));
        assert_eq!(r.first_break, Some(Break::DigestMismatch { seq: 5 }));
        // a redaction out of place
        let mut v = Verifier::new(None);
        assert!(v.push(&c[0].canonical(), &c[0].entry_hash));
        assert!(!v.push_redacted(3, &c[2].prev_hash, &c[2].entry_hash));
        assert_eq!(
            v.finish().first_break,
            Some(Break::Gap {
                expected: 2,
                found: 3
            })
        );
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
        f.entry_hash = f.hash();
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
            e.entry_hash = e.hash();
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

    #[test]
    fn canonical_bytes_decode_to_the_fields_they_encode() {
        let inputs = canonical_json(&json!({"b": 1, "a": "x"}));
        let e = entry(&inputs, GENESIS_HASH);
        let bytes = e.canonical_bytes();
        let d = decode(&bytes).unwrap();
        assert_eq!(d.seq, 1);
        assert_eq!(
            (d.tenant_id, d.actor, d.at, d.event_type, d.subject),
            (
                "default",
                "alice",
                "2024-03-01T12:00:00.000000Z",
                "ingest",
                "raw.orders"
            )
        );
        assert_eq!(d.inputs, r#"{"a":"x","b":1}"#);
        assert_eq!(d.content_hash, Some("ab"));
        assert_eq!(d.prev_hash, GENESIS_HASH);
        let mut none = e.clone();
        none.content_hash = None;
        assert_eq!(decode(&none.canonical_bytes()).unwrap().content_hash, None);
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let inputs = canonical_json(&json!({}));
        let good = entry(&inputs, GENESIS_HASH).canonical_bytes();
        assert_eq!(decode(b"barecount-ledger-v2"), Err(DecodeError::Tag));
        assert_eq!(decode(&good[..good.len() - 1]), Err(DecodeError::Short(9)));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Trailing));
        // a length prefix past the end, and one near u64::MAX
        let mut huge = good.clone();
        huge[19..27].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(decode(&huge), Err(DecodeError::Short(1)));
        for (seq, ok) in [
            ("0", false),
            ("01", false),
            ("-1", false),
            ("", false),
            ("99999999999999999999", false),
            ("9223372036854775807", true),
        ] {
            let mut e = entry(&inputs, GENESIS_HASH);
            let mut bytes = b"barecount-ledger-v1".to_vec();
            put(&mut bytes, seq.as_bytes());
            e.seq = 1;
            bytes.extend_from_slice(&e.canonical_bytes()[19 + 8 + 1..]);
            assert_eq!(decode(&bytes).is_ok(), ok, "seq {seq:?}");
        }
        for at in [
            "2024-02-30T00:00:00.000000Z",
            "2024-03-01 12:00:00.000000Z",
            "2024-03-01T24:00:00.000000Z",
            "2024-03-01T12:00:00Z",
            "0000-01-01T00:00:00.000000Z",
        ] {
            let mut e = entry(&inputs, GENESIS_HASH);
            e.at = at;
            assert_eq!(decode(&e.canonical_bytes()), Err(DecodeError::At), "{at}");
        }
        let mut e = entry(&inputs, "ABC");
        e.prev_hash = "ABC";
        assert_eq!(decode(&e.canonical_bytes()), Err(DecodeError::PrevHash));
    }

    #[test]
    fn times_count_microseconds_from_the_postgres_epoch() {
        assert_eq!(at_micros("2000-01-01T00:00:00.000000Z"), Ok(0));
        assert_eq!(at_micros("1999-12-31T23:59:59.999999Z"), Ok(-1));
        // 2024-02-29 is day 8825 after 2000-01-01
        assert_eq!(
            at_micros("2024-02-29T01:02:03.000004Z"),
            Ok(8825 * 86_400_000_000 + 3_723_000_004)
        );
        assert_eq!(
            at_micros("1970-01-01T00:00:00.000000Z"),
            Ok(-946_684_800_000_000)
        );
        assert_eq!(
            at_micros("2023-02-29T00:00:00.000000Z"),
            Err(DecodeError::At)
        );
    }

    #[test]
    fn a_changed_byte_is_always_found() {
        let c = chain(4);
        let mut v = Verifier::new(None);
        let bytes: Vec<Vec<u8>> = c.iter().map(StoredEntry::canonical).collect();
        for (b, e) in bytes.iter().zip(&c) {
            assert!(v.push(b, &e.entry_hash));
        }
        let report = v.finish();
        assert_eq!(report.last_hash, c[3].entry_hash);
        assert_eq!(
            report.bytes,
            bytes.iter().map(|b| b.len() as u64).sum::<u64>()
        );
        for at in 0..bytes[1].len() {
            let mut v = Verifier::new(None);
            for (i, e) in c.iter().enumerate() {
                let mut b = bytes[i].clone();
                if i == 1 {
                    b[at] ^= 0x01;
                }
                if !v.push(&b, &e.entry_hash) {
                    break;
                }
            }
            let r = v.finish();
            assert_eq!(
                r.first_break.as_ref().map(Break::seq),
                Some(2),
                "byte {at}: {r:?}"
            );
            assert_eq!(r.checked, 1);
        }
    }

    #[test]
    fn the_pipelined_verifier_reports_what_the_sequential_one_does() {
        // big enough for several batches
        let c = chain(6000);
        let bytes: Vec<Vec<u8>> = c.iter().map(StoredEntry::canonical).collect();
        let run = |entries: &[(Vec<u8>, String)], digest: Option<(i64, String)>| {
            let mut v = Verifier::new(digest.clone());
            for (b, h) in entries {
                if !v.push(b, h) {
                    break;
                }
            }
            let sequential = v.finish();
            let pipelined = verify_unordered(digest, usize::MAX, |push| {
                for (b, h) in entries {
                    if !push(b, h) {
                        break;
                    }
                }
            })
            .unwrap();
            assert_eq!(pipelined, sequential);
            pipelined
        };
        let honest: Vec<(Vec<u8>, String)> = bytes
            .iter()
            .cloned()
            .zip(c.iter().map(|e| e.entry_hash.clone()))
            .collect();
        let r = run(&honest, Some((6000, c[5999].entry_hash.clone())));
        assert_eq!((r.checked, r.first_break), (6000, None));
        for at in [0usize, 1, 2047, 4500, 5999] {
            let mut changed = honest.clone();
            changed[at].0[40] ^= 1;
            let r = run(&changed, None);
            assert_eq!(r.first_break.map(|b| b.seq()), Some(at as i64 + 1));
            let mut removed = honest.clone();
            removed.remove(at);
            run(&removed, Some((6000, c[5999].entry_hash.clone())));
        }
        assert_eq!(run(&[], None).checked, 0);
    }

    #[test]
    fn entries_read_out_of_order_verify_as_in_order_within_the_window() {
        let c = chain(3000);
        let entries: Vec<(Vec<u8>, String)> = c
            .iter()
            .map(|e| (e.canonical(), e.entry_hash.clone()))
            .collect();
        let ordered = {
            let mut v = Verifier::new(None);
            for (b, h) in &entries {
                v.push(b, h);
            }
            v.finish()
        };
        // interleaved as concurrent writers leave them: blocks of 7 swapped pairwise
        let mut shuffled = entries.clone();
        for chunk in shuffled.chunks_mut(14) {
            if chunk.len() == 14 {
                let (a, b) = chunk.split_at_mut(7);
                a.swap_with_slice(b);
            }
        }
        let feed = |list: Vec<(Vec<u8>, String)>| {
            move |push: &mut dyn FnMut(&[u8], &str) -> bool| {
                for (b, h) in &list {
                    if !push(b, h) {
                        break;
                    }
                }
            }
        };
        assert_eq!(
            verify_unordered(None, 1 << 20, feed(shuffled.clone())),
            Some(ordered.clone())
        );
        // too much out of place for the window: the caller must read in order
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(
            verify_unordered(None, 64 << 10, feed(reversed.clone())),
            None
        );
        assert_eq!(
            verify_unordered(None, usize::MAX, feed(reversed)),
            Some(ordered.clone())
        );
        // a missing entry is a break (its place is settled by the ordered read)
        let mut missing = shuffled.clone();
        missing.remove(100);
        let r = verify_unordered(None, 1 << 20, feed(missing)).unwrap();
        assert!(r.first_break.is_some());
        // a duplicate is a break
        let mut twice = shuffled;
        twice.insert(500, entries[10].clone());
        let r = verify_unordered(None, 1 << 20, feed(twice)).unwrap();
        assert!(r.first_break.is_some());
    }

    #[test]
    fn row_ranges_are_compact_and_exact() {
        assert_eq!(row_ranges(&[]), Vec::<[i32; 2]>::new());
        assert_eq!(row_ranges(&[1, 2, 3, 7]), vec![[1, 3], [7, 7]]);
        assert_eq!(row_ranges(&[9, 8, 8, 1]), vec![[1, 1], [8, 9]]);
        assert_eq!(
            row_ranges(&[i32::MAX - 1, i32::MAX]),
            vec![[i32::MAX - 1, i32::MAX]]
        );
        let every_other: Vec<i32> = (1..=9).step_by(2).collect();
        assert_eq!(row_ranges(&every_other).len(), 5);
        let all: Vec<i32> = (1..=10_000).collect();
        assert_eq!(row_ranges(&all), vec![[1, 10_000]]);
    }
}
