//! Lineage from the ledger: `lineage_upstream`, `lineage_downstream`.

use crate::errors::{OrRaise, SqlError};
use crate::{privilege, tenant};
use barecount_core::lineage::{self, Hop, Step};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::Value;
use std::collections::HashMap;

fn refs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The tenant's ledger as lineage steps, plus quarantined rows outstanding per batch.
/// Runs inside a privileged section.
pub fn load(
    client: &SpiClient<'_>,
    tenant_id: &str,
) -> Result<(Vec<Step>, HashMap<String, i64>), SqlError> {
    let mut steps = Vec::new();
    let mut quarantined = HashMap::new();
    let rows = client.select(
        "SELECT seq, event_type, subject, inputs FROM barecount.ledger WHERE tenant_id = $1 ORDER BY seq",
        None,
        &[tenant_id.into()],
    )?;
    for r in rows {
        let event_type = r.get::<String>(2)?.unwrap_or_default();
        let subject = r.get::<String>(3)?.unwrap_or_default();
        let inputs = r.get::<JsonB>(4)?.map(|j| j.0).unwrap_or(Value::Null);
        if event_type == "ingest" {
            let q = inputs
                .get("quarantined")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            quarantined.insert(subject.clone(), q);
        }
        if event_type == "replay" {
            if let Some(Value::Object(released)) = inputs.get("released") {
                for (batch, rows) in released {
                    let n = rows.as_array().map_or(0, Vec::len) as i64;
                    if let Some(q) = quarantined.get_mut(batch) {
                        *q -= n;
                    }
                }
            }
        }
        steps.push(Step {
            seq: r.get::<i64>(1)?.unwrap_or_default(),
            event_type,
            subject,
            inputs: refs(&inputs, "inputs"),
            outputs: refs(&inputs, "outputs"),
        });
    }
    Ok((steps, quarantined))
}

/// `published.<ds>` (the tenant's published schema) means its latest version; everything else
/// is taken as written.
fn resolve(client: &SpiClient<'_>, tenant_id: &str, object: &str) -> Result<String, SqlError> {
    let published = tenant::schema(tenant_id, barecount_core::layer::Layer::Published);
    if let Some(ds) = object.strip_prefix(&format!("{published}.")) {
        if !ds.contains('@') {
            let v = client
                .select(
                    "SELECT latest_version FROM barecount.datasets WHERE tenant_id = $1 AND dataset = $2",
                    Some(1),
                    &[tenant_id.into(), ds.into()],
                )?
                .first()
                .get::<i32>(1)
                .unwrap_or(None);
            if let Some(v) = v {
                return Ok(format!("{published}.{ds}@{v}"));
            }
        }
    }
    Ok(object.to_owned())
}

type Hops = Vec<(i32, String, i64, String)>;

fn walk(object: &str, depth: i32, up: bool) -> Hops {
    if depth < 0 {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "depth must not be negative",
        )
        .raise()
    }
    let hops: Vec<Hop> = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let (steps, _) = load(client, &tenant_id)?;
            let start = resolve(client, &tenant_id, object)?;
            if !steps.iter().any(|s| s.subject == start || s.outputs.contains(&start) || s.inputs.contains(&start)) {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("\"{object}\" appears in no ledger entry of this tenant"),
                )
                .hint("Name a published version (published.sales@3), dataset (published.sales), raw store (raw.orders), batch (batch:7) or contract (contract:orders@1.0.0)."));
            }
            Ok(if up { lineage::upstream(&steps, &start, depth as u32) } else { lineage::downstream(&steps, &start, depth as u32) })
        })
    })
    .or_raise();
    hops.into_iter()
        .map(|h| (h.depth as i32, h.object, h.via_seq, h.via_event))
        .collect()
}

/// Everything a published version, table, batch or contract came from, as recorded in the ledger.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn lineage_upstream(
    object: &str,
    depth: default!(i32, 10),
) -> TableIterator<
    'static,
    (
        name!(depth, i32),
        name!(object, String),
        name!(via_seq, i64),
        name!(via_event, String),
    ),
> {
    TableIterator::new(walk(object, depth, true))
}

/// Everything recorded as made from an object, as recorded in the ledger.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn lineage_downstream(
    object: &str,
    depth: default!(i32, 10),
) -> TableIterator<
    'static,
    (
        name!(depth, i32),
        name!(object, String),
        name!(via_seq, i64),
        name!(via_event, String),
    ),
> {
    TableIterator::new(walk(object, depth, false))
}
