//! The `export` action: resolves what to export for the caller's tenant, streams it through a
//! file writer on a blocking thread, reports progress, and records the receipt in Postgres.

use crate::auth::Caller;
use crate::error::{FlightError, Result};
use crate::export::{
    check_name, publish_file, ExportMessage, ExportReceipt, ExportRequest, FileSink,
};
use crate::query;
use crate::sql_service::SqlService;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tonic::Status;

pub type ActionStream = BoxStream<'static, std::result::Result<arrow_flight::Result, Status>>;

struct Source {
    label: String,
    default_name: String,
    schema: SchemaRef,
    total_rows: Option<u64>,
    content_hash: Option<String>,
    batches: BoxStream<'static, Result<RecordBatch>>,
}

fn message(m: &ExportMessage) -> std::result::Result<arrow_flight::Result, Status> {
    let body = serde_json::to_vec(m).map_err(|e| Status::internal(e.to_string()))?;
    Ok(arrow_flight::Result { body: body.into() })
}

fn millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl SqlService {
    async fn export_source(&self, caller: &Caller, req: &ExportRequest) -> Result<Source> {
        let state = &self.state;
        if let Some(ds) = &req.dataset {
            let catalog = state.catalog(&caller.tenant).await?;
            let v = catalog.find(ds, req.version)?.clone();
            crate::policy::decide(
                &state.db,
                caller,
                "export",
                std::slice::from_ref(&v.dataset),
                json!({"rows": v.row_count, "format": req.format.extension()}),
            )
            .await?;
            let (schema, batches) = state.store.stream(&state.db, &v, 0, usize::MAX).await?;
            return Ok(Source {
                label: format!("dataset:{}@v{}", v.dataset, v.version),
                default_name: format!("{}_v{}_{}", v.dataset, v.version, millis()),
                schema,
                total_rows: u64::try_from(v.row_count).ok(),
                content_hash: Some(v.content_hash.clone()),
                batches: batches.boxed(),
            });
        }
        let sql = req.query.clone().unwrap_or_default();
        let (ctx, catalog) = state.session_and_catalog(&caller.tenant).await?;
        let df = query::dataframe(&ctx, &sql, None).await?;
        crate::policy::decide(
            &state.db,
            caller,
            "export",
            &crate::policy::datasets(&catalog, &query::scanned_tables(&df)),
            json!({"format": req.format.extension()}),
        )
        .await?;
        let stream = df.execute_stream().await?;
        let schema = stream.schema();
        Ok(Source {
            label: format!("query:{sql}"),
            default_name: format!("query_{}", millis()),
            schema,
            total_rows: None,
            content_hash: None,
            batches: stream.map(|b| b.map_err(FlightError::from)).boxed(),
        })
    }

    /// Runs an export; the stream yields progress messages and then the receipt.
    pub async fn export(&self, caller: &Caller, req: ExportRequest) -> Result<ActionStream> {
        caller.require("export")?;
        check_name(&caller.tenant)?;
        let source = self.export_source(caller, &req).await?;
        let name = req.name.clone().unwrap_or(source.default_name.clone());
        let dir = self.state.export_dir.join(&caller.tenant);
        std::fs::create_dir_all(&dir)
            .map_err(|e| FlightError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!("{name}.{}", req.format.extension()));
        if path.exists() {
            return Err(FlightError::AlreadyExists(format!(
                "export {} exists already; choose another name",
                path.display()
            )));
        }
        let tmp = dir.join(format!(".{name}.{}.tmp", rand::random::<u64>()));
        let (out_tx, out_rx) = mpsc::channel(8);
        let service = self.clone();
        let caller = caller.clone();
        let on_panic = |m: String| Err(Status::internal(format!("the export failed: {m}")));
        crate::error::spawn_feeder(out_tx.clone(), on_panic, async move {
            let result = service
                .write_export(&caller, req, source, tmp.clone(), path, out_tx.clone())
                .await;
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                let _ = out_tx.send(Err(Status::from(e))).await;
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(out_rx).boxed())
    }

    async fn write_export(
        &self,
        caller: &Caller,
        req: ExportRequest,
        mut source: Source,
        tmp: std::path::PathBuf,
        path: std::path::PathBuf,
        out: mpsc::Sender<std::result::Result<arrow_flight::Result, Status>>,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<RecordBatch>(4);
        let schema = source.schema.clone();
        let format = req.format;
        let writer_tmp = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut sink = FileSink::create(&writer_tmp, format, &schema)?;
            while let Some(b) = rx.blocking_recv() {
                sink.write(&b)?;
            }
            sink.finish()
        });
        let mut rows = 0u64;
        while let Some(batch) = source.batches.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            if tx.send(batch).await.is_err() {
                break; // the writer failed; its error is reported below
            }
            let _ = out
                .send(message(&ExportMessage::Progress {
                    rows,
                    total_rows: source.total_rows,
                }))
                .await;
        }
        drop(tx);
        let (_, bytes, hash) = writer
            .await
            .map_err(|e| FlightError::Internal(format!("export writer: {e}")))??;
        publish_file(&tmp, &path)?;
        let path_text = path.display().to_string();
        let receipt = async {
            let client = self.state.db.client().await?;
            let row = client
                .query_one(
                    "SELECT ledger_seq, entry_hash FROM barecount.export_receipt($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &caller.tenant,
                        &source.label,
                        &format.name(),
                        &path_text,
                        &(rows as i64),
                        &(bytes as i64),
                        &hash,
                        &source.content_hash,
                    ],
                )
                .await?;
            Ok::<_, FlightError>((row.try_get::<_, i64>(0)?, row.try_get::<_, String>(1)?))
        }
        .await;
        let (ledger_seq, ledger_hash) = match receipt {
            Ok(r) => r,
            Err(e) => {
                // No receipt, no export: the file goes.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        self.state.metrics.exports.fetch_add(1, Ordering::Relaxed);
        let _ = out
            .send(message(&ExportMessage::Done(ExportReceipt {
                path: path_text,
                format,
                rows,
                bytes,
                content_hash: hash,
                source_content_hash: source.content_hash,
                source: source.label,
                ledger_seq,
                ledger_hash,
            })))
            .await;
        Ok(())
    }
}
