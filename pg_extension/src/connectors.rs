//! Connectors: where an ingest reads its rows — a table, view or foreign table (postgres_fdw),
//! a CSV, JSON Lines or Parquet file under the directory the administrator allows. Each read is
//! fingerprinted (SHA-256 of the rows or the file) and recorded, so the same input again is
//! recognised and not ingested twice.

use crate::errors::{OrRaise, SqlError};
use crate::{privilege, settings, tenant};
use barecount_core::parquet_rows::{self, ParquetRowsError};
use barecount_core::pipeline::{check_relative_path, FileFormat, Source};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Most bytes a file load reads (the batch is held in memory as one ingest).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Most bytes of JSON a compressed (Parquet) file may expand to.
const MAX_ROWS_TEXT_BYTES: usize = 1 << 30;

/// What a connector landed.
#[derive(Debug, Default)]
pub struct Landed {
    pub rows: i64,
    pub accepted: i64,
    pub quarantined: i64,
    pub batch_id: Option<i64>,
    pub ledger_seq: Option<i64>,
    pub skipped: bool,
    pub note: Option<String>,
}

/// Reads the source (as the caller), and unless the same input was landed before, ingests it
/// as one batch under the contract governing `dataset`.
pub fn ingest(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    source: &Source,
    run_id: Option<i64>,
) -> Result<Landed, SqlError> {
    let (name, rows, count) = match source {
        Source::Table(rel) => read_table(client, dataset, rel, true)?,
        Source::File { path, format } => read_file(client, tenant_id, dataset, path, *format)?,
    };
    let fingerprint = hex::encode(Sha256::digest(rows.as_bytes()));
    if let Some(b) = privilege::as_owner(|| seen(client, tenant_id, dataset, &name, &fingerprint))?
    {
        return Ok(Landed {
            rows: count,
            skipped: true,
            batch_id: Some(b),
            note: Some(format!(
                "{name} (sha256 {fingerprint}) was already landed as batch {b}"
            )),
            ..Landed::default()
        });
    }
    let r = client.select(
        "SELECT batch_id, accepted, quarantined, ledger_seq FROM barecount.ingest($1, $2::text::jsonb)",
        Some(1),
        &[dataset.into(), rows.into()],
    )?;
    let r = r.first();
    let landed = Landed {
        rows: count,
        batch_id: r.get::<i64>(1)?,
        accepted: r.get::<i64>(2)?.unwrap_or(0),
        quarantined: r.get::<i64>(3)?.unwrap_or(0),
        ledger_seq: r.get::<i64>(4)?,
        skipped: false,
        note: Some(format!("{name} sha256 {fingerprint}")),
    };
    privilege::as_owner(|| {
        record(
            client,
            tenant_id,
            dataset,
            &name,
            &fingerprint,
            count,
            landed.batch_id,
            run_id,
        )
    })?;
    Ok(landed)
}

/// The batch an input with this fingerprint landed as, if it did. Privileged section.
fn seen(
    client: &SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    source: &str,
    fingerprint: &str,
) -> Result<Option<i64>, SqlError> {
    let t = client.select(
        "SELECT batch_id FROM barecount.connector_reads WHERE tenant_id = $1 AND dataset = $2 AND source = $3 AND fingerprint = $4",
        Some(1),
        &[tenant_id.into(), dataset.into(), source.into(), fingerprint.into()],
    )?;
    Ok(if t.is_empty() {
        None
    } else {
        t.first().get::<i64>(1)?
    })
}

/// Notes what a connector read and the batch it landed as. Privileged section.
#[allow(clippy::too_many_arguments)]
fn record(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    source: &str,
    fingerprint: &str,
    count: i64,
    batch_id: Option<i64>,
    run_id: Option<i64>,
) -> Result<(), SqlError> {
    client.update(
        "INSERT INTO barecount.connector_reads (tenant_id, dataset, source, fingerprint, row_count, batch_id, run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        None,
        &[tenant_id.into(), dataset.into(), source.into(), fingerprint.into(), count.into(),
          batch_id.into(), run_id.into()],
    )?;
    Ok(())
}

/// What `land_sent` answers: batch, rows, accepted, quarantined, the batch's ledger sequence,
/// whether it was landed before.
pub(crate) type Sent = (i64, i64, i64, i64, Option<i64>, bool);

/// Rows a gateway received from a client (Flight `DoPut`) for `tenant_id`, landed once: the
/// same rows again (or the same idempotency key) return the first batch and land nothing.
/// Privileged section (the gateway checked the credential's `ingest` scope).
pub(crate) fn land_sent(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    rows: String,
    idempotency_key: Option<&str>,
) -> Result<Sent, SqlError> {
    // the same key from two clients at once: the second waits for the first, then sees it
    tenant::lock_object(client, "flight_put", tenant_id, dataset)?;
    let fingerprint = match idempotency_key {
        Some(k) => format!("key:{}", hex::encode(Sha256::digest(k.as_bytes()))),
        None => hex::encode(Sha256::digest(rows.as_bytes())),
    };
    let batch = crate::jsonarg::Batch::from_array_text(rows)?.ok_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("rows for dataset \"{dataset}\" must be a JSON array of objects"),
        )
    })?;
    let count = batch.rows.len() as i64;
    if let Some(b) = seen(client, tenant_id, dataset, "flight", &fingerprint)? {
        let t = client.select(
            "SELECT rows_accepted, rows_quarantined, ledger_seq FROM barecount.batches WHERE tenant_id = $1 AND batch_id = $2",
            Some(1),
            &[tenant_id.into(), b.into()],
        )?;
        let (a, q, seq) = if t.is_empty() {
            (0, 0, None)
        } else {
            let r = t.first();
            (
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i64>(2)?.unwrap_or(0),
                r.get::<i64>(3)?,
            )
        };
        return Ok((b, count, a, q, seq, true));
    }
    let (batch_id, accepted, quarantined, seq) =
        crate::ingest::run_for(client, tenant_id, dataset, &batch)?;
    record(
        client,
        tenant_id,
        dataset,
        "flight",
        &fingerprint,
        count,
        Some(batch_id),
        None,
    )?;
    Ok((batch_id, count, accepted, quarantined, Some(seq), false))
}

/// A relation's rows as a JSON array, read with the caller's privileges: (lineage name, rows,
/// count). `ordered` sorts them by content, so the same rows give the same fingerprint however
/// they are stored; `ingest_table` keeps the relation's own order.
pub(crate) fn read_table(
    client: &SpiClient<'_>,
    dataset: &str,
    relation: &str,
    ordered: bool,
) -> Result<(String, String, i64), SqlError> {
    let rel = client
        .select("SELECT to_regclass($1)::text", Some(1), &[relation.into()])?
        .first()
        .get::<String>(1)?
        .ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("staging table \"{relation}\" for dataset \"{dataset}\" does not exist"),
            )
        })?;
    let order = if ordered { " ORDER BY j::text" } else { "" };
    let r = client.select(
        &format!(
            "SELECT coalesce(jsonb_agg(j{order}), '[]')::text, count(*) \
               FROM (SELECT to_jsonb(s) AS j FROM {rel} s) x"
        ),
        Some(1),
        &[],
    )?;
    let r = r.first();
    Ok((
        format!("table:{rel}"),
        r.get::<String>(1)?.unwrap_or_else(|| "[]".into()),
        r.get::<i64>(2)?.unwrap_or(0),
    ))
}

/// The file's path under the load directory; refuses anything outside it (`..`, absolute
/// paths, symbolic links leading out).
fn resolve(path: &str) -> Result<PathBuf, SqlError> {
    let dir = settings::LOAD_DIRECTORY
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "file loads are off: barecount.load_directory is not set",
            )
            .hint("A superuser sets barecount.load_directory to the one directory file connectors may read (ALTER SYSTEM SET barecount.load_directory = '/srv/feeds').")
        })?;
    check_relative_path(path)
        .map_err(|m| SqlError::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, m))?;
    let not_found = |e: std::io::Error| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            format!("file \"{path}\" cannot be read in the load directory: {e}"),
        )
    };
    let base = std::fs::canonicalize(&dir).map_err(|e| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            format!("the load directory \"{dir}\" cannot be read: {e}"),
        )
    })?;
    let full = std::fs::canonicalize(base.join(path)).map_err(not_found)?;
    if !full.starts_with(&base) {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("file \"{path}\" leads outside the load directory"),
        ));
    }
    let meta = std::fs::metadata(&full).map_err(not_found)?;
    if !meta.is_file() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{path}\" is not a regular file"),
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "file \"{path}\" has {} bytes; a file load takes at most {MAX_FILE_BYTES}",
                meta.len()
            ),
        )
        .hint("Split the file, or load it through a staging table."));
    }
    Ok(full)
}

/// A file's rows as a JSON array. CSV cells are typed by the contract's row schema (integer,
/// number, boolean; an empty cell is null); JSON Lines rows are taken as they are.
fn read_file(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    path: &str,
    format: FileFormat,
) -> Result<(String, String, i64), SqlError> {
    let full = resolve(path)?;
    let bytes = std::fs::read(&full).map_err(|e| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("file \"{path}\" cannot be read: {e}"),
        )
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if format == FileFormat::Parquet {
        let (rows, count) = parquet_rows::rows_json(bytes, MAX_ROWS_TEXT_BYTES, || {
            pgrx::check_for_interrupts!();
            true
        })
        .map_err(|e| {
            let code = match e {
                ParquetRowsError::TooLarge { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                ParquetRowsError::Value { .. } => {
                    PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION
                }
                _ => PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT,
            };
            SqlError::new(code, format!("file \"{path}\": {e}"))
        })?;
        return Ok((format!("file:{path}#sha256={digest}"), rows, count));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            format!(
                "file \"{path}\" is not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let rows: Vec<Value> = match format {
        FileFormat::JsonLines => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if i % 4096 == 0 {
                    pgrx::check_for_interrupts!();
                }
                if line.trim().is_empty() {
                    continue;
                }
                out.push(serde_json::from_str(line).map_err(|e| {
                    SqlError::new(
                        PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                        format!("file \"{path}\" line {}: not JSON: {e}", i + 1),
                    )
                })?);
            }
            out
        }
        // read above, without the UTF-8 text step
        FileFormat::Parquet => {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "Parquet files are read as bytes",
            ))
        }
        FileFormat::Csv => {
            let types = column_types(client, tenant_id, dataset)?;
            let mut rdr = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(text.as_bytes());
            let csv_err = |e: csv::Error| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT,
                    format!("file \"{path}\": {e}"),
                )
            };
            let header: Vec<String> = rdr
                .headers()
                .map_err(csv_err)?
                .iter()
                .map(str::to_owned)
                .collect();
            let mut out = Vec::new();
            for (i, rec) in rdr.records().enumerate() {
                if i % 4096 == 0 {
                    pgrx::check_for_interrupts!();
                }
                let rec = rec.map_err(csv_err)?;
                let mut row = Map::new();
                for (h, cell) in header.iter().zip(rec.iter()) {
                    row.insert(h.clone(), typed(cell, types.get(h)));
                }
                out.push(Value::Object(row));
            }
            out
        }
    };
    let count = rows.len() as i64;
    Ok((
        format!("file:{path}#sha256={digest}"),
        Value::Array(rows).to_string(),
        count,
    ))
}

/// The JSON types the contract's row schema gives each column.
fn column_types(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
) -> Result<Map<String, Value>, SqlError> {
    let schema = privilege::as_owner(|| {
        let t = client.select(
            "SELECT d.row_schema FROM barecount.contract_datasets d JOIN barecount.contracts c \
                 ON c.tenant_id = d.tenant_id AND c.contract = d.contract AND c.version = d.contract_version \
              WHERE d.tenant_id = $1 AND d.dataset = $2 ORDER BY c.version_sort DESC LIMIT 1",
            Some(1),
            &[tenant_id.into(), dataset.into()],
        )?;
        Ok(if t.is_empty() {
            None
        } else {
            t.first().get::<pgrx::JsonB>(1)?.map(|j| j.0)
        })
    })?;
    let Some(schema) = schema else {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("no registered contract declares dataset \"{dataset}\""),
        ));
    };
    Ok(schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter_map(|(k, v)| v.get("type").map(|t| (k.clone(), t.clone())))
                .collect()
        })
        .unwrap_or_default())
}

/// A CSV cell as the JSON value its column's type asks for; a cell that does not parse stays a
/// string, so the contract quarantines it with a clear error.
fn typed(cell: &str, ty: Option<&Value>) -> Value {
    let has = |t: &str| match ty {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(t)),
        _ => false,
    };
    if cell.is_empty() && !has("string") {
        return Value::Null;
    }
    if has("integer") || has("number") {
        if let Ok(Value::Number(n)) = serde_json::from_str::<Value>(cell.trim()) {
            return Value::Number(n);
        }
    }
    if has("boolean") {
        match cell.trim() {
            "true" | "t" | "TRUE" | "True" => return Value::Bool(true),
            "false" | "f" | "FALSE" | "False" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(cell.to_owned())
}

/// Ingest a CSV, JSON Lines or Parquet file from the load directory (a name relative to
/// `barecount.load_directory`), once: the same file content again is recognised and skipped.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn ingest_file(
    dataset: &str,
    path: &str,
    format: &str,
) -> TableIterator<
    'static,
    (
        name!(batch_id, Option<i64>),
        name!(accepted, i64),
        name!(quarantined, i64),
        name!(ledger_seq, Option<i64>),
        name!(already_landed, bool),
    ),
> {
    let format = FileFormat::parse(format)
        .ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("file format \"{format}\" is not csv, jsonl or parquet"),
            )
        })
        .or_raise();
    let l = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        ingest(
            client,
            &tenant_id,
            dataset,
            &Source::File {
                path: path.to_owned(),
                format,
            },
            None,
        )
    })
    .or_raise();
    TableIterator::once((
        l.batch_id,
        l.accepted,
        l.quarantined,
        l.ledger_seq,
        l.skipped,
    ))
}
