//! Prepared statements without server state: the handle is signed and carries the SQL and,
//! once bound, the parameter rows. Helpers here turn `?` placeholders into DataFusion's `$n`
//! and move parameter rows between Arrow IPC, base64 and DataFusion scalars. Several rows
//! (ADBC's `executemany`, or a bound batch) run the statement once per row.

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

/// The most parameter rows one binding may carry (the signed handle holds them).
pub const MAX_PARAM_ROWS: usize = 1_000;

/// Encodes the parameter rows a client bound (one or more, in one batch).
pub fn encode_params(batches: &[RecordBatch]) -> Result<String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Err(FlightError::InvalidRequest(
            "no parameter rows were bound: bind at least one row".into(),
        ));
    }
    if rows > MAX_PARAM_ROWS {
        return Err(FlightError::InvalidRequest(format!(
            "{rows} parameter rows were bound; at most {MAX_PARAM_ROWS} run in one call: split the batch"
        )));
    }
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| FlightError::Internal("parameter rows missing".into()))?;
    let batch = arrow::compute::concat_batches(&schema, batches)
        .map_err(|e| FlightError::InvalidRequest(format!("parameter batches do not agree: {e}")))?;
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &schema)?;
        w.write(&batch)?;
        w.finish()?;
    }
    Ok(STANDARD.encode(buf))
}

/// Decodes bound parameter rows into scalars, one list per row, cast to the types the plan
/// expects where it knows them (`$1` is the first column).
pub fn decode_params(
    encoded: &str,
    expected: &HashMap<String, Option<DataType>>,
) -> Result<Vec<Vec<ScalarValue>>> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| FlightError::InvalidRequest("malformed parameters".into()))?;
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        if batch.num_columns() != expected.len() {
            return Err(FlightError::InvalidRequest(format!(
                "the statement has {} parameter(s), {} were bound",
                expected.len(),
                batch.num_columns()
            )));
        }
        for r in 0..batch.num_rows() {
            let mut row = Vec::with_capacity(batch.num_columns());
            for (i, col) in batch.columns().iter().enumerate() {
                let value = ScalarValue::try_from_array(col, r)?;
                let name = format!("${}", i + 1);
                let value = match expected.get(&name) {
                    Some(Some(t)) if &value.data_type() != t => value.cast_to(t).map_err(|e| {
                        FlightError::InvalidRequest(format!(
                            "parameter {name} ({}) of row {} cannot be used as {t}: {e}",
                            value.data_type(),
                            r + 1
                        ))
                    })?,
                    _ => value,
                };
                row.push(value);
            }
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Err(FlightError::InvalidRequest(
            "no parameter rows were bound: bind at least one row".into(),
        ));
    }
    Ok(rows)
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
            vec![vec![ScalarValue::Int32(Some(7)), ScalarValue::from("east")]]
        );
        let too_few = HashMap::from([("$1".to_owned(), None)]);
        assert!(decode_params(&enc, &too_few).is_err());
        // several rows (executemany): one list per row, in order
        let two = arrow::compute::concat_batches(&b.schema(), [&b, &b]).unwrap();
        let rows = decode_params(&encode_params(&[two, b.clone()]).unwrap(), &expected).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2][1], ScalarValue::from("east"));
        // none, or more than a call takes, are refused
        assert!(encode_params(&[b.slice(0, 0)]).is_err());
        let many = arrow::compute::concat_batches(
            &b.schema(),
            std::iter::repeat_n(&b, MAX_PARAM_ROWS + 1),
        )
        .unwrap();
        assert!(encode_params(&[many]).is_err());
    }
}
