//! Prepared statements without server state: the handle is signed and carries the SQL and,
//! once bound, the parameter row. Helpers here turn `?` placeholders into DataFusion's `$n`
//! and move one parameter row between Arrow IPC, base64 and DataFusion scalars.

use crate::error::{FlightError, Result};
use arrow::datatypes::DataType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use datafusion::scalar::ScalarValue;
use std::collections::HashMap;

/// Rewrites `?` placeholders (the DB-API/ADBC "qmark" style) to `$1`, `$2`, … outside string
/// literals, quoted identifiers and comments. SQL that already uses `$n` is returned unchanged.
pub fn qmark_to_dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                // Doubled quotes inside stay inside: the loop re-enters on the second one.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut prev = ' ';
                for d in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// Encodes the one parameter row a client bound.
pub fn encode_params(batches: &[RecordBatch]) -> Result<String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows != 1 {
        return Err(FlightError::InvalidRequest(format!(
            "a prepared query takes exactly one row of parameters, got {rows}"
        )));
    }
    let batch = batches
        .iter()
        .find(|b| b.num_rows() == 1)
        .ok_or_else(|| FlightError::Internal("parameter row missing".into()))?;
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(STANDARD.encode(buf))
}

/// Decodes bound parameters into scalars, cast to the types the plan expects where it knows
/// them (`$1` is the first column).
pub fn decode_params(
    encoded: &str,
    expected: &HashMap<String, Option<DataType>>,
) -> Result<Vec<ScalarValue>> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| FlightError::InvalidRequest("malformed parameters".into()))?;
    let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let mut out = Vec::new();
    if let Some(batch) = reader.next() {
        let batch = batch?;
        for (i, col) in batch.columns().iter().enumerate() {
            let value = ScalarValue::try_from_array(col, 0)?;
            let name = format!("${}", i + 1);
            let value = match expected.get(&name) {
                Some(Some(t)) if &value.data_type() != t => value.cast_to(t).map_err(|e| {
                    FlightError::InvalidRequest(format!(
                        "parameter {name} ({}) cannot be used as {t}: {e}",
                        value.data_type()
                    ))
                })?,
                _ => value,
            };
            out.push(value);
        }
    }
    if out.len() != expected.len() {
        return Err(FlightError::InvalidRequest(format!(
            "the statement has {} parameter(s), {} were bound",
            expected.len(),
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn rewrites_question_marks_outside_literals() {
        assert_eq!(
            qmark_to_dollar("SELECT * FROM t WHERE a = ? AND b > ?"),
            "SELECT * FROM t WHERE a = $1 AND b > $2"
        );
        assert_eq!(
            qmark_to_dollar("SELECT '?', \"what?\" FROM t -- why?\nWHERE x = ? /* ? */"),
            "SELECT '?', \"what?\" FROM t -- why?\nWHERE x = $1 /* ? */"
        );
        assert_eq!(
            qmark_to_dollar("SELECT 'it''s ?' , ?"),
            "SELECT 'it''s ?' , $1"
        );
        assert_eq!(qmark_to_dollar("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn round_trips_one_row_and_casts() {
        let b = RecordBatch::try_from_iter(vec![
            ("a", Arc::new(Int64Array::from(vec![7])) as _),
            ("b", Arc::new(StringArray::from(vec!["east"])) as _),
        ])
        .unwrap();
        let enc = encode_params(std::slice::from_ref(&b)).unwrap();
        let expected = HashMap::from([
            ("$1".to_owned(), Some(DataType::Int32)),
            ("$2".to_owned(), None),
        ]);
        let v = decode_params(&enc, &expected).unwrap();
        assert_eq!(
            v,
            vec![ScalarValue::Int32(Some(7)), ScalarValue::from("east")]
        );
        let too_few = HashMap::from([("$1".to_owned(), None)]);
        assert!(decode_params(&enc, &too_few).is_err());
        let two = arrow::compute::concat_batches(&b.schema(), [&b, &b]).unwrap();
        assert!(encode_params(&[two]).is_err());
    }
}
