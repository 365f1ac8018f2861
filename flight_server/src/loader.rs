//! Reading a published version out of Postgres with binary COPY, in parallel when it is large:
//! the table is split into block (ctid) ranges, each read over a connection of its own and
//! decoded on a thread of its own, and the parts are put back together in order.

use crate::catalog::{VersionInfo, TENANT_COLUMN};
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::pgcopy::{CopyDecoder, CopyError};
use crate::types::ColumnKind;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use barecount_core::ident::{quote_ident, quote_literal, quote_qualified};
use futures::StreamExt;
use tokio::sync::mpsc;

/// Bytes of COPY data handed to a decoder at a time.
pub const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Rows per Arrow batch; the last batch of a version holds fewer.
pub const BATCH_ROWS: usize = 65_536;

/// Where a load writes its batches, in table order, on a blocking thread. The loader knows
/// COPY and Postgres; whoever hands it a sink (the store's cache) knows neither.
pub trait Sink: Send + 'static {
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
}

/// When a load reads block ranges in parallel rather than through one COPY.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Tables smaller than this are read with one COPY.
    pub parallel_min_bytes: u64,
    /// Tables larger than this stream through one decoder rather than be held whole.
    pub parallel_max_bytes: u64,
}

/// What a load did: its sink back, the batches written, whether it read in parallel.
pub struct Loaded<S> {
    pub sink: S,
    pub batches: usize,
    pub parallel: bool,
}

/// Reads a version out of Postgres into `sink`: in parallel block ranges when the plan says
/// so (the parts are put back in table order before they are written), else one COPY streamed
/// through one decoder.
pub async fn load<S: Sink>(
    db: &Db,
    v: &VersionInfo,
    schema: SchemaRef,
    plan: Plan,
    sink: S,
) -> Result<Loaded<S>> {
    match parallel_ranges(db, v, plan.parallel_min_bytes, plan.parallel_max_bytes).await? {
        Some(ranges) => {
            let batches = read_parallel(db, v, schema, ranges).await?;
            let mut sink = sink;
            tokio::task::spawn_blocking(move || -> Result<Loaded<S>> {
                let n = batches.len();
                for b in batches {
                    sink.write(b)?;
                }
                Ok(Loaded {
                    sink,
                    batches: n,
                    parallel: true,
                })
            })
            .await
            .map_err(|e| FlightError::Internal(format!("cache writer: {e}")))?
        }
        None => {
            let shared = std::sync::Arc::new(std::sync::Mutex::new(sink));
            let writer = shared.clone();
            let n = copy_into(db, v, copy_sql(v, None), schema, move |b| {
                writer.lock().unwrap_or_else(|p| p.into_inner()).write(b)
            })
            .await?;
            let sink = std::sync::Arc::try_unwrap(shared)
                .map_err(|_| FlightError::Internal("load sink still shared".into()))?
                .into_inner()
                .unwrap_or_else(|p| p.into_inner());
            Ok(Loaded {
                sink,
                batches: n,
                parallel: false,
            })
        }
    }
}

pub fn kinds(v: &VersionInfo) -> Vec<ColumnKind> {
    v.columns.iter().map(ColumnKind::of).collect()
}

/// The COPY statement for a version's rows, optionally within a block range.
pub fn copy_sql(v: &VersionInfo, blocks: Option<(i64, Option<i64>)>) -> String {
    let exprs: Vec<String> = v
        .columns
        .iter()
        .zip(kinds(v))
        .map(|(c, k)| k.copy_expr(&quote_ident(&c.name)))
        .collect();
    let select = if exprs.is_empty() {
        "NULL".to_owned()
    } else {
        exprs.join(", ")
    };
    let range = match blocks {
        None => String::new(),
        Some((from, None)) => format!(" AND ctid >= '({from},0)'::tid"),
        Some((from, Some(to))) => {
            format!(" AND ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid")
        }
    };
    format!(
        "COPY (SELECT {select} FROM {} WHERE {} = {}{range}) TO STDOUT (FORMAT binary)",
        quote_qualified(&v.relation),
        quote_ident(TENANT_COLUMN),
        quote_literal(&v.tenant)
    )
}

/// Names the column a decoding error is about.
pub fn conversion_error(v: &VersionInfo, e: CopyError) -> FlightError {
    match e {
        CopyError::Value { column, message } => {
            let (name, pg_type) = v
                .columns
                .get(column)
                .map(|c| (c.name.clone(), c.pg_type.clone()))
                .unwrap_or_default();
            FlightError::Conversion {
                dataset: v.dataset.clone(),
                column: name,
                pg_type,
                message,
            }
        }
        other => FlightError::Internal(other.to_string()),
    }
}

/// Block ranges to read in parallel, or `None` when one COPY is the better plan (tables
/// under `min_bytes`, one core, or a table larger than `max_bytes`, which must stream through
/// one decoder rather than be held whole).
pub async fn parallel_ranges(
    db: &Db,
    v: &VersionInfo,
    min_bytes: u64,
    max_bytes: u64,
) -> Result<Option<Vec<(i64, Option<i64>)>>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4) as i64;
    if workers < 2 {
        return Ok(None);
    }
    let relation = quote_qualified(&v.relation);
    let row = db
        .run(|c| {
            let relation = relation.clone();
            async move {
                c.query_one(
                    "SELECT pg_relation_size($1::text::regclass), current_setting('block_size')::int8",
                    &[&relation],
                )
                .await
            }
        })
        .await?;
    let (size, block): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if (size as u64) < min_bytes || size as u64 > max_bytes || block <= 0 {
        return Ok(None);
    }
    let blocks = size / block;
    let step = (blocks + workers - 1) / workers;
    let ranges = (0..workers)
        .map(|i| {
            let from = i * step;
            let to = if i == workers - 1 {
                None
            } else {
                Some((i + 1) * step)
            };
            (from, to)
        })
        .collect();
    Ok(Some(ranges))
}

/// Reads one COPY over a connection of its own, decoding on a blocking thread; hands each
/// decoded batch to `sink` (on that thread) and returns how many there were.
pub async fn copy_into<F>(
    db: &Db,
    v: &VersionInfo,
    sql: String,
    schema: SchemaRef,
    mut sink: F,
) -> Result<usize>
where
    F: FnMut(RecordBatch) -> Result<()> + Send + 'static,
{
    let kinds = kinds(v);
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(16);
    let version = v.clone();
    let decoder = tokio::task::spawn_blocking(move || -> Result<usize> {
        let mut d = CopyDecoder::new(schema, &kinds, BATCH_ROWS)
            .map_err(|e| FlightError::Internal(e.to_string()))?;
        let mut n = 0;
        while let Some(chunk) = rx.blocking_recv() {
            for b in d.feed(&chunk).map_err(|e| conversion_error(&version, e))? {
                sink(b)?;
                n += 1;
            }
        }
        if let Some(b) = d.finish().map_err(|e| conversion_error(&version, e))? {
            sink(b)?;
            n += 1;
        }
        Ok(n)
    });
    // A connection of its own, so a long load does not hold up catalog reads.
    let client = db.dedicated().await?;
    let copy = async {
        let stream = client.copy_out(sql.as_str()).await?;
        futures::pin_mut!(stream);
        // Postgres sends one CopyData message per row: gather them into large chunks so the
        // decoder thread is handed megabytes, not rows.
        let mut pending = bytes::BytesMut::with_capacity(COPY_CHUNK_BYTES);
        while let Some(chunk) = stream.next().await {
            pending.extend_from_slice(&chunk?);
            if pending.len() >= COPY_CHUNK_BYTES && tx.send(pending.split().freeze()).await.is_err()
            {
                break; // the decoder failed; its error is reported below
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(pending.freeze()).await;
        }
        Ok::<(), FlightError>(())
    }
    .await;
    drop(tx);
    let decoded = decoder
        .await
        .map_err(|e| FlightError::Internal(format!("decoder: {e}")))?;
    match (copy, decoded) {
        (Ok(()), Ok(n)) => Ok(n),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Reads the ranges concurrently and returns every batch, in table order.
pub async fn read_parallel(
    db: &Db,
    v: &VersionInfo,
    schema: SchemaRef,
    ranges: Vec<(i64, Option<i64>)>,
) -> Result<Vec<RecordBatch>> {
    let parts = ranges.into_iter().map(|r| {
        let schema = schema.clone();
        async move {
            let (tx, rx) = std::sync::mpsc::channel();
            copy_into(db, v, copy_sql(v, Some(r)), schema, move |b| {
                tx.send(b)
                    .map_err(|_| FlightError::Internal("part collector gone".into()))
            })
            .await?;
            Ok::<Vec<RecordBatch>, FlightError>(rx.try_iter().collect())
        }
    });
    let parts = futures::future::try_join_all(parts).await?;
    Ok(parts.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PgColumn;

    #[test]
    fn copy_statements_quote_and_range() {
        let v = VersionInfo {
            tenant: "o'brien".into(),
            dataset: "d".into(),
            version: 1,
            relation: "published.d__v1".into(),
            columns: vec![
                PgColumn {
                    name: "a".into(),
                    pg_type: "jsonb".into(),
                    nullable: true,
                    numeric_precision: None,
                    numeric_scale: None,
                },
                PgColumn {
                    name: "b".into(),
                    pg_type: "bigint".into(),
                    nullable: true,
                    numeric_precision: None,
                    numeric_scale: None,
                },
            ],
            row_count: 1,
            content_hash: "h".into(),
            ledger_seq: 1,
            ledger_hash: "x".into(),
            is_latest: true,
        };
        assert_eq!(
            copy_sql(&v, Some((10, Some(20)))),
            "COPY (SELECT \"a\"::text, \"b\" FROM \"published\".\"d__v1\" WHERE \"tenant_id\" = 'o''brien' \
             AND ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid) TO STDOUT (FORMAT binary)"
        );
        assert!(copy_sql(&v, None).ends_with("'o''brien') TO STDOUT (FORMAT binary)"));
    }
}
