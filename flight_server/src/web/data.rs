//! The web app's reads. Every query takes the caller's tenant as a parameter and filters on it:
//! the server's role bypasses row-level security, so this filter is the tenant boundary, and
//! anything of another tenant is simply not found.

use super::session::WebError;
use crate::db::Db;
use serde::Serialize;
use tokio_postgres::Row;

type R<T> = Result<T, WebError>;

/// Rows per page of a list.
pub const PAGE: i64 = 50;

/// One catalog entry.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub version: String,
    pub at: String,
}

/// A keyset page: the items and the cursor of the next page, if any.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to PAGE + 1 fetched items: the extra one only says there is a next page,
    /// whose cursor `cursor` makes from the page's last item.
    fn of(mut items: Vec<T>, cursor: impl Fn(&T) -> String) -> Page<T> {
        let next = if items.len() as i64 > PAGE {
            items.truncate(PAGE as usize);
            items.last().map(cursor)
        } else {
            None
        };
        Page { items, next }
    }
}

/// The kinds the catalog lists.
pub const KINDS: [&str; 6] = [
    "calendar", "contract", "dataset", "kpi", "model", "pipeline",
];

const CATALOG_SQL: &str = "
WITH items AS (
    SELECT 'dataset' AS kind, d.dataset AS name,
           coalesce((SELECT string_agg(c->>'name', ' ') FROM jsonb_array_elements(v.columns) c
                      WHERE c->>'name' <> 'tenant_id'), '') AS detail,
           v.version::text AS version, v.published_at AS at
      FROM barecount.datasets d
      JOIN barecount.dataset_versions v
        ON v.tenant_id = d.tenant_id AND v.dataset = d.dataset AND v.version = d.latest_version
     WHERE d.tenant_id = $1
    UNION ALL
    SELECT 'contract', c.contract,
           concat_ws(' ', c.document->'description'->>'purpose', c.document->'description'->>'usage',
                     c.document->'team'->>'name', c.document->>'owner',
                     CASE WHEN jsonb_typeof(c.document->'tags') = 'array'
                          THEN (SELECT string_agg(t, ' ') FROM jsonb_array_elements_text(c.document->'tags') t) END,
                     (SELECT string_agg(o->>'name', ' ') FROM jsonb_array_elements(
                          CASE WHEN jsonb_typeof(c.document->'schema') = 'array' THEN c.document->'schema' ELSE '[]' END) o)),
           c.version, c.registered_at
      FROM (SELECT DISTINCT ON (contract) * FROM barecount.contracts WHERE tenant_id = $1
             ORDER BY contract, version_sort DESC) c
    UNION ALL
    SELECT 'kpi', k.name, concat_ws(' ', k.spec->>'description', k.spec->>'source', k.spec->>'grain'),
           k.version::text, k.defined_at
      FROM (SELECT DISTINCT ON (name) * FROM barecount.kpis WHERE tenant_id = $1 ORDER BY name, version DESC) k
    UNION ALL
    SELECT 'model', m.name, coalesce(m.contract, ''), m.version::text, m.defined_at
      FROM (SELECT DISTINCT ON (name) * FROM barecount.models WHERE tenant_id = $1 ORDER BY name, version DESC) m
    UNION ALL
    SELECT 'pipeline', p.name, coalesce(p.spec->>'description', ''), p.version::text, p.defined_at
      FROM (SELECT DISTINCT ON (name) * FROM barecount.pipelines WHERE tenant_id = $1 ORDER BY name, version DESC) p
    UNION ALL
    SELECT 'calendar', c.name, coalesce(c.spec->>'kind', c.spec->>'type', ''), c.version::text, c.created_at
      FROM (SELECT DISTINCT ON (name) * FROM barecount.calendars WHERE tenant_id = $1 ORDER BY name, version DESC) c
)
SELECT kind, name, detail, version, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC'
  FROM items
 WHERE ($2 = '' OR to_tsvector('simple', translate(name, '_.', '  ') || ' ' || name || ' ' || detail)
                   @@ websearch_to_tsquery('simple', $2)
                OR name ILIKE '%' || replace(replace(replace($2, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%')
   AND ($3 = '' OR kind = $3)
   AND (kind, name) > ($4, $5)
 ORDER BY kind, name
 LIMIT $6";

/// Searches the tenant's catalog (names, descriptions, column names, tags) by full text or a
/// name fragment, optionally one kind, from a cursor (`kind/name` of the last item seen).
pub async fn catalog(db: &Db, tenant: &str, q: &str, kind: &str, after: &str) -> R<Page<Item>> {
    if !kind.is_empty() && !KINDS.contains(&kind) {
        return Err(WebError::BadRequest(format!(
            "unknown kind \"{kind}\" (kinds: {})",
            KINDS.join(", ")
        )));
    }
    if q.len() > 200 {
        return Err(WebError::BadRequest(
            "a search is at most 200 characters".into(),
        ));
    }
    let (ak, an) = after.split_once('/').unwrap_or(("", ""));
    let (q, kind, ak, an) = (q.to_owned(), kind.to_owned(), ak.to_owned(), an.to_owned());
    let tenant = tenant.to_owned();
    let rows = db
        .run(|c| {
            let (q, kind, ak, an, tenant) = (
                q.clone(),
                kind.clone(),
                ak.clone(),
                an.clone(),
                tenant.clone(),
            );
            async move {
                c.query(CATALOG_SQL, &[&tenant, &q, &kind, &ak, &an, &(PAGE + 1)])
                    .await
            }
        })
        .await?;
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item {
            kind: r.get(0),
            name: r.get(1),
            detail: r.get(2),
            version: r.get(3),
            at: r.get(4),
        })
        .collect();
    Ok(Page::of(items, |i: &Item| format!("{}/{}", i.kind, i.name)))
}

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub version: i32,
    pub rows: i64,
    pub bytes: i64,
    pub content_hash: String,
    pub status: String,
    pub latest: bool,
    pub pinned: bool,
    pub published_at: String,
    pub published_by: String,
    pub receipt: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub pg_type: String,
    pub nullable: bool,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    pub name: String,
    pub versions: Vec<Version>,
    pub columns: Vec<Column>,
    pub contract: Option<String>,
    /// the first rows of the latest version: column names, then each row's values as text
    pub preview: Vec<Vec<String>>,
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
}

/// A dataset of the tenant with its versions, schema (with the contract's descriptions), the
/// first rows of its latest version and its lineage; NotFound for any other tenant's.
pub async fn dataset(db: &Db, tenant: &str, name: &str) -> R<Dataset> {
    let client = db.client().await?;
    let versions = client
        .query(
            "SELECT v.version, v.row_count, v.bytes, v.content_hash, v.status, v.version = d.latest_version,
                    EXISTS (SELECT 1 FROM barecount.dataset_pins p WHERE p.tenant_id = v.tenant_id AND p.dataset = v.dataset AND p.version = v.version),
                    to_char(v.published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC', v.published_by, v.ledger_seq,
                    v.columns, v.relation
               FROM barecount.dataset_versions v
               JOIN barecount.datasets d ON d.tenant_id = v.tenant_id AND d.dataset = v.dataset
              WHERE v.tenant_id = $1 AND v.dataset = $2
              ORDER BY v.version DESC",
            &[&tenant, &name],
        )
        .await?;
    let Some(latest) = versions.first() else {
        return Err(WebError::NotFound(format!(
            "dataset \"{name}\" is not published for this tenant"
        )));
    };
    let contract = client
        .query_opt(
            "SELECT c.contract, k.document FROM barecount.contract_datasets c
               JOIN barecount.contracts k USING (tenant_id, contract)
              WHERE c.tenant_id = $1 AND c.dataset = $2 AND k.version = c.contract_version
              ORDER BY k.version_sort DESC LIMIT 1",
            &[&tenant, &name],
        )
        .await?;
    // the contract's (ODCS v3) schema object of this dataset: its properties' descriptions
    let document: Option<serde_json::Value> = contract.as_ref().and_then(|r| r.get(1));
    let properties: Vec<serde_json::Value> = document
        .as_ref()
        .and_then(|d| d["schema"].as_array())
        .and_then(|objects| {
            objects.iter().find(|o| {
                o["name"].as_str() == Some(name) || o["physicalName"].as_str() == Some(name)
            })
        })
        .and_then(|o| o["properties"].as_array().cloned())
        .unwrap_or_default();
    let described = |col: &str| -> String {
        properties
            .iter()
            .find(|p| p["name"].as_str() == Some(col))
            .and_then(|p| p["description"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let cols: serde_json::Value = latest.get(10);
    let columns: Vec<Column> = cols
        .as_array()
        .map(|a| {
            // tenant_id is implied, as over Flight
            a.iter()
                .filter(|c| c["name"] != crate::catalog::TENANT_COLUMN)
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("").to_owned();
                    Column {
                        description: described(&name),
                        pg_type: c["type"].as_str().unwrap_or("").to_owned(),
                        nullable: c["nullable"].as_bool().unwrap_or(true),
                        name,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    // the relation is the catalog's own (published_<tenant>.<name>__v<N>), quoted as a regclass
    let relation: String = latest.get(11);
    let mut preview = vec![columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>()];
    let rows = client
        .query(
            &format!(
                "SELECT to_jsonb(t) FROM (SELECT * FROM {} WHERE tenant_id = $1 LIMIT 20) t",
                quote_relation(&relation)
            ),
            &[&tenant],
        )
        .await?;
    for r in rows {
        let v: serde_json::Value = r.get(0);
        preview.push(
            columns
                .iter()
                .map(|c| match &v[&c.name] {
                    serde_json::Value::Null => "∅".to_owned(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    let lineage = |direction: &'static str| {
        let client = client.clone();
        // the ledger names a published dataset published.<name>
        let (tenant, name) = (tenant.to_owned(), format!("published.{name}"));
        async move {
            // the lineage graph's edges are ledger entries: inputs -> outputs of the tenant's
            // own receipts
            let sql = if direction == "up" {
                "SELECT DISTINCT i FROM barecount.ledger l, jsonb_array_elements_text(l.inputs->'inputs') i
                  WHERE l.tenant_id = $1 AND l.inputs->'outputs' ? $2 AND i <> $2 ORDER BY 1 LIMIT 50"
            } else {
                "SELECT DISTINCT o FROM barecount.ledger l, jsonb_array_elements_text(l.inputs->'outputs') o
                  WHERE l.tenant_id = $1 AND l.inputs->'inputs' ? $2 AND o <> $2 ORDER BY 1 LIMIT 50"
            };
            let rows = client.query(sql, &[&tenant, &name]).await?;
            Ok::<Vec<String>, tokio_postgres::Error>(rows.iter().map(|r| r.get(0)).collect())
        }
    };
    let upstream = lineage("up").await?;
    let downstream = lineage("down").await?;
    Ok(Dataset {
        name: name.to_owned(),
        contract: contract.as_ref().map(|r| r.get(0)),
        versions: versions.iter().map(version_of).collect(),
        columns,
        preview,
        upstream,
        downstream,
    })
}

fn version_of(r: &Row) -> Version {
    let status: String = r.get(4);
    Version {
        version: r.get(0),
        rows: r.get(1),
        bytes: r.get(2),
        content_hash: r.get(3),
        status,
        latest: r.get(5),
        pinned: r.get(6),
        published_at: r.get(7),
        published_by: r.get(8),
        receipt: r.get(9),
    }
}

/// `schema.table` quoted for SQL (each part's double quotes doubled).
pub fn quote_relation(relation: &str) -> String {
    relation
        .split('.')
        .map(|p| format!("\"{}\"", p.trim_matches('"').replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The result of verifying a version.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub version: i32,
    pub ok: bool,
    pub detail: String,
}

/// A connection of its own acting as the tenant (`barecount.act_as_tenant` holds for the
/// session, and the session ends with the connection), for the functions that work on the
/// current tenant.
async fn as_tenant(db: &Db, tenant: &str) -> R<tokio_postgres::Client> {
    let client = db.dedicated().await?;
    client
        .execute("SELECT barecount.act_as_tenant($1)", &[&tenant])
        .await?;
    Ok(client)
}

/// Runs `barecount.verify_dataset` for the tenant, as the tenant.
pub async fn verify(db: &Db, tenant: &str, name: &str) -> R<Vec<Verified>> {
    let rows = as_tenant(db, tenant)
        .await?
        .query(
            "SELECT to_jsonb(v) FROM barecount.verify_dataset($1) v",
            &[&name],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = r.get(0);
            let mut detail = v.clone();
            if let Some(o) = detail.as_object_mut() {
                o.remove("dataset");
                o.remove("version");
                o.remove("ok");
            }
            Verified {
                version: v["version"].as_i64().unwrap_or(0) as i32,
                ok: v["ok"].as_bool().unwrap_or(false),
                detail: detail.to_string(),
            }
        })
        .collect())
}

/// A KPI's series: one point per period and dimension values of one measure, its thresholds,
/// anomalies and (optionally) a forecast.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub kpi: String,
    pub measure: String,
    pub measures: Vec<String>,
    pub grain: String,
    pub calendar: Option<String>,
    pub points: Vec<Point>,
    pub thresholds: Vec<Threshold>,
    pub anomalies: Vec<Point>,
    pub forecast: Vec<Forecast>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub period: String,
    pub start: String,
    pub dims: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Threshold {
    pub direction: String,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    pub period: String,
    pub start: String,
    pub dims: String,
    pub value: f64,
    pub lo95: f64,
    pub hi95: f64,
}

/// The series of a KPI of the tenant; `measure` empty means its first measure.
pub async fn series(db: &Db, tenant: &str, kpi: &str, measure: &str, forecast: bool) -> R<Series> {
    let client = db.client().await?;
    let Some(def) = client
        .query_opt(
            "SELECT spec FROM barecount.kpis WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
            &[&tenant, &kpi],
        )
        .await?
    else {
        return Err(WebError::NotFound(format!(
            "KPI \"{kpi}\" is not defined for this tenant"
        )));
    };
    let spec: serde_json::Value = def.get(0);
    // by name, as the KPI's columns are (core::kpi)
    let mut measures: Vec<String> = spec["measures"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    measures.sort();
    let measure = if measure.is_empty() {
        measures.first().cloned().unwrap_or_default()
    } else if measures.iter().any(|m| m == measure) {
        measure.to_owned()
    } else {
        return Err(WebError::NotFound(format!(
            "KPI \"{kpi}\" has no measure \"{measure}\" (measures: {})",
            measures.join(", ")
        )));
    };
    let dims: Vec<String> = spec["dimensions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let label = |row: &serde_json::Value| -> String {
        dims.iter()
            .map(|d| match &row[d] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "∅".into(),
                v => v.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let table = format!("kpi.{}", quote_relation(kpi));
    let rows = match client
        .query(
            &format!(
                "SELECT to_jsonb(k), to_char(period_start, 'YYYY-MM-DD') FROM {table} k WHERE tenant_id = $1 ORDER BY period_start"
            ),
            &[&tenant],
        )
        .await
    {
        Ok(rows) => rows,
        // defined but never materialized
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => vec![],
        Err(e) => return Err(e.into()),
    };
    let points: Vec<Point> = rows
        .iter()
        .filter_map(|r| {
            let v: serde_json::Value = r.get(0);
            let value = match &v[&measure] {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }?;
            Some(Point {
                period: v["period"].as_str().unwrap_or("").to_owned(),
                start: r.get(1),
                dims: label(&v),
                value,
            })
        })
        .collect();
    let thresholds = spec["thresholds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["measure"].as_str().is_none_or(|m| m == measure))
                .map(|t| Threshold {
                    direction: t["direction"].as_str().unwrap_or("above").to_owned(),
                    warn: t["warn"].as_f64(),
                    critical: t["critical"].as_f64(),
                })
                .collect()
        })
        .unwrap_or_default();
    let anomalies = client
        .query(
            "SELECT a.period, a.dims, a.value FROM barecount.kpi_anomaly_state a
              WHERE a.tenant_id = $1 AND a.kpi = $2 AND a.measure = $3",
            &[&tenant, &kpi, &measure],
        )
        .await?
        .iter()
        .map(|r| {
            let d: serde_json::Value = r.get(1);
            let period: String = r.get(0);
            let start = points
                .iter()
                .find(|p| p.period == period)
                .map(|p| p.start.clone())
                .unwrap_or_default();
            Point {
                period,
                start,
                dims: label(&d),
                value: r.get(2),
            }
        })
        .collect();
    let forecast = if forecast && points.len() >= 8 {
        forecast_of(db, tenant, kpi, &measure, &label)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!("web: forecast of {kpi}: {e:?}");
                vec![]
            })
    } else {
        vec![]
    };
    Ok(Series {
        kpi: kpi.to_owned(),
        measure,
        measures,
        grain: spec["grain"].as_str().unwrap_or("").to_owned(),
        calendar: spec["calendar"].as_str().map(str::to_owned),
        points,
        thresholds,
        anomalies,
        forecast,
    })
}

async fn forecast_of(
    db: &Db,
    tenant: &str,
    kpi: &str,
    measure: &str,
    label: &impl Fn(&serde_json::Value) -> String,
) -> R<Vec<Forecast>> {
    let rows = as_tenant(db, tenant)
        .await?
        .query(
            "SELECT period, to_char(period_start, 'YYYY-MM-DD'), dims, forecast, lo95, hi95
               FROM barecount.kpi_forecast($1, 6, 'auto', jsonb_build_object('measure', $2::text))
              ORDER BY dims::text, step",
            &[&kpi, &measure],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Forecast {
            period: r.get(0),
            start: r.get(1),
            dims: label(&r.get::<_, serde_json::Value>(2)),
            value: r.get(3),
            lo95: r.get(4),
            hi95: r.get(5),
        })
        .collect())
}

/// One ledger entry.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub event_type: String,
    pub subject: String,
    pub entry_hash: String,
}

/// The tenant's ledger, newest first, from a cursor (the last seq seen), optionally one event
/// type or a subject fragment.
pub async fn ledger(
    db: &Db,
    tenant: &str,
    event: &str,
    subject: &str,
    before: Option<i64>,
) -> R<Page<Entry>> {
    let (tenant, event, subject) = (tenant.to_owned(), event.to_owned(), subject.to_owned());
    let before = before.unwrap_or(i64::MAX);
    let rows = db
        .run(|c| {
            let (tenant, event, subject) = (tenant.clone(), event.clone(), subject.clone());
            async move {
                c.query(
                    "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', actor, event_type, subject, entry_hash
                       FROM barecount.ledger
                      WHERE tenant_id = $1 AND seq < $2 AND ($3 = '' OR event_type = $3)
                        AND ($4 = '' OR strpos(subject, $4) > 0)
                      ORDER BY seq DESC LIMIT $5",
                    &[&tenant, &before, &event, &subject, &(PAGE + 1)],
                )
                .await
            }
        })
        .await?;
    let items: Vec<Entry> = rows
        .iter()
        .map(|r| Entry {
            seq: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            event_type: r.get(3),
            subject: r.get(4),
            entry_hash: r.get(5),
        })
        .collect();
    Ok(Page::of(items, |e: &Entry| e.seq.to_string()))
}

/// The chain's state: whether the whole ledger verifies, and the latest digest to keep.
#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub ok: bool,
    pub checked: i64,
    pub detail: String,
    pub digest_seq: i64,
    pub digest_hash: String,
}

pub async fn chain(db: &Db) -> R<Chain> {
    let client = db.client().await?;
    let v = client
        .query_one("SELECT to_jsonb(v) FROM barecount.ledger_verify() v", &[])
        .await?;
    let v: serde_json::Value = v.get(0);
    let d = client
        .query_one("SELECT to_jsonb(d) FROM barecount.ledger_digest() d", &[])
        .await?;
    let d: serde_json::Value = d.get(0);
    Ok(Chain {
        ok: v["ok"].as_bool().unwrap_or(false),
        checked: v["checked"].as_i64().unwrap_or(0),
        detail: v.to_string(),
        digest_seq: d["seq"]
            .as_i64()
            .or_else(|| d["last_seq"].as_i64())
            .unwrap_or(0),
        digest_hash: d["entry_hash"]
            .as_str()
            .or_else(|| d["hash"].as_str())
            .or_else(|| d["last_hash"].as_str())
            .unwrap_or("")
            .to_owned(),
    })
}

/// A batch that put rows in quarantine, with its quality rules' results.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub batch_id: i64,
    pub dataset: String,
    pub contract: String,
    pub rows_total: i64,
    pub rows_accepted: i64,
    pub rows_quarantined: i64,
    /// rows of the batch still in quarantine (not released by a replay)
    pub held: i64,
    pub ingested_at: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub rule: String,
    pub severity: String,
    pub passed: bool,
    pub failing: i64,
}

/// A quarantined row with its errors.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub row_no: i32,
    pub payload: String,
    pub errors: Vec<String>,
    pub released: Option<String>,
}

/// The tenant's batches with quarantined rows or quality results, newest first, optionally
/// of one dataset, from a cursor (the last batch id seen).
pub async fn batches(db: &Db, tenant: &str, dataset: &str, before: Option<i64>) -> R<Page<Batch>> {
    let client = db.client().await?;
    let before = before.unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT b.batch_id, b.dataset, b.contract || '@' || b.contract_version, b.rows_total, b.rows_accepted,
                    b.rows_quarantined,
                    (SELECT count(*) FROM barecount.quarantine q WHERE q.batch_id = b.batch_id AND q.released_at IS NULL),
                    to_char(b.ingested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC',
                    coalesce((SELECT jsonb_agg(jsonb_build_array(r.rule_name, r.severity, r.passed, r.failing_count) ORDER BY r.rule_name)
                                FROM barecount.quality_results r WHERE r.batch_id = b.batch_id), '[]')
               FROM barecount.batches b
              WHERE b.tenant_id = $1 AND b.batch_id < $2 AND ($3 = '' OR b.dataset = $3)
                AND (b.rows_quarantined > 0 OR EXISTS (SELECT 1 FROM barecount.quality_results r WHERE r.batch_id = b.batch_id))
              ORDER BY b.batch_id DESC LIMIT $4",
            &[&tenant, &before, &dataset, &(PAGE + 1)],
        )
        .await?;
    let items: Vec<Batch> = rows
        .iter()
        .map(|r| {
            let rules: serde_json::Value = r.get(8);
            Batch {
                batch_id: r.get(0),
                dataset: r.get(1),
                contract: r.get(2),
                rows_total: r.get(3),
                rows_accepted: r.get(4),
                rows_quarantined: r.get(5),
                held: r.get(6),
                ingested_at: r.get(7),
                rules: rules
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| Rule {
                                rule: x[0].as_str().unwrap_or("").to_owned(),
                                severity: x[1].as_str().unwrap_or("").to_owned(),
                                passed: x[2].as_bool().unwrap_or(false),
                                failing: x[3].as_i64().unwrap_or(0),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(Page::of(items, |b: &Batch| b.batch_id.to_string()))
}

/// One batch of the tenant and its quarantined rows (the first 200), each with every error.
pub async fn batch(db: &Db, tenant: &str, id: i64) -> R<(Batch, Vec<Held>)> {
    let page = batches_one(db, tenant, id).await?;
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT row_no, payload::text, errors,
                    CASE WHEN released_at IS NULL THEN NULL
                         ELSE 'released under ' || released_by_contract_version || ' (ledger #' || released_seq || ')' END
               FROM barecount.quarantine WHERE tenant_id = $1 AND batch_id = $2 ORDER BY row_no LIMIT 200",
            &[&tenant, &id],
        )
        .await?;
    let held = rows
        .iter()
        .map(|r| {
            let errors: serde_json::Value = r.get(2);
            Held {
                row_no: r.get(0),
                payload: r.get(1),
                errors: errors
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                format!(
                                    "{} ({}): {}",
                                    e["instance_path"]
                                        .as_str()
                                        .or_else(|| e["path"].as_str())
                                        .unwrap_or("/"),
                                    e["keyword"].as_str().unwrap_or(""),
                                    e["message"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_else(|| vec![errors.to_string()]),
                released: r.get(3),
            }
        })
        .collect();
    Ok((page, held))
}

async fn batches_one(db: &Db, tenant: &str, id: i64) -> R<Batch> {
    let client = db.client().await?;
    let exists = client
        .query_opt(
            "SELECT dataset FROM barecount.batches WHERE tenant_id = $1 AND batch_id = $2",
            &[&tenant, &id],
        )
        .await?;
    let Some(row) = exists else {
        return Err(WebError::NotFound(format!(
            "batch {id} does not exist for this tenant"
        )));
    };
    let dataset: String = row.get(0);
    batches(db, tenant, &dataset, Some(id + 1))
        .await?
        .items
        .into_iter()
        .find(|b| b.batch_id == id)
        .ok_or_else(|| WebError::NotFound(format!("batch {id} has no quarantined rows")))
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub released: i64,
    pub still_quarantined: i64,
    pub receipt: i64,
}

/// Replays a batch's quarantined rows against the dataset's latest contract
/// (`barecount.quarantine_replay`), as the tenant.
pub async fn replay(db: &Db, tenant: &str, id: i64) -> R<Replayed> {
    let b = batches_one(db, tenant, id).await?;
    let r = as_tenant(db, tenant)
        .await?
        .query_one(
            "SELECT released, still_quarantined, ledger_seq FROM barecount.quarantine_replay($1, $2)",
            &[&b.dataset, &id],
        )
        .await?;
    Ok(Replayed {
        released: r.get(0),
        still_quarantined: r.get(1),
        receipt: r.get(2),
    })
}

/// A pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub run_id: i64,
    pub pipeline: String,
    pub status: String,
    pub trigger: String,
    pub periods: String,
    pub started_at: String,
    pub seconds: Option<f64>,
    pub failed_step: Option<String>,
    pub error: Option<String>,
}

/// Usage of one kind today against the plan's limit.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub kind: String,
    pub events: i64,
    pub rows: i64,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Operations {
    pub runs: Page<Run>,
    pub schedules: Vec<String>,
    pub usage: Vec<Usage>,
    pub datasets: (i64, Option<i32>),
}

/// Pipeline runs (newest first, optionally failures only), the tenant's schedules, and
/// today's usage against its plan.
pub async fn operations(db: &Db, tenant: &str, failed: bool, before: Option<i64>) -> R<Operations> {
    let client = db.client().await?;
    let before = before.unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT run_id, pipeline, status, trigger, period_from || ' to ' || period_to,
                    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                    extract(epoch FROM finished_at - started_at)::float8, failed_step,
                    CASE WHEN error_message IS NULL THEN NULL ELSE coalesce(error_sqlstate || ': ', '') || error_message END
               FROM barecount.pipeline_runs
              WHERE tenant_id = $1 AND run_id < $2 AND (NOT $3 OR status = 'failed')
              ORDER BY run_id DESC LIMIT $4",
            &[&tenant, &before, &failed, &(PAGE + 1)],
        )
        .await?;
    let items: Vec<Run> = rows
        .iter()
        .map(|r| Run {
            run_id: r.get(0),
            pipeline: r.get(1),
            status: r.get(2),
            trigger: r.get(3),
            periods: r.get(4),
            started_at: r.get(5),
            seconds: r.get(6),
            failed_step: r.get(7),
            error: r.get(8),
        })
        .collect();
    // pg_cron's jobs of the tenant's pipelines, when pg_cron is there and its table readable
    let schedules = match client
        .query(
            "SELECT CASE WHEN to_regclass('cron.job') IS NULL THEN NULL ELSE 1 END",
            &[],
        )
        .await?
        .first()
        .and_then(|r| r.get::<_, Option<i32>>(0))
    {
        None => vec![],
        Some(_) => client
            .query(
                "SELECT substr(jobname, length($1) + 1) || ': ' || schedule || CASE WHEN active THEN '' ELSE ' (paused)' END
                   FROM cron.job WHERE starts_with(jobname, $1) ORDER BY jobname",
                &[&format!("barecount:{tenant}:")],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default(),
    };
    let usage = client
        .query(
            "SELECT k.kind, coalesce(u.events, 0), coalesce(u.rows, 0),
                    CASE k.kind WHEN 'export' THEN e.max_exports_per_day::text || ' exports'
                                WHEN 'read' THEN e.max_rows_served_per_day::text || ' rows' END
               FROM unnest(ARRAY['ingest', 'materialize', 'publish', 'export', 'read']) k(kind)
               LEFT JOIN barecount.usage u ON u.tenant_id = $1 AND u.day = (now() AT TIME ZONE 'UTC')::date AND u.kind = k.kind
               LEFT JOIN barecount.entitlements e ON e.tenant_id = $1",
            &[&tenant],
        )
        .await?
        .iter()
        .map(|r| Usage {
            kind: r.get(0),
            events: r.get(1),
            rows: r.get(2),
            limit: r.get(3),
        })
        .collect();
    let d = client
        .query_one(
            "SELECT (SELECT count(*) FROM barecount.datasets WHERE tenant_id = $1),
                    (SELECT max_datasets FROM barecount.entitlements WHERE tenant_id = $1)",
            &[&tenant],
        )
        .await?;
    Ok(Operations {
        runs: Page::of(items, |r: &Run| r.run_id.to_string()),
        schedules,
        usage,
        datasets: (d.get(0), d.get(1)),
    })
}
