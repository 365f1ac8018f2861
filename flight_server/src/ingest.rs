//! Flight `DoPut` ingest: Arrow record batches for a contract's dataset land in Postgres as one
//! batch, through `barecount.gateway_ingest` — validated against the contract, invalid rows
//! quarantined, one ledger receipt — for the tenant of the caller's credential, which needs the
//! `ingest` scope.
//!
//! Two ways in:
//! - plain Flight (pyarrow `do_put`): a path descriptor `[dataset]` or `[dataset, key]` (`key`
//!   an idempotency key); the put answers one `PutResult` whose `app_metadata` is JSON:
//!   `{"dataset", "batch_id", "rows", "accepted", "quarantined", "ledger_seq", "already_landed"}`;
//! - Flight SQL bulk ingest (`CommandStatementIngest`, ADBC's `adbc_ingest` in append mode):
//!   the answer is the count of rows accepted.
//!
//! Rows travel to Postgres as JSON (the shape `barecount.ingest` checks against the contract):
//! dates `YYYY-MM-DD`, timestamps RFC 3339, decimals exact numbers, a null column left out.

use crate::auth::Caller;
use crate::error::{FlightError, Result};
use crate::state::State;
use arrow_flight::decode::FlightRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::json;
use tonic::Status;

/// Most bytes of JSON one put may amount to (it is validated and landed as one batch).
pub const MAX_PUT_JSON_BYTES: usize = 256 << 20;

/// What a put landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub dataset: String,
    pub batch_id: i64,
    pub rows: i64,
    pub accepted: i64,
    pub quarantined: i64,
    pub ledger_seq: Option<i64>,
    pub already_landed: bool,
}

impl Landed {
    pub fn metadata(&self) -> Vec<u8> {
        json!({
            "dataset": self.dataset,
            "batch_id": self.batch_id,
            "rows": self.rows,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "ledger_seq": self.ledger_seq,
            "already_landed": self.already_landed,
        })
        .to_string()
        .into_bytes()
    }
}

/// Decodes the put's record batches into one JSON array of row objects, bounded in size.
pub async fn rows_json<S>(dataset: &str, stream: S) -> Result<(String, usize)>
where
    S: Stream<Item = std::result::Result<arrow_flight::FlightData, Status>> + Send + 'static,
{
    let mut batches = FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    );
    let mut buf: Vec<u8> = Vec::new();
    let mut rows = 0usize;
    {
        let mut writer = arrow_json::ArrayWriter::new(&mut buf);
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| {
                FlightError::InvalidRequest(format!(
                    "the put for dataset \"{dataset}\" is not a readable Arrow stream: {e}"
                ))
            })?;
            rows += batch.num_rows();
            writer.write(&batch).map_err(|e| {
                FlightError::InvalidRequest(format!(
                    "the put for dataset \"{dataset}\" has values with no JSON form: {e}"
                ))
            })?;
            if writer.get_ref().len() > MAX_PUT_JSON_BYTES {
                return Err(FlightError::LimitExceeded(format!(
                    "the put for dataset \"{dataset}\" exceeds {MAX_PUT_JSON_BYTES} bytes as JSON; \
                     send the rows in several puts"
                )));
            }
        }
        writer
            .finish()
            .map_err(|e| FlightError::Internal(e.to_string()))?;
    }
    let mut text = String::from_utf8(buf).map_err(|e| FlightError::Internal(e.to_string()))?;
    if text.is_empty() {
        // no batch at all (a schema only): an empty batch, refused below
        text.push_str("[]");
    }
    Ok((text, rows))
}

/// A put of record batches for `dataset`: the caller needs the `ingest` scope (checked before
/// the stream is read); every batch is read, then they land as one batch.
pub async fn put<S>(
    state: &State,
    caller: &Caller,
    dataset: &str,
    key: Option<&str>,
    stream: S,
) -> Result<Landed>
where
    S: Stream<Item = std::result::Result<arrow_flight::FlightData, Status>> + Send + 'static,
{
    caller.require("ingest")?;
    let (rows, count) = rows_json(dataset, stream).await?;
    land(state, caller, dataset, rows, count, key).await
}

/// Lands the rows for the caller's tenant. Not retried: a reply lost after the commit would
/// otherwise land the rows twice (the fingerprint would catch it, but the client must know).
async fn land(
    state: &State,
    caller: &Caller,
    dataset: &str,
    rows: String,
    count: usize,
    key: Option<&str>,
) -> Result<Landed> {
    if count == 0 {
        return Err(FlightError::InvalidRequest(format!(
            "the put for dataset \"{dataset}\" has no rows"
        )));
    }
    let client = state.db.client().await?;
    let row = client
        .query_one(
            "SELECT batch_id, row_count, accepted, quarantined, ledger_seq, already_landed \
               FROM barecount.gateway_ingest($1, $2, $3, $4)",
            &[&caller.subject, &dataset, &rows, &key],
        )
        .await?;
    let landed = Landed {
        dataset: dataset.to_owned(),
        batch_id: row.get(0),
        rows: row.get(1),
        accepted: row.get(2),
        quarantined: row.get(3),
        ledger_seq: row.get(4),
        already_landed: row.get(5),
    };
    tracing::info!(
        dataset,
        batch_id = landed.batch_id,
        rows = landed.rows,
        accepted = landed.accepted,
        quarantined = landed.quarantined,
        already_landed = landed.already_landed,
        "put landed"
    );
    Ok(landed)
}

/// A path descriptor of a put: `[dataset]` or `[dataset, idempotency key]`.
pub fn parse_put_path(path: &[String]) -> Result<(String, Option<String>)> {
    match path {
        [ds] if !ds.is_empty() => Ok((ds.clone(), None)),
        [ds, key] if !ds.is_empty() && !key.is_empty() && key.len() <= 200 => {
            Ok((ds.clone(), Some(key.clone())))
        }
        _ => Err(FlightError::InvalidRequest(
            "a put's path descriptor is [dataset] or [dataset, idempotency key] (a key of 1 to 200 characters)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::array::{
        Date32Array, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use std::sync::Arc;

    #[tokio::test]
    async fn batches_become_json_rows_with_exact_decimals_and_dates() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("order_date", DataType::Date32, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("qty", DataType::Int64, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["A1", "A2"])),
                Arc::new(Date32Array::from(vec![Some(19_723), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12_345), Some(-5)])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![Some(3), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_709_288_100_000_000), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let data = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter(vec![Ok(batch.clone()), Ok(batch)]))
            .map_err(|e| Status::internal(e.to_string()));
        let (text, rows) = rows_json("orders", data).await.unwrap();
        assert_eq!(rows, 4);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 4);
        assert_eq!(
            v[0],
            json!({"order_id": "A1", "order_date": "2024-01-01", "amount": 123.45, "qty": 3, "at": "2024-03-01T10:15:00Z"})
        );
        assert_eq!(v[1], json!({"order_id": "A2", "amount": -0.05}));
        assert!(text.contains("123.45"), "{text}");
    }

    #[tokio::test]
    async fn a_stream_that_is_not_arrow_is_refused() {
        let junk = futures::stream::iter(vec![Ok(arrow_flight::FlightData {
            data_header: bytes::Bytes::from_static(b"not a flatbuffer"),
            ..Default::default()
        })]);
        let e = rows_json("orders", junk).await.unwrap_err();
        assert!(matches!(e, FlightError::InvalidRequest(_)), "{e}");
        assert!(e.to_string().contains("\"orders\""), "{e}");
    }

    #[test]
    fn put_paths() {
        assert_eq!(
            parse_put_path(&["orders".into()]).unwrap(),
            ("orders".into(), None)
        );
        assert_eq!(
            parse_put_path(&["orders".into(), "k1".into()]).unwrap(),
            ("orders".into(), Some("k1".into()))
        );
        assert!(parse_put_path(&[]).is_err());
        assert!(parse_put_path(&["".into()]).is_err());
        assert!(parse_put_path(&["a".into(), "b".into(), "c".into()]).is_err());
        assert!(parse_put_path(&["a".into(), "x".repeat(201)]).is_err());
    }
}
