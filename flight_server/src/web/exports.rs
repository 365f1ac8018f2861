//! Export buttons: an export runs in the background through barecount-flight's own exporter
//! (the same scope check, limits, file naming and ledger receipt as `DoAction export`), and its
//! page follows the progress (refreshing itself, no script) until the receipt and the download.

use super::session::{render, Viewer, WebError};
use super::Web;
use crate::export::{ExportMessage, ExportReceipt, ExportRequest, Format};
use crate::sql_service::SqlService;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Jobs kept at most; the oldest finished ones leave first.
const MAX_JOBS: usize = 1000;

/// One export's state.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    #[serde(skip)]
    tenant: String,
    pub id: String,
    pub dataset: String,
    pub format: String,
    pub rows: u64,
    pub total: Option<u64>,
    pub receipt: Option<ExportReceipt>,
    pub error: Option<String>,
    #[serde(skip)]
    started: std::time::Instant,
}

impl Job {
    pub fn done(&self) -> bool {
        self.receipt.is_some() || self.error.is_some()
    }
    pub fn percent(&self) -> u64 {
        match (self.total, &self.receipt) {
            (_, Some(_)) => 100,
            (Some(t), None) if t > 0 => (self.rows * 100 / t).min(99),
            _ => 0,
        }
    }
    pub fn file_name(&self) -> String {
        self.receipt
            .as_ref()
            .and_then(|r| {
                std::path::Path::new(&r.path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default()
    }
}

/// The export jobs of this process.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
}

impl Jobs {
    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        if let Ok(mut m) = self.jobs.lock() {
            if let Some(j) = m.get_mut(id) {
                f(j);
            }
        }
    }
    /// The job, if it is the tenant's (any other tenant's job is "not found").
    fn get(&self, tenant: &str, id: &str) -> Result<Job, WebError> {
        self.jobs
            .lock()
            .ok()
            .and_then(|m| m.get(id).filter(|j| j.tenant == tenant).cloned())
            .ok_or_else(|| WebError::NotFound(format!("there is no export {id}")))
    }
    fn insert(&self, job: Job) {
        if let Ok(mut m) = self.jobs.lock() {
            if m.len() >= MAX_JOBS {
                if let Some(oldest) = m
                    .values()
                    .filter(|j| j.done())
                    .min_by_key(|j| j.started)
                    .map(|j| j.id.clone())
                {
                    m.remove(&oldest);
                }
            }
            m.insert(job.id.clone(), job);
        }
    }
}

#[derive(Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    csrf: String,
    format: String,
    version: Option<i32>,
}

/// Starts an export of a dataset's version (latest by default) and goes to its page.
pub async fn start(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<ExportForm>,
) -> Result<Response, WebError> {
    viewer.check_csrf(&form.csrf)?;
    viewer.caller.require("export")?;
    let format = match form.format.as_str() {
        "parquet" => Format::Parquet,
        "csv" => Format::Csv,
        "arrow" => Format::Arrow,
        other => {
            return Err(WebError::BadRequest(format!(
                "unknown export format \"{other}\" (formats: parquet, csv, arrow)"
            )))
        }
    };
    let req = ExportRequest {
        dataset: Some(name.clone()),
        version: form.version,
        query: None,
        format,
        name: None,
    };
    // resolve and open the export now, so a bad dataset or a limit is the answer of this request
    let service = SqlService {
        state: web.state.clone(),
    };
    let mut stream = service.export(&viewer.caller, req).await?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    web.exports.insert(Job {
        tenant: viewer.caller.tenant.clone(),
        id: id.clone(),
        dataset: name,
        format: form.format.clone(),
        rows: 0,
        total: None,
        receipt: None,
        error: None,
        started: std::time::Instant::now(),
    });
    let jobs = web.exports.clone();
    let job = id.clone();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            match item.map(|r| serde_json::from_slice::<ExportMessage>(&r.body)) {
                Ok(Ok(ExportMessage::Progress { rows, total_rows })) => jobs.update(&job, |j| {
                    j.rows = rows;
                    j.total = total_rows;
                }),
                Ok(Ok(ExportMessage::Done(receipt))) => jobs.update(&job, |j| {
                    j.rows = receipt.rows;
                    j.receipt = Some(receipt);
                }),
                Ok(Err(e)) => jobs.update(&job, |j| j.error = Some(e.to_string())),
                Err(status) => jobs.update(&job, |j| j.error = Some(status.message().to_owned())),
            }
        }
        jobs.update(&job, |j| {
            if !j.done() {
                j.error = Some("the export ended without a receipt".into());
            }
        });
    });
    Ok(Redirect::to(&format!("/exports/{id}")).into_response())
}

#[derive(Template)]
#[template(path = "export.html")]
struct ExportPage<'a> {
    viewer: Option<&'a Viewer>,
    j: Job,
}

pub async fn page(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let j = web.exports.get(&viewer.caller.tenant, &id)?;
    Ok(render(&ExportPage {
        viewer: Some(&viewer),
        j,
    }))
}

/// The job as JSON (for scripts polling it); errors as the API's, in JSON.
pub async fn json(
    State(web): State<Arc<Web>>,
    super::api::ApiViewer(viewer): super::api::ApiViewer,
    Path(id): Path<String>,
) -> Response {
    match web.exports.get(&viewer.caller.tenant, &id) {
        Ok(j) => axum::Json(j).into_response(),
        Err(e) => e.json(),
    }
}

/// The exported file, once the export is done.
pub async fn file(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let j = web.exports.get(&viewer.caller.tenant, &id)?;
    let Some(r) = &j.receipt else {
        return Err(WebError::NotFound(format!("export {id} is not finished")));
    };
    let bytes = tokio::fs::read(&r.path).await.map_err(|e| {
        tracing::warn!("web: export file {}: {e}", r.path);
        WebError::NotFound(format!("the file of export {id} is gone"))
    })?;
    let content_type = match r.format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Parquet => "application/vnd.apache.parquet",
        Format::Arrow => "application/vnd.apache.arrow.file",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    j.file_name().replace('"', "")
                ),
            ),
        ],
        bytes,
    )
        .into_response())
}
