//! Decoding Postgres' binary COPY format straight into Arrow builders, one chunk of the
//! stream at a time: memory stays at one batch plus one partial tuple.
//!
//! Format (PostgreSQL docs, "COPY … BINARY"): an 11-byte signature, a 32-bit flags field and a
//! header extension, then tuples of a 16-bit field count followed by, per field, a 32-bit length
//! (-1 for NULL) and the value in the type's binary send format; a field count of -1 ends it.

use crate::types::ColumnKind;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{i256, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (Arrow) to 2000-01-01 (Postgres).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("not a binary COPY stream: {0}")]
    Format(String),
    #[error("column {column}: {message}")]
    Value { column: usize, message: String },
}

enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Utf8(StringBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder, i8),
    Decimal256(Decimal256Builder, i8),
}

impl Builder {
    fn new(kind: &ColumnKind) -> Result<Self, CopyError> {
        Ok(match kind {
            ColumnKind::Bool => Builder::Bool(BooleanBuilder::new()),
            ColumnKind::Int16 => Builder::I16(Int16Builder::new()),
            ColumnKind::Int32 => Builder::I32(Int32Builder::new()),
            ColumnKind::Int64 => Builder::I64(Int64Builder::new()),
            ColumnKind::Float32 => Builder::F32(Float32Builder::new()),
            ColumnKind::Float64 | ColumnKind::NumericFloat => Builder::F64(Float64Builder::new()),
            ColumnKind::Text | ColumnKind::OtherAsText | ColumnKind::NumericText => {
                Builder::Utf8(StringBuilder::new())
            }
            ColumnKind::Date => Builder::Date(Date32Builder::new()),
            ColumnKind::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::new()),
            ColumnKind::TimestampTz => {
                Builder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            ColumnKind::Decimal { precision, scale } => Builder::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| CopyError::Format(e.to_string()))?,
                *scale,
            ),
            ColumnKind::Decimal256 { precision, scale } => Builder::Decimal256(
                Decimal256Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| CopyError::Format(e.to_string()))?,
                *scale,
            ),
        })
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Decimal(b, _) => b.append_null(),
            Builder::Decimal256(b, _) => b.append_null(),
        }
    }

    fn append(&mut self, v: &[u8]) -> Result<(), String> {
        fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
            v.try_into()
                .map_err(|_| format!("expected {N} bytes, got {}", v.len()))
        }
        match self {
            Builder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Builder::I16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Builder::I32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Builder::I64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Builder::F32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Builder::F64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Builder::Utf8(b) => {
                b.append_value(std::str::from_utf8(v).map_err(|e| format!("not UTF-8: {e}"))?)
            }
            Builder::Date(b) => {
                let d = i32::from_be_bytes(fixed(v)?);
                b.append_value(
                    d.checked_add(PG_EPOCH_DAYS)
                        .ok_or("date out of Arrow's range")?,
                )
            }
            Builder::Ts(b) => {
                let t = i64::from_be_bytes(fixed(v)?);
                b.append_value(
                    t.checked_add(PG_EPOCH_MICROS)
                        .ok_or("timestamp out of Arrow's range (infinity?)")?,
                )
            }
            Builder::Decimal(b, scale) => b.append_value(numeric_to_i128(v, *scale)?),
            Builder::Decimal256(b, scale) => b.append_value(numeric_scaled::<i256>(v, *scale)?),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Decimal(b, _) => Arc::new(b.finish()),
            Builder::Decimal256(b, _) => Arc::new(b.finish()),
        }
    }
}

/// The integer types a scaled numeric is summed in.
pub trait Scaled: Copy {
    const ZERO: Self;
    fn from_i16(d: i16) -> Self;
    fn ten_pow(e: u32) -> Option<Self>;
    fn add(self, o: Self) -> Option<Self>;
    fn mul(self, o: Self) -> Option<Self>;
    fn negate(self) -> Self;
}

impl Scaled for i128 {
    const ZERO: Self = 0;
    fn from_i16(d: i16) -> Self {
        i128::from(d)
    }
    fn ten_pow(e: u32) -> Option<Self> {
        10i128.checked_pow(e)
    }
    fn add(self, o: Self) -> Option<Self> {
        self.checked_add(o)
    }
    fn mul(self, o: Self) -> Option<Self> {
        self.checked_mul(o)
    }
    fn negate(self) -> Self {
        -self
    }
}

impl Scaled for i256 {
    const ZERO: Self = i256::ZERO;
    fn from_i16(d: i16) -> Self {
        i256::from_i128(i128::from(d))
    }
    fn ten_pow(e: u32) -> Option<Self> {
        i256::from_i128(10).checked_pow(e)
    }
    fn add(self, o: Self) -> Option<Self> {
        self.checked_add(o)
    }
    fn mul(self, o: Self) -> Option<Self> {
        self.checked_mul(o)
    }
    fn negate(self) -> Self {
        self.wrapping_neg()
    }
}

/// Postgres' binary numeric (base-10000 digits) as an i128 at `scale` (see [`numeric_scaled`]).
pub fn numeric_to_i128(v: &[u8], scale: i8) -> Result<i128, String> {
    numeric_scaled::<i128>(v, scale)
}

/// Postgres' binary numeric (base-10000 digits) as an integer at `scale`, rounding half away
/// from zero below it. Refuses NaN, infinities and values that overflow.
pub fn numeric_scaled<T: Scaled>(v: &[u8], scale: i8) -> Result<T, String> {
    let word = |i: usize| -> Result<i16, String> {
        v.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_owned())
    };
    let ndigits = usize::try_from(word(0)?).map_err(|_| "bad numeric digit count")?;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN has no decimal value".into()),
        _ => return Err("infinity has no decimal value".into()),
    }
    // value = Σ digit_i × 10000^(weight − i); scaled = value × 10^scale, summed word by word
    // at its own power of ten, so a value that fits the column never overflows on the way
    // (numeric(38, 10) has more base-10000 words than an i128 holds before scaling).
    let overflow = || "numeric overflows the column's precision".to_owned();
    let mut scaled = T::ZERO;
    let mut first_dropped: Option<i16> = None;
    for i in 0..ndigits {
        let d = word(4 + i)?;
        let e = 4 * (weight - i as i32) + i32::from(scale);
        if e >= 0 {
            if d != 0 {
                let f = T::ten_pow(e as u32).ok_or_else(overflow)?;
                let part = T::from_i16(d).mul(f).ok_or_else(overflow)?;
                scaled = scaled.add(part).ok_or_else(overflow)?;
            }
        } else if e > -4 {
            // the word straddles the scale: its high digits count, the next one rounds
            let f = 10i16.pow((-e) as u32);
            scaled = scaled.add(T::from_i16(d / f)).ok_or_else(overflow)?;
            first_dropped.get_or_insert((d % f) / (f / 10));
        } else {
            first_dropped.get_or_insert(d / 1000);
        }
    }
    if first_dropped.is_some_and(|r| r >= 5) {
        scaled = scaled.add(T::from_i16(1)).ok_or_else(overflow)?;
    }
    Ok(if sign == 0x4000 {
        scaled.negate()
    } else {
        scaled
    })
}

/// Incremental decoder: feed it the COPY stream's chunks, take finished batches.
pub struct CopyDecoder {
    schema: SchemaRef,
    builders: Vec<Builder>,
    buf: Vec<u8>,
    header_done: bool,
    finished: bool,
    rows: usize,
    batch_rows: usize,
}

impl CopyDecoder {
    pub fn new(
        schema: SchemaRef,
        kinds: &[ColumnKind],
        batch_rows: usize,
    ) -> Result<Self, CopyError> {
        Ok(CopyDecoder {
            schema,
            builders: kinds.iter().map(Builder::new).collect::<Result<_, _>>()?,
            buf: Vec::new(),
            header_done: false,
            finished: false,
            rows: 0,
            batch_rows,
        })
    }

    /// Decodes what `chunk` completes; returns the batches that filled up.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>, CopyError> {
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        let mut out = Vec::new();
        if !self.header_done {
            if self.buf.len() < 19 {
                return Ok(out);
            }
            if &self.buf[..11] != SIGNATURE {
                return Err(CopyError::Format("bad signature".into()));
            }
            let ext = u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]])
                as usize;
            if self.buf.len() < 19 + ext {
                return Ok(out);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        let ncols = self.builders.len();
        while !self.finished {
            let Some(count) = self.buf.get(pos..pos + 2) else {
                break;
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if count as usize != ncols {
                return Err(CopyError::Format(format!(
                    "tuple has {count} fields, expected {ncols}"
                )));
            }
            // Is the whole tuple here?
            let mut p = pos + 2;
            let mut complete = true;
            for _ in 0..ncols {
                let Some(len) = self.buf.get(p..p + 4) else {
                    complete = false;
                    break;
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                p += 4 + usize::try_from(len).unwrap_or(0);
                if p > self.buf.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut p = pos + 2;
            for (column, b) in self.builders.iter_mut().enumerate() {
                let l = &self.buf[p..p + 4];
                let len = i32::from_be_bytes([l[0], l[1], l[2], l[3]]);
                p += 4;
                if len < 0 {
                    b.append_null();
                } else {
                    let end = p + len as usize;
                    b.append(&self.buf[p..end])
                        .map_err(|message| CopyError::Value { column, message })?;
                    p = end;
                }
            }
            pos = p;
            self.rows += 1;
            if self.rows == self.batch_rows {
                out.push(self.flush()?);
            }
        }
        self.buf.drain(..pos);
        Ok(out)
    }

    fn flush(&mut self) -> Result<RecordBatch, CopyError> {
        self.rows = 0;
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| CopyError::Format(e.to_string()))
    }

    /// The last, partial batch; refuses a stream that ended early.
    pub fn finish(mut self) -> Result<Option<RecordBatch>, CopyError> {
        if !self.finished || !self.buf.is_empty() {
            return Err(CopyError::Format("stream ended inside the data".into()));
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Decimal128Type, Field, Int64Type, Schema};

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_become_exact_decimals() {
        assert_eq!(
            numeric_to_i128(&numeric(2, 0, 0, 2, &[12, 3400]), 2),
            Ok(1234)
        );
        assert_eq!(
            numeric_to_i128(&numeric(1, -1, 0x4000, 1, &[5000]), 2),
            Ok(-50)
        );
        assert_eq!(
            numeric_to_i128(&numeric(1, 1, 0, 0, &[7]), 3),
            Ok(70_000_000)
        );
        assert_eq!(numeric_to_i128(&numeric(0, 0, 0, 0, &[]), 2), Ok(0));
        // 1.235 at scale 2 rounds half away from zero.
        assert_eq!(
            numeric_to_i128(&numeric(2, 0, 0, 3, &[1, 2350]), 2),
            Ok(124)
        );
        assert!(numeric_to_i128(&numeric(0, 0, 0xC000, 0, &[]), 2).is_err());
        assert!(numeric_to_i128(&numeric(1, 20, 0, 0, &[1]), 2).is_err());
        // numeric(38, 10): 28 integer digits and 10 fractional ones, more base-10000 words
        // than an i128 holds unscaled: 1234567890123456789012345678.1234567891
        let big = numeric(
            10,
            6,
            0,
            10,
            &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 1234, 5678, 9100],
        );
        assert_eq!(
            numeric_to_i128(&big, 10),
            Ok(12_345_678_901_234_567_890_123_456_781_234_567_891)
        );
        // numeric(38, 2) at its largest: 36 nines before the point, two after
        let mut words = [9999i16; 10];
        words[9] = 9900;
        let nines = numeric(10, 8, 0, 2, &words);
        assert_eq!(numeric_to_i128(&nines, 2), Ok(10i128.pow(38) - 1));
        // numeric(74, 2) at its largest fits Decimal256 exactly, and overflows i128
        let mut words = [9999i16; 19];
        words[18] = 9900;
        let wide = numeric(19, 17, 0x4000, 2, &words);
        let expected = i256::from_i128(10).checked_pow(74).unwrap() - i256::from_i128(1);
        assert_eq!(numeric_scaled::<i256>(&wide, 2), Ok(-expected));
        assert!(numeric_to_i128(&wide, 2).is_err());
        // rounding across a word boundary, both signs
        assert_eq!(numeric_to_i128(&numeric(2, 0, 0, 4, &[1, 2500]), 1), Ok(13));
        assert_eq!(
            numeric_to_i128(&numeric(2, 0, 0x4000, 4, &[1, 2500]), 1),
            Ok(-13)
        );
        assert_eq!(
            numeric_to_i128(&numeric(3, 0, 0, 8, &[1, 0, 5000]), 4),
            Ok(10_001)
        );
        assert_eq!(
            numeric_to_i128(&numeric(3, 0, 0, 8, &[1, 0, 4999]), 4),
            Ok(10_000)
        );
    }

    fn stream(rows: &[(Option<i64>, Option<&str>)]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        for (a, b) in rows {
            v.extend_from_slice(&2i16.to_be_bytes());
            match a {
                Some(a) => {
                    v.extend_from_slice(&8i32.to_be_bytes());
                    v.extend_from_slice(&a.to_be_bytes());
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            match b {
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b.as_bytes());
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    #[test]
    fn decodes_in_any_chunking() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let rows: Vec<(Option<i64>, Option<&str>)> = (0..10)
            .map(|i| (if i % 3 == 0 { None } else { Some(i) }, Some("héllo")))
            .collect();
        let bytes = stream(&rows);
        for chunk in [1, 3, 7, bytes.len()] {
            let mut d = CopyDecoder::new(schema.clone(), &[ColumnKind::Int64, ColumnKind::Text], 4)
                .unwrap();
            let mut batches = Vec::new();
            for c in bytes.chunks(chunk) {
                batches.extend(d.feed(c).unwrap());
            }
            batches.extend(d.finish().unwrap());
            assert_eq!(
                batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
                [4, 4, 2]
            );
            let a = batches[0].column(0).as_primitive::<Int64Type>();
            assert!(a.is_null(0));
            assert_eq!(a.value(1), 1);
            assert_eq!(batches[2].column(1).as_string::<i32>().value(1), "héllo");
        }
        let mut d = CopyDecoder::new(schema, &[ColumnKind::Int64, ColumnKind::Text], 4).unwrap();
        d.feed(&bytes[..bytes.len() - 5]).unwrap();
        assert!(d.finish().is_err(), "a truncated stream is refused");
    }

    #[test]
    fn decimals_decode_in_batches() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::Decimal128(10, 2),
            true,
        )]));
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&[0; 8]);
        let n = numeric(2, 0, 0, 2, &[12, 3400]);
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(&(n.len() as i32).to_be_bytes());
        v.extend_from_slice(&n);
        v.extend_from_slice(&(-1i16).to_be_bytes());
        let mut d = CopyDecoder::new(
            schema,
            &[ColumnKind::Decimal {
                precision: 10,
                scale: 2,
            }],
            10,
        )
        .unwrap();
        assert!(d.feed(&v).unwrap().is_empty());
        let b = d.finish().unwrap().unwrap();
        assert_eq!(b.column(0).as_primitive::<Decimal128Type>().value(0), 1234);
    }
}
