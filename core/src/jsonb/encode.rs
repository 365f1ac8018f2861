//! A test-only jsonb encoder that follows Postgres's `convertToJsonb` (jsonb_util.c) step by
//! step, so the reader's offsets, strides, padding and numerics are exercised on documents far
//! larger and stranger than a handful of golden bytes. The extension's `#[pg_test]` checks the
//! reader against Postgres's own encoder too.

use super::*;

/// A document as the tests generate it: numbers as the decimal text `numeric_out` prints.
#[derive(Debug, Clone)]
pub enum Doc {
    Null,
    Bool(bool),
    Str(String),
    /// (negative, integer digits without leading zeros or "0", fraction digits)
    Num(bool, String, String),
    Arr(Vec<Doc>),
    Obj(Vec<(String, Doc)>),
}

impl Doc {
    /// The document as jsonb keeps it: of a repeated key, the last value only (the text of
    /// this is what `jsonb_out` gives back, up to key order and spacing).
    pub fn deduplicated(&self) -> Doc {
        match self {
            Doc::Arr(items) => Doc::Arr(items.iter().map(Doc::deduplicated).collect()),
            Doc::Obj(pairs) => {
                let mut kept: Vec<(String, Doc)> = Vec::new();
                for (k, v) in pairs {
                    let v = v.deduplicated();
                    match kept.iter_mut().find(|(sk, _)| sk == k) {
                        Some(p) => p.1 = v,
                        None => kept.push((k.clone(), v)),
                    }
                }
                Doc::Obj(kept)
            }
            other => other.clone(),
        }
    }

    /// JSON text (what a client would send).
    pub fn text(&self) -> String {
        match self {
            Doc::Null => "null".into(),
            Doc::Bool(b) => b.to_string(),
            Doc::Str(s) => serde_json::to_string(s).unwrap_or_default(),
            Doc::Num(..) => self.number_text(),
            Doc::Arr(items) => format!(
                "[{}]",
                items.iter().map(Doc::text).collect::<Vec<_>>().join(", ")
            ),
            Doc::Obj(pairs) => format!(
                "{{{}}}",
                pairs
                    .iter()
                    .map(|(k, v)| format!(
                        "{}: {}",
                        serde_json::to_string(k).unwrap_or_default(),
                        v.text()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// A number as `numeric_out` prints it (no sign on zero).
    pub fn number_text(&self) -> String {
        let Doc::Num(neg, int, frac) = self else {
            return String::new();
        };
        let zero = int.bytes().all(|b| b == b'0') && frac.bytes().all(|b| b == b'0');
        let mut s = String::new();
        if *neg && !zero {
            s.push('-');
        }
        s.push_str(int);
        if !frac.is_empty() {
            s.push('.');
            s.push_str(frac);
        }
        s
    }
}

/// The bytes of the jsonb datum for `doc` after its varlena header.
pub fn encode(doc: &Doc) -> Vec<u8> {
    let mut buf = vec![0u8; 4]; // the varlena header, as Postgres reserves it
    match doc {
        Doc::Arr(_) | Doc::Obj(_) => {
            convert(&mut buf, doc);
        }
        scalar => {
            // a raw scalar: a one-element array flagged JB_FSCALAR
            array(&mut buf, std::slice::from_ref(scalar), true);
        }
    }
    buf.split_off(4)
}

fn pad(buf: &mut Vec<u8>) -> u32 {
    let padlen = int_align(buf.len()) - buf.len();
    buf.resize(buf.len() + padlen, 0);
    padlen as u32
}

fn convert(buf: &mut Vec<u8>, doc: &Doc) -> u32 {
    match doc {
        Doc::Null => JENTRY_ISNULL,
        Doc::Bool(true) => JENTRY_ISBOOL_TRUE,
        Doc::Bool(false) => JENTRY_ISBOOL_FALSE,
        Doc::Str(s) => {
            buf.extend_from_slice(s.as_bytes());
            s.len() as u32
        }
        Doc::Num(..) => {
            let num = numeric(&doc.number_text());
            let padlen = pad(buf);
            buf.extend_from_slice(&num);
            JENTRY_ISNUMERIC | (padlen + num.len() as u32)
        }
        Doc::Arr(items) => JENTRY_ISCONTAINER | array(buf, items, false),
        Doc::Obj(pairs) => JENTRY_ISCONTAINER | object(buf, pairs),
    }
}

fn array(buf: &mut Vec<u8>, items: &[Doc], raw_scalar: bool) -> u32 {
    let mut head = items.len() as u32 | JB_FARRAY;
    if raw_scalar {
        head |= JB_FSCALAR;
    }
    container(buf, head, items)
}

fn object(buf: &mut Vec<u8>, pairs: &[(String, Doc)]) -> u32 {
    // jsonb order: shorter keys first, then bytewise; a repeated key keeps its last value
    let mut sorted: Vec<(String, Doc)> = Vec::new();
    for (k, v) in pairs {
        if let Some(p) = sorted.iter_mut().find(|(sk, _)| sk == k) {
            p.1 = v.clone();
        } else {
            sorted.push((k.clone(), v.clone()));
        }
    }
    sorted.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
    // keys first, then values, as one run of children
    let children = sorted
        .iter()
        .map(|(k, _)| Doc::Str(k.clone()))
        .chain(sorted.iter().map(|(_, v)| v.clone()))
        .collect::<Vec<_>>();
    container(buf, sorted.len() as u32 | JB_FOBJECT, &children)
}

/// A container: padding, the header word, one JEntry per child (every 32nd holding its end
/// offset, the others their length), then the children. Returns its length with the padding.
fn container(buf: &mut Vec<u8>, head: u32, children: &[Doc]) -> u32 {
    let base = buf.len();
    pad(buf);
    buf.extend_from_slice(&head.to_ne_bytes());
    let mut at = buf.len();
    buf.resize(at + 4 * children.len(), 0);
    let mut total = 0u32;
    for (i, child) in children.iter().enumerate() {
        let mut meta = convert(buf, child);
        total += meta & JENTRY_OFFLENMASK;
        if i % 32 == 0 {
            meta = (meta & JENTRY_TYPEMASK) | total | JENTRY_HAS_OFF;
        }
        buf[at..at + 4].copy_from_slice(&meta.to_ne_bytes());
        at += 4;
    }
    (buf.len() - base) as u32
}

/// A Postgres numeric varlena for a plain decimal text (as `numeric_in` makes it: short form
/// when the scale and weight fit, long form otherwise; zero has no digits).
pub fn numeric(text: &str) -> Vec<u8> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let dscale = frac.len() as i32;
    let int = int.trim_start_matches('0');
    let ipad = (4 - int.len() % 4) % 4;
    let fpad = (4 - frac.len() % 4) % 4;
    let all: String = "0".repeat(ipad) + int + frac + &"0".repeat(fpad);
    let mut digits: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0))
        .collect();
    let mut weight = ((ipad + int.len()) / 4) as i32 - 1;
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let neg = neg && !digits.is_empty();
    if digits.is_empty() {
        weight = 0;
    }
    let mut body = Vec::new();
    if dscale <= 0x3F && (-64..=63).contains(&weight) {
        let mut head: u16 = 0x8000 | ((dscale as u16) << 7) | ((weight as u16) & 0x3F);
        if weight < 0 {
            head |= 0x0040;
        }
        if neg {
            head |= 0x2000;
        }
        body.extend_from_slice(&head.to_ne_bytes());
    } else {
        let head: u16 = (if neg { 0x4000 } else { 0 }) | (dscale as u16 & 0x3FFF);
        body.extend_from_slice(&head.to_ne_bytes());
        body.extend_from_slice(&(weight as i16).to_ne_bytes());
    }
    for d in digits {
        body.extend_from_slice(&d.to_ne_bytes());
    }
    let size = (body.len() + 4) as u32;
    let mut out = (size << 2).to_ne_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}
