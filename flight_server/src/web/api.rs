//! The JSON API under /api/v1/: the pages' data for scripts, with an OpenAPI document.
//! Credentials: `Authorization: Bearer <API token or Flight session token>`, or the session
//! cookie. Errors are {"error": {"code", "message"}} with the HTTP status that fits.

use super::data;
use super::pages::{CatalogQuery, EvidenceQuery, KpiQuery, QualityQuery, RunsQuery};
use super::session::{Viewer, WebError};
use super::Web;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// A caller of the API: as [`Viewer`], but refused with JSON instead of the sign-in page.
pub struct ApiViewer(pub(super) Viewer);

pub struct ApiError(WebError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.json()
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> Self {
        ApiError(e)
    }
}

impl FromRequestParts<Arc<Web>> for ApiViewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, ApiError> {
        Ok(ApiViewer(Viewer::from_request_parts(parts, web).await?))
    }
}

type Answer = Result<Response, ApiError>;

pub async fn catalog(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Query(q): Query<CatalogQuery>,
) -> Answer {
    let page = data::catalog(&web.state.db, &v.caller.tenant, &q.q, &q.kind, &q.after).await?;
    Ok(Json(page).into_response())
}

pub async fn dataset(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Path(name): Path<String>,
) -> Answer {
    super::pages::web_read(&web, &v.caller, &name).await?;
    Ok(Json(data::dataset(&web.state.db, &v.caller.tenant, &name).await?).into_response())
}

pub async fn kpi_series(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Path(name): Path<String>,
    Query(q): Query<KpiQuery>,
) -> Answer {
    let s = data::series(&web.state.db, &v.caller.tenant, &name, &q.measure, true).await?;
    Ok(Json(s).into_response())
}

pub async fn ledger(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Query(q): Query<EvidenceQuery>,
) -> Answer {
    let page = data::ledger(
        &web.state.db,
        &v.caller.tenant,
        &q.event,
        &q.subject,
        q.before,
    )
    .await?;
    Ok(Json(page).into_response())
}

pub async fn quality(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Query(q): Query<QualityQuery>,
) -> Answer {
    let page = data::batches(&web.state.db, &v.caller.tenant, &q.dataset, q.before).await?;
    Ok(Json(page).into_response())
}

pub async fn batch(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Path(id): Path<i64>,
) -> Answer {
    let (batch, rows) = data::batch(&web.state.db, &v.caller.tenant, id).await?;
    Ok(Json(serde_json::json!({"batch": batch, "rows": rows})).into_response())
}

pub async fn runs(
    State(web): State<Arc<Web>>,
    ApiViewer(v): ApiViewer,
    Query(q): Query<RunsQuery>,
) -> Answer {
    let o = data::operations(&web.state.db, &v.caller.tenant, q.failed, q.before).await?;
    Ok(Json(o).into_response())
}

/// The OpenAPI 3.1 document of the API.
pub async fn openapi() -> Response {
    let error = serde_json::json!({"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let responses = |what: &str| {
        serde_json::json!({
            "200": {"description": what, "content": {"application/json": {"schema": {"type": "object"}}}},
            "400": error, "401": error, "403": error, "404": error
        })
    };
    let string = |name: &str, place: &str, required: bool, about: &str| serde_json::json!({"name": name, "in": place, "required": required, "description": about, "schema": {"type": "string"}});
    let doc = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "BareCount web API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a BareCount API token (bct_…) or a Flight session token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": super::session::COOKIE}
            },
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string", "enum": ["unauthenticated", "permission_denied", "not_found", "invalid_argument", "internal"]},
                "message": {"type": "string"}}}}}}
        },
        "paths": {
            "/catalog": {"get": {"summary": "Search the tenant's catalog (keyset pages of 50)", "parameters": [
                string("q", "query", false, "full-text search over names, descriptions, column names and tags, or a name fragment"),
                string("kind", "query", false, "calendar, contract, dataset, kpi, model or pipeline"),
                string("after", "query", false, "the `next` cursor of the previous page")],
                "responses": responses("items and the next cursor")}},
            "/datasets/{name}": {"get": {"summary": "A dataset: versions, schema, first rows, lineage", "parameters": [string("name", "path", true, "dataset")],
                "responses": responses("the dataset")}},
            "/kpis/{name}/series": {"get": {"summary": "A KPI's series, thresholds, anomalies and forecast", "parameters": [
                string("name", "path", true, "KPI"), string("measure", "query", false, "a measure (default: the first)")],
                "responses": responses("the series")}},
            "/quality": {"get": {"summary": "Batches with quarantined rows or quality results (pages of 50)", "parameters": [
                string("dataset", "query", false, "one dataset"),
                {"name": "before", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "the `next` cursor"}],
                "responses": responses("batches and the next cursor")}},
            "/quality/batches/{id}": {"get": {"summary": "A batch and its quarantined rows with their errors", "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": responses("the batch and its rows")}},
            "/runs": {"get": {"summary": "Pipeline runs, schedules and today's usage against the plan", "parameters": [
                {"name": "failed", "in": "query", "required": false, "schema": {"type": "boolean"}},
                {"name": "before", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "the `next` cursor"}],
                "responses": responses("runs, schedules, usage")}},
            "/exports/{id}": {"get": {"summary": "An export started from a dataset page: rows so far, total, then the receipt or the error", "parameters": [
                string("id", "path", true, "the export's id (its page is /exports/{id})")],
                "responses": responses("the export")}},
            "/ledger": {"get": {"summary": "The tenant's ledger entries, newest first (pages of 50)", "parameters": [
                string("event", "query", false, "one event type"), string("subject", "query", false, "subject contains"),
                {"name": "before", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "the `next` cursor of the previous page"}],
                "responses": responses("entries and the next cursor")}}
        }
    });
    Json(doc).into_response()
}
