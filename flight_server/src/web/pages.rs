//! The pages.

use super::data::{self, Chain, Dataset, Entry, Item, Page, Series, Verified};
use super::session::{render, CsrfForm, Viewer, WebError};
use super::{chart, Web};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;

pub async fn home() -> Redirect {
    Redirect::to("/catalog")
}

pub async fn not_found() -> WebError {
    WebError::NotFound("there is no such page".into())
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct CatalogQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub after: String,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage<'a> {
    viewer: Option<&'a Viewer>,
    q: &'a str,
    kind: &'a str,
    kinds: &'a [&'a str],
    page: Page<Item>,
}

pub async fn catalog(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<CatalogQuery>,
) -> Result<Response, WebError> {
    let page = data::catalog(
        &web.state.db,
        &viewer.caller.tenant,
        &q.q,
        &q.kind,
        &q.after,
    )
    .await?;
    Ok(render(&CatalogPage {
        viewer: Some(&viewer),
        q: &q.q,
        kind: &q.kind,
        kinds: &data::KINDS,
        page,
    }))
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetPage<'a> {
    viewer: Option<&'a Viewer>,
    v: &'a Viewer,
    d: Dataset,
    verified: Option<Vec<Verified>>,
    lineage_svg: String,
}

pub async fn dataset(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    // the page shows a preview of the rows: a read, decided by the tenant's policies
    web_read(&web, &viewer.caller, &name).await?;
    let d = data::dataset(&web.state.db, &viewer.caller.tenant, &name).await?;
    Ok(render(&DatasetPage {
        viewer: Some(&viewer),
        v: &viewer,
        lineage_svg: chart::lineage(&d.name, &d.upstream, &d.downstream),
        d,
        verified: None,
    }))
}

/// Recomputes the latest version's content hash and checks it against the catalog and the
/// ledger, then shows the dataset with the result.
pub async fn verify(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    viewer.check_csrf(&form.csrf)?;
    web_read(&web, &viewer.caller, &name).await?;
    let d = data::dataset(&web.state.db, &viewer.caller.tenant, &name).await?;
    let verified = data::verify(&web.state.db, &viewer.caller.tenant, &name).await?;
    Ok(render(&DatasetPage {
        viewer: Some(&viewer),
        v: &viewer,
        lineage_svg: chart::lineage(&d.name, &d.upstream, &d.downstream),
        d,
        verified: Some(verified),
    }))
}

#[derive(Deserialize, Default)]
pub struct KpiQuery {
    #[serde(default)]
    pub measure: String,
}

#[derive(Template)]
#[template(path = "kpi.html")]
struct KpiPage<'a> {
    viewer: Option<&'a Viewer>,
    s: Series,
    svg: String,
}

pub async fn kpi(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<KpiQuery>,
) -> Result<Response, WebError> {
    let s = data::series(
        &web.state.db,
        &viewer.caller.tenant,
        &name,
        &q.measure,
        true,
    )
    .await?;
    let svg = chart::render(&s);
    Ok(render(&KpiPage {
        viewer: Some(&viewer),
        s,
        svg,
    }))
}

#[derive(Deserialize, Default)]
pub struct EvidenceQuery {
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub subject: String,
    pub before: Option<i64>,
}

#[derive(Template)]
#[template(path = "evidence.html")]
struct EvidencePage<'a> {
    viewer: Option<&'a Viewer>,
    chain: Chain,
    page: Page<Entry>,
    event: &'a str,
    subject: &'a str,
}

pub async fn evidence(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<EvidenceQuery>,
) -> Result<Response, WebError> {
    let db = &web.state.db;
    let page = data::ledger(db, &viewer.caller.tenant, &q.event, &q.subject, q.before).await?;
    let chain = data::chain(db).await?;
    Ok(render(&EvidencePage {
        viewer: Some(&viewer),
        chain,
        page,
        event: &q.event,
        subject: &q.subject,
    }))
}

#[derive(Deserialize, Default)]
pub struct QualityQuery {
    #[serde(default)]
    pub dataset: String,
    pub before: Option<i64>,
}

#[derive(Template)]
#[template(path = "quality.html")]
struct QualityPage<'a> {
    viewer: Option<&'a Viewer>,
    page: Page<data::Batch>,
    dataset: &'a str,
    /// the batches of the page, oldest first, and each rule's result per batch
    timeline: Timeline,
}

/// A rule's (passed, failing count) per batch, None where it did not run.
type RuleRow = (String, Vec<Option<(bool, i64)>>);
/// The batch ids, oldest first, and a row per rule.
type Timeline = (Vec<i64>, Vec<RuleRow>);

/// Each quality rule's results across the page's batches, oldest first: (passed, failing)
/// per batch, None where the rule did not run.
fn timeline(batches: &[data::Batch]) -> Timeline {
    let ordered: Vec<&data::Batch> = batches.iter().rev().collect();
    let mut rules: Vec<String> = ordered
        .iter()
        .flat_map(|b| b.rules.iter().map(|r| format!("{}: {}", b.dataset, r.rule)))
        .collect();
    rules.sort();
    rules.dedup();
    let rows = rules
        .into_iter()
        .map(|name| {
            let cells = ordered
                .iter()
                .map(|b| {
                    b.rules
                        .iter()
                        .find(|r| format!("{}: {}", b.dataset, r.rule) == name)
                        .map(|r| (r.passed, r.failing))
                })
                .collect();
            (name, cells)
        })
        .collect();
    (ordered.iter().map(|b| b.batch_id).collect(), rows)
}

pub async fn quality(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<QualityQuery>,
) -> Result<Response, WebError> {
    let page = data::batches(&web.state.db, &viewer.caller.tenant, &q.dataset, q.before).await?;
    Ok(render(&QualityPage {
        viewer: Some(&viewer),
        timeline: timeline(&page.items),
        page,
        dataset: &q.dataset,
    }))
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage<'a> {
    viewer: Option<&'a Viewer>,
    v: &'a Viewer,
    b: data::Batch,
    rows: Vec<data::Held>,
    replayed: Option<data::Replayed>,
}

pub async fn batch(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let (b, rows) = data::batch(&web.state.db, &viewer.caller.tenant, id).await?;
    Ok(render(&BatchPage {
        viewer: Some(&viewer),
        v: &viewer,
        b,
        rows,
        replayed: None,
    }))
}

/// Replays a batch's quarantined rows against the dataset's latest contract; needs the
/// ingest scope (an engineer's password, or a token made with it).
pub async fn replay(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    viewer.check_csrf(&form.csrf)?;
    viewer.caller.require("ingest")?;
    let db = &web.state.db;
    let replayed = data::replay(db, &viewer.caller.tenant, id).await?;
    let (b, rows) = data::batch(db, &viewer.caller.tenant, id).await?;
    Ok(render(&BatchPage {
        viewer: Some(&viewer),
        v: &viewer,
        b,
        rows,
        replayed: Some(replayed),
    }))
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    #[serde(default)]
    pub failed: bool,
    pub before: Option<i64>,
}

#[derive(Template)]
#[template(path = "operations.html")]
struct OperationsPage<'a> {
    viewer: Option<&'a Viewer>,
    o: data::Operations,
    failed: bool,
}

pub async fn operations(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<RunsQuery>,
) -> Result<Response, WebError> {
    let o = data::operations(&web.state.db, &viewer.caller.tenant, q.failed, q.before).await?;
    Ok(render(&OperationsPage {
        viewer: Some(&viewer),
        o,
        failed: q.failed,
    }))
}

/// A dataset page or API answer shows rows: the tenant's policies decide the read
/// (`channel` web), as they do for Flight.
pub(crate) async fn web_read(
    web: &Web,
    caller: &crate::auth::Caller,
    dataset: &str,
) -> Result<(), WebError> {
    crate::policy::decide(
        &web.state.db,
        caller,
        "read",
        &[dataset.to_owned()],
        serde_json::json!({"channel": "web"}),
    )
    .await
    .map_err(WebError::from)
}
