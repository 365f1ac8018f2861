//! Parquet files as rows for ingest: each record becomes a JSON object of its columns, written
//! as JSON text so decimals keep every digit.
//!
//! Types: integers and floats are JSON numbers (NaN and infinities are refused: JSON has none),
//! decimals exact numbers, strings strings, binary base64, dates `YYYY-MM-DD`, timestamps RFC
//! 3339 in UTC (`2024-03-01T10:15:00Z`, fractions kept), times `HH:MM:SS[.ffffff]`, structs
//! objects, lists arrays and maps objects. A null column is left out of its row, as a CSV load
//! leaves out nothing but a JSON Lines file may: the contract decides whether it is required.

use base64::Engine;
use chrono::{DateTime, NaiveDate, SecondsFormat};
use parquet::data_type::Decimal;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParquetRowsError {
    #[error("not a readable Parquet file: {0}")]
    Format(String),
    #[error("row {row}, column \"{column}\": {problem}")]
    Value {
        row: usize,
        column: String,
        problem: String,
    },
    #[error("the rows take more than {limit} bytes as JSON")]
    TooLarge { limit: usize },
    #[error("cancelled")]
    Cancelled,
}

/// The file's rows as a JSON array text, and their count. `limit` bounds the text (a small,
/// well-compressed file can expand a lot); `interrupt` is called every 4,096 rows and stops
/// the read when it returns false.
pub fn rows_json(
    bytes: Vec<u8>,
    limit: usize,
    mut interrupt: impl FnMut() -> bool,
) -> Result<(String, i64), ParquetRowsError> {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|e| ParquetRowsError::Format(e.to_string()))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| ParquetRowsError::Format(e.to_string()))?;
    let mut out = String::from("[");
    let mut n = 0usize;
    for row in rows {
        if n.is_multiple_of(4096) && !interrupt() {
            return Err(ParquetRowsError::Cancelled);
        }
        let row = row.map_err(|e| ParquetRowsError::Format(e.to_string()))?;
        if n > 0 {
            out.push(',');
        }
        n += 1;
        write_row(&mut out, &row, n)?;
        if out.len() > limit {
            return Err(ParquetRowsError::TooLarge { limit });
        }
    }
    out.push(']');
    Ok((out, n as i64))
}

fn write_row(out: &mut String, row: &Row, n: usize) -> Result<(), ParquetRowsError> {
    write_object(out, row, |column, problem| ParquetRowsError::Value {
        row: n,
        column: column.to_owned(),
        problem,
    })
}

/// A record or struct as a JSON object, its null members left out; `err` names the member
/// whose value has no JSON form.
fn write_object<E>(out: &mut String, row: &Row, err: impl Fn(&str, String) -> E) -> Result<(), E> {
    out.push('{');
    let mut first = true;
    for (name, field) in row.get_column_iter() {
        if matches!(field, Field::Null) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_str(out, name);
        out.push(':');
        write_field(out, field).map_err(|problem| err(name, problem))?;
    }
    out.push('}');
    Ok(())
}

fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

fn float(out: &mut String, x: f64) -> Result<(), String> {
    match serde_json::Number::from_f64(x) {
        Some(n) => {
            out.push_str(&n.to_string());
            Ok(())
        }
        None => Err(format!("{x} has no JSON form")),
    }
}

fn write_field(out: &mut String, f: &Field) -> Result<(), String> {
    match f {
        Field::Null => out.push_str("null"),
        Field::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Field::Byte(v) => out.push_str(&v.to_string()),
        Field::Short(v) => out.push_str(&v.to_string()),
        Field::Int(v) => out.push_str(&v.to_string()),
        Field::Long(v) => out.push_str(&v.to_string()),
        Field::UByte(v) => out.push_str(&v.to_string()),
        Field::UShort(v) => out.push_str(&v.to_string()),
        Field::UInt(v) => out.push_str(&v.to_string()),
        Field::ULong(v) => out.push_str(&v.to_string()),
        Field::Float16(v) => float(out, f64::from(*v))?,
        Field::Float(v) => float(out, f64::from(*v))?,
        Field::Double(v) => float(out, *v)?,
        Field::Decimal(d) => out.push_str(&decimal(d)?),
        Field::Str(s) => write_str(out, s),
        Field::Bytes(b) => write_str(
            out,
            &base64::engine::general_purpose::STANDARD.encode(b.data()),
        ),
        Field::Date(days) => {
            let d = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(*days))))
                .ok_or_else(|| format!("date {days} days from 1970-01-01 is out of range"))?;
            write_str(out, &d.format("%Y-%m-%d").to_string());
        }
        Field::TimeMillis(ms) => write_str(out, &time(i64::from(*ms) * 1000)?),
        Field::TimeMicros(us) => write_str(out, &time(*us)?),
        Field::TimestampMillis(ms) => {
            let t = DateTime::from_timestamp_millis(*ms)
                .ok_or_else(|| format!("timestamp {ms} ms is out of range"))?;
            write_str(out, &t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        Field::TimestampMicros(us) => {
            let t = DateTime::from_timestamp_micros(*us)
                .ok_or_else(|| format!("timestamp {us} µs is out of range"))?;
            write_str(out, &t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        Field::Group(row) => write_object(out, row, |name, problem| format!("{name}: {problem}"))?,
        Field::ListInternal(list) => {
            out.push('[');
            for (i, e) in list.elements().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_field(out, e)?;
            }
            out.push(']');
        }
        Field::MapInternal(map) => {
            out.push('{');
            for (i, (k, v)) in map.entries().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => {
                        let mut s = String::new();
                        write_field(&mut s, other)?;
                        s
                    }
                };
                write_str(out, &key);
                out.push(':');
                write_field(out, v)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// `HH:MM:SS` with a fraction when there is one, from microseconds since midnight.
fn time(us: i64) -> Result<String, String> {
    if !(0..86_400_000_000).contains(&us) {
        return Err(format!("time {us} µs is not within a day"));
    }
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    let hms = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    Ok(if frac == 0 {
        hms
    } else {
        format!("{hms}.{frac:06}")
    })
}

/// A decimal's exact digits: its unscaled big-endian two's complement value and scale.
fn decimal(d: &Decimal) -> Result<String, String> {
    let bytes = d.data();
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes is not supported (at most 16)",
            bytes.len()
        ));
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut v: i128 = if negative { -1 } else { 0 };
    for b in bytes {
        v = (v << 8) | i128::from(*b);
    }
    let scale =
        usize::try_from(d.scale()).map_err(|_| format!("negative decimal scale {}", d.scale()))?;
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    Ok(if scale == 0 {
        format!("{sign}{digits}")
    } else if digits.len() > scale {
        let (i, f) = digits.split_at(digits.len() - scale);
        format!("{sign}{i}.{f}")
    } else {
        format!("{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// A file written with the parquet crate's own low-level writer: every physical type the
    /// orders feeds use, with nulls, a decimal, a date and a timestamp.
    fn sample(amount_bits: &[i64], doubles: &[f64]) -> Vec<u8> {
        let schema = Arc::new(
            parse_message_type(
                "message orders {
                   REQUIRED BYTE_ARRAY order_id (UTF8);
                   OPTIONAL INT32 order_date (DATE);
                   OPTIONAL INT64 amount (DECIMAL(12,2));
                   OPTIONAL INT64 at (TIMESTAMP(MICROS,true));
                   OPTIONAL DOUBLE score;
                 }",
            )
            .unwrap(),
        );
        let n = amount_bits.len();
        let mut buf = Vec::new();
        let mut w = SerializedFileWriter::new(
            &mut buf,
            schema,
            Arc::new(WriterProperties::builder().build()),
        )
        .unwrap();
        let mut rg = w.next_row_group().unwrap();
        let ids: Vec<ByteArray> = (0..n)
            .map(|i| ByteArray::from(format!("A{i}").as_str()))
            .collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&ids, None, None)
            .unwrap();
        c.close().unwrap();
        // order_date: null in the second row
        let mut c = rg.next_column().unwrap().unwrap();
        let defs: Vec<i16> = (0..n).map(|i| i16::from(i != 1)).collect();
        let dates: Vec<i32> = (0..n)
            .filter(|i| *i != 1)
            .map(|i| 19_723 + i as i32)
            .collect();
        c.typed::<Int32Type>()
            .write_batch(&dates, Some(&defs), None)
            .unwrap();
        c.close().unwrap();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<Int64Type>()
            .write_batch(amount_bits, Some(&vec![1; n]), None)
            .unwrap();
        c.close().unwrap();
        let mut c = rg.next_column().unwrap().unwrap();
        let ts: Vec<i64> = (0..n)
            .map(|i| 1_709_288_100_000_000 + i as i64 * 1_500_000)
            .collect();
        c.typed::<Int64Type>()
            .write_batch(&ts, Some(&vec![1; n]), None)
            .unwrap();
        c.close().unwrap();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<DoubleType>()
            .write_batch(doubles, Some(&vec![1; n]), None)
            .unwrap();
        c.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
        buf
    }

    #[test]
    fn rows_keep_types_exact_decimals_and_leave_nulls_out() {
        let (text, n) = rows_json(
            sample(&[12_345, -5, 123_456_789_012], &[0.5, 1.0, -2.25]),
            1 << 20,
            || true,
        )
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            text,
            r#"[{"order_id":"A0","order_date":"2024-01-01","amount":123.45,"at":"2024-03-01T10:15:00Z","score":0.5},"#
                .to_owned()
                + r#"{"order_id":"A1","amount":-0.05,"at":"2024-03-01T10:15:01.500Z","score":1.0},"#
                + r#"{"order_id":"A2","order_date":"2024-01-03","amount":1234567890.12,"at":"2024-03-01T10:15:03Z","score":-2.25}]"#
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
    }

    #[test]
    fn bad_files_values_and_sizes_are_refused_by_name() {
        assert!(matches!(
            rows_json(b"PAR1 not really".to_vec(), 1 << 20, || true),
            Err(ParquetRowsError::Format(_))
        ));
        assert!(matches!(
            rows_json(Vec::new(), 1 << 20, || true),
            Err(ParquetRowsError::Format(_))
        ));
        assert_eq!(
            rows_json(sample(&[1, 2], &[1.0, f64::NAN]), 1 << 20, || true),
            Err(ParquetRowsError::Value {
                row: 2,
                column: "score".into(),
                problem: "NaN has no JSON form".into()
            })
        );
        assert_eq!(
            rows_json(sample(&[1; 200], &[1.0; 200]), 1000, || true),
            Err(ParquetRowsError::TooLarge { limit: 1000 })
        );
        assert_eq!(
            rows_json(sample(&[1], &[1.0]), 1 << 20, || false),
            Err(ParquetRowsError::Cancelled)
        );
    }

    #[test]
    fn decimals_and_times_print_exactly() {
        let d = |v: i64, scale: i32| decimal(&Decimal::from_i64(v, 18, scale)).unwrap();
        assert_eq!(d(5, 3), "0.005");
        assert_eq!(d(-1234, 2), "-12.34");
        assert_eq!(d(i64::MIN, 0), i64::MIN.to_string());
        assert_eq!(d(100, 2), "1.00");
        assert_eq!(time(3_723_000_000).unwrap(), "01:02:03");
        assert_eq!(time(3_723_000_042).unwrap(), "01:02:03.000042");
        assert!(time(86_400_000_000).is_err());
    }
}
