//! Exports: a dataset version or a query result written as Parquet, CSV or Arrow IPC into the
//! export directory (`<export dir>/<tenant>/<name>.<ext>`), with a ledger receipt. Files are
//! written under a temporary name and renamed when complete, so a failed export leaves
//! nothing; a name that exists is refused, never overwritten.

use crate::error::{FlightError, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The action type of an export.
pub const ACTION: &str = "export";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    Arrow,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
        }
    }

    pub fn name(self) -> &'static str {
        self.extension()
    }
}

/// What a client asks to export: a dataset (latest or a version) or a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub version: Option<i32>,
    #[serde(default)]
    pub query: Option<String>,
    pub format: Format,
    /// File name without extension; made from the source and time when absent.
    #[serde(default)]
    pub name: Option<String>,
}

impl ExportRequest {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let r: ExportRequest = serde_json::from_slice(body).map_err(|e| {
            FlightError::InvalidRequest(format!(
                "export takes JSON {{\"dataset\"|\"query\", \"version\"?, \"format\": \"parquet\"|\"csv\"|\"arrow\", \"name\"?}}: {e}"
            ))
        })?;
        match (&r.dataset, &r.query) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(FlightError::InvalidRequest(
                    "an export names exactly one of dataset or query".into(),
                ))
            }
        }
        if r.query.is_some() && r.version.is_some() {
            return Err(FlightError::InvalidRequest(
                "version applies to a dataset export, not a query".into(),
            ));
        }
        if let Some(n) = &r.name {
            check_name(n)?;
        }
        Ok(r)
    }
}

/// File names are plain: letters, digits, `_`, `-`, `.`, not starting with a dot.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FlightError::InvalidRequest(format!(
            "export name \"{name}\" must be letters, digits, '_', '-' or '.', not starting with '.'"
        )))
    }
}

/// Progress and result messages of the export action (JSON, one per action result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportMessage {
    Progress { rows: u64, total_rows: Option<u64> },
    Done(ExportReceipt),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportReceipt {
    pub path: String,
    pub format: Format,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file's bytes.
    pub content_hash: String,
    /// The exported version's content hash (datasets only).
    pub source_content_hash: Option<String>,
    pub source: String,
    pub ledger_seq: i64,
    pub ledger_hash: String,
}

/// CSV as Postgres's `COPY … (FORMAT csv)` writes it (RFC 4180): a header row; a NULL is an
/// empty unquoted field, an empty string is `""`, so the two stay apart; fields holding a comma,
/// a quote or a line break are quoted with quotes doubled; values as Arrow displays them (dates
/// `2024-01-31`, timestamps ISO 8601, decimals exact).
pub struct CsvWriter {
    out: std::io::BufWriter<std::fs::File>,
}

fn csv_field(out: &mut impl Write, value: Option<&str>) -> std::io::Result<()> {
    match value {
        None => Ok(()),
        Some(v) if v.is_empty() || v.contains([',', '"', '\r', '\n']) => {
            write!(out, "\"{}\"", v.replace('"', "\"\""))
        }
        Some(v) => out.write_all(v.as_bytes()),
    }
}

impl CsvWriter {
    fn new(mut out: std::io::BufWriter<std::fs::File>, schema: &SchemaRef) -> Result<Self> {
        let io = |e: std::io::Error| FlightError::Internal(format!("cannot write CSV: {e}"));
        for (i, f) in schema.fields().iter().enumerate() {
            if i > 0 {
                out.write_all(b",").map_err(io)?;
            }
            csv_field(&mut out, Some(f.name())).map_err(io)?;
        }
        out.write_all(b"\n").map_err(io)?;
        Ok(CsvWriter { out })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let io = |e: std::io::Error| FlightError::Internal(format!("cannot write CSV: {e}"));
        let options = arrow::util::display::FormatOptions::default();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut cell = String::new();
        for row in 0..batch.num_rows() {
            for (i, (col, fmt)) in batch.columns().iter().zip(&formatters).enumerate() {
                if i > 0 {
                    self.out.write_all(b",").map_err(io)?;
                }
                if col.is_null(row) {
                    csv_field(&mut self.out, None).map_err(io)?;
                } else {
                    cell.clear();
                    use std::fmt::Write as _;
                    write!(cell, "{}", fmt.value(row)).map_err(|e| {
                        FlightError::Internal(format!("cannot format a value: {e}"))
                    })?;
                    csv_field(&mut self.out, Some(&cell)).map_err(io)?;
                }
            }
            self.out.write_all(b"\n").map_err(io)?;
        }
        Ok(())
    }
}

/// Writes batches to a file in one format; blocking.
pub struct FileSink {
    tmp: PathBuf,
    writer: Writer,
    pub rows: u64,
}

enum Writer {
    Parquet(parquet::arrow::ArrowWriter<std::fs::File>),
    Csv(CsvWriter),
    Arrow(arrow::ipc::writer::FileWriter<std::io::BufWriter<std::fs::File>>),
}

use datafusion::parquet;

impl FileSink {
    pub fn create(tmp: &Path, format: Format, schema: &SchemaRef) -> Result<Self> {
        let file = std::fs::File::create(tmp)
            .map_err(|e| FlightError::Internal(format!("cannot create {}: {e}", tmp.display())))?;
        let writer = match format {
            Format::Parquet => Writer::Parquet(
                parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
                    .map_err(|e| FlightError::Internal(e.to_string()))?,
            ),
            Format::Csv => Writer::Csv(CsvWriter::new(std::io::BufWriter::new(file), schema)?),
            Format::Arrow => Writer::Arrow(arrow::ipc::writer::FileWriter::try_new(
                std::io::BufWriter::new(file),
                schema,
            )?),
        };
        Ok(FileSink {
            tmp: tmp.to_owned(),
            writer,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.writer {
            Writer::Parquet(w) => w
                .write(batch)
                .map_err(|e| FlightError::Internal(e.to_string()))?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Arrow(w) => w.write(batch)?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file and syncs it; returns its path, size and SHA-256.
    pub fn finish(self) -> Result<(PathBuf, u64, String)> {
        let internal = |e: &dyn std::fmt::Display| FlightError::Internal(e.to_string());
        let file = match self.writer {
            Writer::Parquet(w) => w.into_inner().map_err(|e| internal(&e))?,
            Writer::Csv(w) => w.out.into_inner().map_err(|e| internal(&e))?,
            Writer::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()?.into_inner().map_err(|e| internal(&e))?
            }
        };
        file.sync_all().map_err(|e| internal(&e))?;
        let (bytes, hash) = sha256_file(&self.tmp)?;
        Ok((self.tmp, bytes, hash))
    }
}

/// Size and SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| FlightError::Internal(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| FlightError::Internal(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(h.finalize())))
}

/// Moves a finished temporary file to its name, refusing to replace an existing file.
pub fn publish_file(tmp: &Path, path: &Path) -> Result<()> {
    // hard_link fails if the target exists: no check-then-rename race.
    std::fs::hard_link(tmp, path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            FlightError::InvalidRequest(format!(
                "export {} exists already; choose another name",
                path.display()
            ))
        } else {
            FlightError::Internal(format!("cannot write {}: {e}", path.display()))
        }
    })?;
    let _ = std::fs::remove_file(tmp);
    Ok(())
}

/// Draws a one-line progress bar on a terminal (the CLI's export).
pub fn progress_line(rows: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => {
            let frac = (rows as f64 / t as f64).clamp(0.0, 1.0);
            let filled = (frac * 30.0).round() as usize;
            format!(
                "[{}{}] {:>5.1}% {rows}/{t} rows",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                frac * 100.0
            )
        }
        _ => format!("{rows} rows"),
    }
}

/// Writes `text` over the current terminal line.
pub fn draw(out: &mut impl Write, text: &str) {
    let _ = write!(out, "\r{text}\x1b[K");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_keeps_null_and_empty_apart() {
        let mut out = Vec::new();
        for v in [
            None,
            Some(""),
            Some("plain"),
            Some("a,b"),
            Some("say \"hi\""),
            Some("two\nlines"),
        ] {
            csv_field(&mut out, v).unwrap();
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "|\"\"|plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|"
        );
    }

    use super::*;

    #[test]
    fn requests_are_checked() {
        let r = ExportRequest::parse(br#"{"dataset":"sales","version":2,"format":"csv"}"#).unwrap();
        assert_eq!(
            (r.dataset.as_deref(), r.version, r.format),
            (Some("sales"), Some(2), Format::Csv)
        );
        for bad in [
            r#"{"format":"csv"}"#,
            r#"{"dataset":"a","query":"SELECT 1","format":"csv"}"#,
            r#"{"query":"SELECT 1","version":1,"format":"csv"}"#,
            r#"{"dataset":"a","format":"xlsx"}"#,
            r#"{"dataset":"a","format":"csv","name":"../etc/passwd"}"#,
            r#"{"dataset":"a","format":"csv","name":".hidden"}"#,
            r#"{"dataset":"a","format":"csv","extra":1}"#,
        ] {
            assert!(ExportRequest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line(5, Some(10)).split(']').nth(1).unwrap().trim(),
            "50.0% 5/10 rows"
        );
        assert_eq!(progress_line(7, None), "7 rows");
    }
}
