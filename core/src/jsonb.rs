//! Postgres's on-disk `jsonb` read in place: no text, no `serde_json::Value` per document.
//!
//! The format (Postgres 15, `src/include/utils/jsonb.h`): a container is a `uint32` header
//! (element or pair count in the low 28 bits; flags `JB_FSCALAR`, `JB_FOBJECT`, `JB_FARRAY`),
//! then one `JEntry` (`uint32`) per child — an object's keys first, in jsonb order (shorter
//! first, then bytewise), then its values — then the children's data. A `JEntry` holds the
//! child's type (3 bits), a "has offset" flag, and either its length or (every 32nd child) its
//! end offset. Strings are raw UTF-8; numerics and nested containers start 4-byte aligned
//! (relative to the data area) and numerics are Postgres `numeric` varlenas (base-10000 digits).
//! A top-level scalar is a one-element array flagged `JB_FSCALAR`.
//!
//! Everything here is safe Rust over a byte slice: every offset is bounds-checked and a
//! malformed document is an error, never a panic. The extension hands in the bytes of a
//! detoasted datum (after its 4-byte varlena header).

use serde_json::{Number, Value};

/// Why a jsonb document cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonbError {
    #[error("the jsonb document is cut short or an offset points outside it")]
    Truncated,
    #[error("the jsonb document has a child of unknown kind {0}")]
    Kind(u32),
    #[error("a jsonb string is not valid UTF-8")]
    Utf8,
    #[error("a jsonb number is not a finite numeric")]
    Numeric,
    /// A number beyond double precision (the text path refuses the same: 22003).
    #[error("a JSON number is out of range: {0}")]
    OutOfRange(String),
    /// Nesting past [`MAX_DEPTH`] (the text path refuses the same: 54001).
    #[error("a JSON document is nested more than 127 levels deep")]
    TooDeep,
}

/// Levels of nesting read (serde_json's own limit, so both paths accept the same documents).
pub const MAX_DEPTH: usize = 127;

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, JsonbError> {
    let b = bytes.get(at..at + 4).ok_or(JsonbError::Truncated)?;
    Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn int_align(n: usize) -> usize {
    (n + 3) & !3
}

/// An array or object inside a document (or a document's root).
#[derive(Clone, Copy, Debug)]
pub struct Container<'a> {
    bytes: &'a [u8],
    header: u32,
}

/// One value inside a document, borrowed from it.
#[derive(Clone, Copy, Debug)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    String(&'a str),
    /// A Postgres numeric varlena (header included).
    Number(&'a [u8]),
    Array(Container<'a>),
    Object(Container<'a>),
}

impl<'a> Container<'a> {
    /// The root container of a document: the bytes of a jsonb datum after its varlena header.
    pub fn root(bytes: &'a [u8]) -> Result<Self, JsonbError> {
        let header = u32_at(bytes, 0)?;
        let c = Container { bytes, header };
        if c.is_object() == c.is_array() {
            return Err(JsonbError::Truncated);
        }
        // every JEntry must be inside the document
        if bytes.len() < c.data_start() {
            return Err(JsonbError::Truncated);
        }
        Ok(c)
    }

    /// The root as a value: the scalar of a top-level scalar document, else the container.
    pub fn root_node(bytes: &'a [u8]) -> Result<Node<'a>, JsonbError> {
        let c = Container::root(bytes)?;
        if c.header & JB_FSCALAR != 0 {
            c.child(0)
        } else {
            Ok(c.node())
        }
    }

    fn node(self) -> Node<'a> {
        if self.is_object() {
            Node::Object(self)
        } else {
            Node::Array(self)
        }
    }

    /// The container's bytes, from its header on.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Elements of an array, pairs of an object.
    pub fn len(&self) -> usize {
        (self.header & JB_CMASK) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_object(&self) -> bool {
        self.header & JB_FOBJECT != 0
    }

    pub fn is_array(&self) -> bool {
        self.header & JB_FARRAY != 0
    }

    /// A top-level scalar's wrapper (a one-element array).
    pub fn is_scalar(&self) -> bool {
        self.header & JB_FSCALAR != 0
    }

    fn children(&self) -> usize {
        if self.is_object() {
            self.len() * 2
        } else {
            self.len()
        }
    }

    fn data_start(&self) -> usize {
        4 + 4 * self.children()
    }

    fn entry(&self, i: usize) -> Result<u32, JsonbError> {
        u32_at(self.bytes, 4 + 4 * i)
    }

    /// The start of child `i` in the data area (Postgres's `getJsonbOffset`).
    fn offset(&self, i: usize) -> Result<usize, JsonbError> {
        let mut offset = 0usize;
        for j in (0..i).rev() {
            let e = self.entry(j)?;
            offset += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        Ok(offset)
    }

    /// Child `i`, starting at `start` (in the data area); returns it and where the next starts.
    fn child_at(&self, i: usize, start: usize) -> Result<(Node<'a>, usize), JsonbError> {
        let e = self.entry(i)?;
        let offlen = (e & JENTRY_OFFLENMASK) as usize;
        let end = if e & JENTRY_HAS_OFF != 0 {
            offlen
        } else {
            start + offlen
        };
        let base = self.data_start();
        if end < start {
            return Err(JsonbError::Truncated);
        }
        let data = self
            .bytes
            .get(base + start..base + end)
            .ok_or(JsonbError::Truncated)?;
        let aligned = || {
            data.get(int_align(start) - start..)
                .ok_or(JsonbError::Truncated)
        };
        let node = match e & JENTRY_TYPEMASK {
            JENTRY_ISSTRING => {
                Node::String(std::str::from_utf8(data).map_err(|_| JsonbError::Utf8)?)
            }
            JENTRY_ISNUMERIC => Node::Number(aligned()?),
            JENTRY_ISBOOL_FALSE => Node::Bool(false),
            JENTRY_ISBOOL_TRUE => Node::Bool(true),
            JENTRY_ISNULL => Node::Null,
            JENTRY_ISCONTAINER => {
                let c = Container::root(aligned()?)?;
                if c.is_scalar() {
                    return Err(JsonbError::Truncated);
                }
                c.node()
            }
            other => return Err(JsonbError::Kind(other >> 28)),
        };
        Ok((node, end))
    }

    /// Child `i` (an element; for an object, keys are `0..len` and values `len..2*len`).
    pub fn child(&self, i: usize) -> Result<Node<'a>, JsonbError> {
        if i >= self.children() {
            return Err(JsonbError::Truncated);
        }
        Ok(self.child_at(i, self.offset(i)?)?.0)
    }

    /// An array's elements in order (an object yields nothing).
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            c: *self,
            next: 0,
            start: 0,
            end: if self.is_array() { self.len() } else { 0 },
        }
    }

    /// An object's members in jsonb order (keys shorter first, then bytewise).
    pub fn pairs(&self) -> Result<Pairs<'a>, JsonbError> {
        let n = if self.is_object() { self.len() } else { 0 };
        Ok(Pairs {
            c: *self,
            next: 0,
            n,
            key_start: 0,
            value_start: self.offset(n)?,
        })
    }

    /// The value of key `key`, found by binary search in jsonb key order.
    pub fn get(&self, key: &str) -> Result<Option<Node<'a>>, JsonbError> {
        if !self.is_object() {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let Node::String(k) = self.child(mid)? else {
                return Err(JsonbError::Truncated);
            };
            match (k.len(), k.as_bytes()).cmp(&(key.len(), key.as_bytes())) {
                std::cmp::Ordering::Equal => return self.child(self.len() + mid).map(Some),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }
}

/// See [`Container::elements`].
pub struct Elements<'a> {
    c: Container<'a>,
    next: usize,
    start: usize,
    end: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Node<'a>, JsonbError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let r = self.c.child_at(self.next, self.start);
        self.next += 1;
        Some(r.map(|(node, end)| {
            self.start = end;
            node
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

/// See [`Container::pairs`].
pub struct Pairs<'a> {
    c: Container<'a>,
    next: usize,
    n: usize,
    key_start: usize,
    value_start: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<(&'a str, Node<'a>), JsonbError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.n {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let pair = (|| {
            let (key, kend) = self.c.child_at(i, self.key_start)?;
            let (value, vend) = self.c.child_at(self.n + i, self.value_start)?;
            self.key_start = kend;
            self.value_start = vend;
            match key {
                Node::String(k) => Ok((k, value)),
                _ => Err(JsonbError::Truncated),
            }
        })();
        if pair.is_err() {
            self.next = self.n;
        }
        Some(pair)
    }
}

/// A Postgres numeric varlena as `numeric_out` prints it (no exponent; `dscale` fraction
/// digits), appended to `out`.
pub fn numeric_text(numeric: &[u8], out: &mut String) -> Result<(), JsonbError> {
    let first = *numeric.first().ok_or(JsonbError::Truncated)?;
    // little-endian varlena: a set low bit is a 1-byte header (size in the upper 7 bits)
    let (hdr, size) = if cfg!(target_endian = "little") && first & 1 == 1 {
        (1usize, (first >> 1) as usize)
    } else if cfg!(target_endian = "little") {
        (4usize, ((u32_at(numeric, 0)? >> 2) & 0x3FFF_FFFF) as usize)
    } else {
        (4usize, (u32_at(numeric, 0)? & 0x3FFF_FFFF) as usize)
    };
    let body = numeric.get(hdr..size).ok_or(JsonbError::Truncated)?;
    let u16_at = |at: usize| -> Result<u16, JsonbError> {
        let b = body.get(at..at + 2).ok_or(JsonbError::Truncated)?;
        Ok(u16::from_ne_bytes([b[0], b[1]]))
    };
    let head = u16_at(0)?;
    let (negative, dscale, weight, digits_at) = match head & 0xC000 {
        0x8000 => {
            // NUMERIC_SHORT
            let w = (head & 0x003F) as i32;
            let weight = if head & 0x0040 != 0 { w - 64 } else { w };
            (
                head & 0x2000 != 0,
                ((head & 0x1F80) >> 7) as i32,
                weight,
                2usize,
            )
        }
        0xC000 => return Err(JsonbError::Numeric),
        sign => (
            sign == 0x4000,
            (head & 0x3FFF) as i32,
            i32::from(u16_at(2)? as i16),
            4usize,
        ),
    };
    let raw = body.get(digits_at..).ok_or(JsonbError::Truncated)?;
    let ndigits = (raw.len() / 2) as i32;
    let digit = |d: i32| -> i32 {
        if d >= 0 && d < ndigits {
            let at = d as usize * 2;
            i32::from(i16::from_ne_bytes([raw[at], raw[at + 1]]))
        } else {
            0
        }
    };
    if negative {
        out.push('-');
    }
    let mut d;
    if weight < 0 {
        d = weight + 1;
        out.push('0');
    } else {
        d = 0;
        while d <= weight {
            let dig = digit(d);
            if !(0..10000).contains(&dig) {
                return Err(JsonbError::Numeric);
            }
            let four = [dig / 1000, dig / 100 % 10, dig / 10 % 10, dig % 10];
            // the first group without leading zeros (0 prints as "0")
            let skip = if d == 0 {
                four.iter().take(3).take_while(|x| **x == 0).count()
            } else {
                0
            };
            for x in &four[skip..] {
                out.push(char::from(b'0' + *x as u8));
            }
            d += 1;
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut printed = 0;
        while printed < dscale {
            let dig = digit(d);
            if !(0..10000).contains(&dig) {
                return Err(JsonbError::Numeric);
            }
            let four = [dig / 1000, dig / 100 % 10, dig / 10 % 10, dig % 10];
            for x in four.iter().take((dscale - printed).min(4) as usize) {
                out.push(char::from(b'0' + *x as u8));
            }
            printed += 4;
            d += 1;
        }
    }
    Ok(())
}

struct StrWriter<'s>(&'s mut String);

impl std::io::Write for StrWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // only ever handed serde_json's output, which is UTF-8
        self.0
            .push_str(std::str::from_utf8(buf).map_err(std::io::Error::other)?);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A numeric as the number serde_json reads from its text (what the text path holds): an
/// integer when it fits 64 bits, else a double; beyond double precision is an error.
pub fn numeric_number(numeric: &[u8], scratch: &mut String) -> Result<Number, JsonbError> {
    scratch.clear();
    numeric_text(numeric, scratch)?;
    serde_json::from_str::<Number>(scratch).map_err(|e| JsonbError::OutOfRange(e.to_string()))
}

impl<'a> Node<'a> {
    /// The value as serde_json holds it (for error reports and rules that need a `Value`).
    pub fn to_value(&self) -> Result<Value, JsonbError> {
        let mut scratch = String::new();
        self.to_value_at(0, &mut scratch)
    }

    fn to_value_at(self, depth: usize, scratch: &mut String) -> Result<Value, JsonbError> {
        Ok(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::String(s) => Value::String(s.to_owned()),
            Node::Number(n) => Value::Number(numeric_number(n, scratch)?),
            Node::Array(c) => {
                if depth >= MAX_DEPTH {
                    return Err(JsonbError::TooDeep);
                }
                let mut items = Vec::with_capacity(c.len().min(1 << 16));
                for e in c.elements() {
                    items.push(e?.to_value_at(depth + 1, scratch)?);
                }
                Value::Array(items)
            }
            Node::Object(c) => {
                if depth >= MAX_DEPTH {
                    return Err(JsonbError::TooDeep);
                }
                let mut map = serde_json::Map::new();
                for p in c.pairs()? {
                    let (k, v) = p?;
                    map.insert(k.to_owned(), v.to_value_at(depth + 1, scratch)?);
                }
                Value::Object(map)
            }
        })
    }

    /// Appends the canonical JSON of the value (`ledger::canonical_json` of [`Node::to_value`],
    /// byte for byte: keys sorted bytewise, no spaces, serde_json's escapes and numbers).
    pub fn write_canonical(&self, out: &mut String) -> Result<(), JsonbError> {
        let mut scratch = String::new();
        self.canonical_at(0, out, &mut scratch)
    }

    fn canonical_at(
        &self,
        depth: usize,
        out: &mut String,
        scratch: &mut String,
    ) -> Result<(), JsonbError> {
        match *self {
            Node::Null => out.push_str("null"),
            Node::Bool(true) => out.push_str("true"),
            Node::Bool(false) => out.push_str("false"),
            Node::String(s) => write_json_string(s, out),
            Node::Number(n) => {
                let number = numeric_number(n, scratch)?;
                let _ = serde_json::to_writer(StrWriter(out), &number);
            }
            Node::Array(c) => {
                if depth >= MAX_DEPTH {
                    return Err(JsonbError::TooDeep);
                }
                out.push('[');
                for (i, e) in c.elements().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    e?.canonical_at(depth + 1, out, scratch)?;
                }
                out.push(']');
            }
            Node::Object(c) => {
                if depth >= MAX_DEPTH {
                    return Err(JsonbError::TooDeep);
                }
                // jsonb orders keys by length first; canonical order is bytewise
                let mut pairs = c.pairs()?.collect::<Result<Vec<_>, _>>()?;
                pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.canonical_at(depth + 1, out, scratch)?;
                }
                out.push('}');
            }
        }
        Ok(())
    }

    /// Checks the whole value reads as the text path reads it: every number within double
    /// precision, nesting within [`MAX_DEPTH`], every offset inside the document.
    pub fn check(&self) -> Result<(), JsonbError> {
        let mut scratch = String::new();
        self.check_at(0, &mut scratch)
    }

    fn check_at(&self, depth: usize, scratch: &mut String) -> Result<(), JsonbError> {
        match *self {
            Node::Null | Node::Bool(_) | Node::String(_) => Ok(()),
            Node::Number(n) => numeric_number(n, scratch).map(|_| ()),
            Node::Array(c) | Node::Object(c) => {
                if depth >= MAX_DEPTH {
                    return Err(JsonbError::TooDeep);
                }
                for e in c.elements() {
                    e?.check_at(depth + 1, scratch)?;
                }
                for p in c.pairs()? {
                    p?.1.check_at(depth + 1, scratch)?;
                }
                Ok(())
            }
        }
    }

    /// The kind's name as errors print it.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }
}

/// A JSON string literal as serde_json writes it.
fn write_json_string(s: &str, out: &mut String) {
    let _ = serde_json::to_writer(StrWriter(out), s);
}

#[cfg(test)]
pub(crate) mod encode;

#[cfg(test)]
mod tests;
