//! KPIs: `kpi_define` (versioned), `kpi_materialize` (recomputes exactly the requested periods,
//! idempotently, with a receipt carrying each period's content hash) and `verify_kpi_period`.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::publish::{columns_of, Column};
use crate::staging::{assert_store_relation, relation_exists, stage};
use crate::{ledger, privilege, tenant};
use barecount_core::content_hash::ContentHasher;
use barecount_core::dag::{dependency_order, OrderError};
use barecount_core::ident::{check_dataset_name, quote_ident, quote_literal};
use barecount_core::kpi::{Kpi, KpiError};
use barecount_core::layer::Layer;
use pgrx::datum::Date;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

impl From<KpiError> for SqlError {
    fn from(e: KpiError) -> Self {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
        )
    }
}

/// Columns BareCount adds to every KPI table; not part of a period's content hash.
const BOOKKEEPING: [&str; 4] = ["tenant_id", "definition_version", "run_seq", "computed_at"];

/// Define a KPI or a new version of it (same definition again: the current version).
#[pg_extern(volatile, parallel_unsafe)]
fn kpi_define(name: &str, spec: JsonbArg) -> i32 {
    check_dataset_name("KPI", name).or_raise();
    let kpi = Kpi::parse(&spec.0).or_raise();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            tenant::lock_object(client, "kpi", &tenant_id, name)?;
            let t = client.select(
                "SELECT version, spec = $3 FROM barecount.kpis WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), JsonB(spec.0.clone()).into()],
            )?;
            let (v, same) = if t.is_empty() { (0, false) } else { let r = t.first(); (r.get::<i32>(1)?.unwrap_or(0), r.get::<bool>(2)?.unwrap_or(false)) };
            if same {
                // the source may have been dropped and created again since: its change
                // capture is put back (idempotent), or kpi_refresh would miss changes
                install_invalidation(client, &tenant_id, name, &kpi)?;
                return Ok(v);
            }
            let version = v + 1;
            if let Some(up) = upstream_kpi(&tenant_id, &kpi.source) {
                // refuse a cycle now: walk what the source KPI reads
                let mut seen = vec![name.to_owned()];
                let mut next = Some(up.to_owned());
                while let Some(n) = next.take() {
                    if seen.contains(&n) {
                        seen.push(n);
                        return Err(SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_RECURSION, format!("KPIs would depend on each other in a cycle: {}", seen.join(" -> "))));
                    }
                    seen.push(n.clone());
                    if let Ok((_, k)) = definition(client, &tenant_id, &n) {
                        next = upstream_kpi(&tenant_id, &k.source).map(str::to_owned);
                    }
                }
            }
            install_invalidation(client, &tenant_id, name, &kpi)?;
            let receipt = ledger::append(client, &tenant_id, "kpi_define", &format!("kpi:{name}@{version}"),
                &json!({"inputs": [], "outputs": [], "spec": spec.0}), None)?;
            client.update(
                "INSERT INTO barecount.kpis (tenant_id, name, version, spec, ledger_seq) VALUES ($1, $2, $3, $4, $5)",
                None,
                &[tenant_id.as_str().into(), name.into(), version.into(), JsonB(spec.0.clone()).into(), receipt.seq.into()],
            )?;
            Ok(version)
        })
    })
    .or_raise()
}

/// The KPI's calendar as a SQL literal for its queries (NULL for plain grains).
pub(crate) fn calendar_literal(kpi: &Kpi) -> String {
    kpi.calendar
        .as_deref()
        .map(quote_literal)
        .unwrap_or_else(|| "NULL".into())
}

/// The KPI's source as a quoted relation name (`gdp` when no schema is given).
fn source_relation(kpi: &Kpi) -> String {
    let (schema, table) = kpi
        .source
        .split_once('.')
        .unwrap_or(("gdp", kpi.source.as_str()));
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

pub(crate) fn definition(
    client: &SpiClient<'_>,
    tenant_id: &str,
    name: &str,
) -> Result<(i32, Kpi), SqlError> {
    let t = client.select(
        "SELECT version, spec FROM barecount.kpis WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
        Some(1),
        &[tenant_id.into(), name.into()],
    )?;
    if t.is_empty() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("KPI \"{name}\" is not defined"),
        )
        .hint("Define it with barecount.kpi_define(name, spec)."));
    }
    let r = t.first();
    let spec = r.get::<JsonB>(2)?.map(|j| j.0).unwrap_or(Value::Null);
    Ok((r.get::<i32>(1)?.unwrap_or(0), Kpi::parse(&spec)?))
}

/// Content hash per period label of a relation's rows over `cols`, plus one over all of them.
fn period_hashes(
    client: &SpiClient<'_>,
    relation: &str,
    cols: &[Column],
) -> Result<(BTreeMap<String, String>, String, i64), SqlError> {
    let pairs: Vec<(&str, &str)> = cols
        .iter()
        .map(|c| (c.name.as_str(), c.ty.as_str()))
        .collect();
    let mut per: BTreeMap<String, ContentHasher> = BTreeMap::new();
    let mut all = ContentHasher::new(&pairs);
    let cells: Vec<String> = cols
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect();
    for r in client.select(
        &format!(
            "SELECT period::text, ARRAY[{}]::text[] FROM {relation}",
            cells.join(", ")
        ),
        None,
        &[],
    )? {
        pgrx::check_for_interrupts!();
        let label = r.get::<String>(1)?.unwrap_or_default();
        let values = r.get::<Vec<Option<String>>>(2)?.unwrap_or_default();
        let h = per
            .entry(label)
            .or_insert_with(|| ContentHasher::new(&pairs));
        h.add_row(&values)
            .map_err(|e| SqlError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()))?;
        all.add_row(&values)
            .map_err(|e| SqlError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()))?;
    }
    let rows = all.row_count() as i64;
    Ok((
        per.into_iter().map(|(k, h)| (k, h.finish())).collect(),
        all.finish(),
        rows,
    ))
}

/// Content hash per period of a KPI table's stored rows of a tenant (one period, or all),
/// over the KPI's own columns (not BareCount's bookkeeping).
fn stored_hashes(
    client: &SpiClient<'_>,
    target: &str,
    tenant_id: &str,
    period: Option<&str>,
) -> Result<BTreeMap<String, String>, SqlError> {
    let cols: Vec<Column> = columns_of(client, target)?
        .into_iter()
        .filter(|c| !BOOKKEEPING.contains(&c.name.as_str()))
        .collect();
    let only = period
        .map(|p| format!(" AND period = {}", quote_literal(p)))
        .unwrap_or_default();
    let rel = format!(
        "(SELECT * FROM {target} WHERE tenant_id = {}{only}) t",
        quote_literal(tenant_id)
    );
    Ok(period_hashes(client, &rel, &cols)?.0)
}

const STAGING: &str = "barecount_kpi_staging";

/// Materializes the periods whose first day lies in [from, to] (SQL date literals). The KPI's
/// query runs as the caller; the table write and receipt are privileged.
fn materialize(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    from: &str,
    to: &str,
) -> Result<(i64, i64, i64), SqlError> {
    let tenant_id = tenant_id.to_owned();
    // one materialization of a KPI at a time: a second one over overlapping periods waits,
    // then (at READ COMMITTED) deletes what the first wrote, so no period is doubled or lost
    tenant::lock_object(client, "kpi_materialize", &tenant_id, name)?;
    let (version, kpi) = definition(client, &tenant_id, name)?;
    let calendar = calendar_literal(&kpi);
    let query = kpi.query(&calendar);
    let query = query.replace("$1", from).replace("$2", to);
    // the KPI's query runs as the caller, with its privileges and row-level security
    let staged = stage(client, &format!("KPI \"{name}\""), STAGING, &query)?;
    let cols = columns_of(client, &staged)?;
    let (periods, all_hash, rows) = period_hashes(client, &staged, &cols)?;
    let out = privilege::as_owner(|| {
        let target = tenant::relation(&tenant_id, Layer::Kpi, name);
        let mut exists = relation_exists(client, &target)?;
        if exists {
            // written as barecount_owner: only a table BareCount owns, with no user code
            assert_store_relation(client, &target, &format!("the table of KPI \"{name}\""))?;
            let have: Vec<String> = columns_of(client, &target)?
                .into_iter()
                .map(|c| c.name)
                .filter(|n| !BOOKKEEPING.contains(&n.as_str()))
                .collect();
            let want: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
            if have != want {
                let old: Option<i32> = client
                    .select(
                        &format!("SELECT max(definition_version) FROM {target}"),
                        Some(1),
                        &[],
                    )?
                    .first()
                    .get::<i32>(1)?;
                if old.is_some_and(|o| o >= version) {
                    return Err(SqlError::new(
                        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                        format!("KPI \"{name}\" now has columns {want:?}, its table {target} has {have:?}"),
                    )
                    .hint("Redefine the KPI with barecount.kpi_define: a new version with other measures or dimensions materializes into a new table."));
                }
                // a new version changed the measures or dimensions: it materializes into a new
                // table; the old version's rows are kept as <name>__v<old>
                let keep = format!("{name}__v{}", old.unwrap_or(0));
                let kept = tenant::relation(&tenant_id, Layer::Kpi, &keep);
                if relation_exists(client, &kept)? {
                    return Err(SqlError::new(
                        PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                        format!("KPI \"{name}\": its old version's table cannot be kept as {kept}, which exists"),
                    )
                    .hint("Rename or drop that table, then materialize again."));
                }
                client.update(
                    &format!("ALTER TABLE {target} RENAME TO {}", quote_ident(&keep)),
                    None,
                    &[],
                )?;
                exists = false;
            }
        }
        if !exists {
            client.update(
                    &format!(
                        "CREATE TABLE {target} AS SELECT ''::text AS tenant_id, s.*, 0 AS definition_version, 0::bigint AS run_seq, \
                         now() AS computed_at FROM {staged} s WITH NO DATA; \
                         ALTER TABLE {target} ALTER COLUMN tenant_id SET NOT NULL; \
                         COMMENT ON TABLE {target} IS {}",
                        quote_literal(&format!("BareCount KPI {name}: one row per period and dimension values"))
                    ),
                    None,
                    &[],
                )?;
        }
        if let Some(cal) = &kpi.calendar {
            // rows of closed calendar periods change only through a restatement
            client.update(
                "SELECT barecount.period_guard($1::regclass, 'period_start', $2, $3)",
                None,
                &[
                    target.as_str().into(),
                    cal.as_str().into(),
                    kpi.grain.as_str().into(),
                ],
            )?;
        }
        let period_json: Map<String, Value> = periods
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let receipt = ledger::append(
            client,
            &tenant_id,
            "kpi_materialize",
            &format!("{}.{name}", tenant::schema(&tenant_id, Layer::Kpi)),
            &json!({"inputs": [kpi.source], "outputs": [], "definition_version": version,
                        "from": from.to_owned(), "to": to.to_owned(), "periods": period_json, "rows": rows}),
            Some(&all_hash),
        )?;
        let names: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
        client.update(
            &format!(
                "DELETE FROM {target} WHERE tenant_id = $1 AND period_start BETWEEN {} AND {}",
                from.to_owned(),
                to.to_owned()
            ),
            None,
            &[tenant_id.as_str().into()],
        )?;
        client.update(
                &format!(
                    "INSERT INTO {target} (tenant_id, {cols}, definition_version, run_seq, computed_at) \
                     SELECT $1, {cols}, $2, $3, now() FROM {staged}",
                    cols = names.join(", ")
                ),
                None,
                &[tenant_id.as_str().into(), version.into(), receipt.seq.into()],
            )?;
        evaluate_thresholds(client, &tenant_id, name, &kpi, receipt.seq)?;
        crate::series::watch(client, &tenant_id, name, &kpi, from, to)?;
        crate::access::meter(client, &tenant_id, "materialize", rows, 0)?;
        Ok((periods.len() as i64, rows, receipt.seq))
    })?;
    client.update(&format!("DROP TABLE {staged}"), None, &[])?;
    Ok(out)
}

/// Recompute the periods of a KPI whose first day lies in [from, to], atomically: same inputs,
/// same rows, same hashes. The receipt records each period's content hash.
#[pg_extern(volatile, parallel_unsafe)]
fn kpi_materialize(
    name: &str,
    from: Date,
    to: Date,
) -> TableIterator<
    'static,
    (
        name!(periods, i64),
        name!(row_count, i64),
        name!(ledger_seq, i64),
    ),
> {
    for (what, v) in [("from", from), ("to", to)] {
        if v.is_infinity() || v.is_neg_infinity() {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                format!("KPI \"{name}\": the range's {what} bound is infinite"),
            )
            .hint("Materialize a finite range of dates, e.g. '2024-01-01' to '2024-12-31'.")
            .raise()
        }
    }
    let d = |d: Date| format!("'{}-{:02}-{:02}'::date", d.year(), d.month(), d.day());
    let row = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        materialize(client, &tenant_id, name, &d(from), &d(to))
    })
    .or_raise();
    TableIterator::once(row)
}

/// Recompute one KPI period's content hash from its stored rows and compare it with the hash
/// its latest materialization receipt recorded.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn verify_kpi_period(
    name: &str,
    period: &str,
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(recorded_hash, Option<String>),
        name!(computed_hash, String),
        name!(receipt_seq, Option<i64>),
    ),
> {
    let row = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let target = tenant::relation(&tenant_id, Layer::Kpi, name);
            let exists = relation_exists(client, &target)?;
            if !exists {
                return Err(SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("KPI \"{name}\" has not been materialized")));
            }
            let per = stored_hashes(client, &target, &tenant_id, Some(period))?;
            let computed = per.get(period).cloned().unwrap_or_default();
            let t = client.select(
                "SELECT seq, inputs->'periods'->>$3 FROM barecount.ledger \
                  WHERE tenant_id = $1 AND event_type = 'kpi_materialize' AND subject = $2 AND inputs->'periods' ? $3 \
                  ORDER BY seq DESC LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), format!("{}.{name}", tenant::schema(&tenant_id, Layer::Kpi)).into(), period.into()],
            )?;
            let (seq, recorded) = if t.is_empty() { (None, None) } else { let r = t.first(); (r.get::<i64>(1)?, r.get::<String>(2)?) };
            Ok((recorded.as_deref() == Some(computed.as_str()) && !computed.is_empty(), recorded, computed, seq))
        })
    })
    .or_raise();
    TableIterator::once(row)
}

/// Statement triggers on the KPI's source note the days that inserts, updates and deletes
/// touch, so `kpi_refresh` recomputes exactly the affected periods, however old.
fn install_invalidation(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    kpi: &Kpi,
) -> Result<(), SqlError> {
    // a tenant's KPI reads its own layer schemas (or the shared raw stores), never another's
    tenant::check_owns(tenant_id, &kpi.source, "KPI source")?;
    let source = source_relation(kpi);
    let exists = relation_exists(client, &source)?;
    if !exists {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("KPI source {} does not exist", kpi.source),
        ));
    }
    if !is_table(client, &source)? {
        // Postgres allows no transition-table triggers on views (raw.<dataset>__accepted,
        // published.*) or foreign tables: kpi_refresh compares each period's content hash
        // with a fresh computation instead
        return Ok(());
    }
    // the trigger reads the source's rows as barecount_owner: only a store table BareCount
    // owns, with no user code, may carry one
    assert_store_relation(client, &source, &format!("KPI source {}", kpi.source))?;
    let args = format!(
        "{}, {}, {}",
        quote_literal(name),
        quote_literal(&kpi.time),
        quote_literal(tenant_id)
    );
    for (suffix, event, referencing) in [
        ("ins", "INSERT", "NEW TABLE AS new_rows"),
        (
            "upd",
            "UPDATE",
            "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        ),
        ("del", "DELETE", "OLD TABLE AS old_rows"),
    ] {
        // one set per tenant and KPI: a tenant never replaces another's
        let trigger = quote_ident(&format!("barecount_kpi_{tenant_id}_{name}_{suffix}"));
        client.update(
            &format!(
                "CREATE OR REPLACE TRIGGER {trigger} AFTER {event} ON {source} REFERENCING {referencing} \
                 FOR EACH STATEMENT EXECUTE FUNCTION barecount._kpi_invalidate({args}); \
                 COMMENT ON TRIGGER {trigger} ON {source} IS {}",
                quote_literal(&format!("BareCount: notes the days changed rows fall on, for kpi_refresh of KPI {name}"))
            ),
            None,
            &[],
        )?;
    }
    Ok(())
}

/// Whether the three change-capture triggers of a KPI are on its source table and enabled.
fn capture_intact(
    client: &SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    source: &str,
) -> Result<bool, SqlError> {
    let names: Vec<String> = ["ins", "upd", "del"]
        .iter()
        .map(|s| format!("barecount_kpi_{tenant_id}_{name}_{s}"))
        .collect();
    Ok(client
        .select(
            "SELECT count(*) = 3 FROM pg_catalog.pg_trigger \
              WHERE tgrelid = to_regclass($1) AND tgname = ANY($2) AND tgenabled <> 'D'",
            Some(1),
            &[source.into(), names.into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}

/// Whether a relation is a plain or partitioned table (not a view or foreign table).
fn is_table(client: &SpiClient<'_>, relation: &str) -> Result<bool, SqlError> {
    Ok(client
        .select(
            "SELECT relkind IN ('r', 'p') FROM pg_catalog.pg_class WHERE oid = to_regclass($1)",
            Some(1),
            &[relation.into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}

/// For a KPI over a view: the first days of the periods whose freshly computed rows differ
/// from the stored ones (by content hash), or that exist on one side only.
fn changed_starts(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    kpi: &Kpi,
) -> Result<Vec<String>, SqlError> {
    let calendar = calendar_literal(kpi);
    let query = kpi
        .query(&calendar)
        .replace("$1", "'1900-01-01'::date")
        .replace("$2", "'2200-12-31'::date");
    let staged = stage(client, &format!("KPI \"{name}\""), STAGING, &query)?;
    let cols = columns_of(client, &staged)?;
    let (fresh, _, _) = period_hashes(client, &staged, &cols)?;
    let mut starts: BTreeMap<String, String> = BTreeMap::new();
    for r in client.select(
        &format!("SELECT DISTINCT period::text, period_start::text FROM {staged}"),
        None,
        &[],
    )? {
        if let (Some(p), Some(d)) = (r.get::<String>(1)?, r.get::<String>(2)?) {
            starts.insert(p, d);
        }
    }
    client.update(&format!("DROP TABLE {staged}"), None, &[])?;
    let stored = privilege::as_owner(|| {
        let target = tenant::relation(tenant_id, Layer::Kpi, name);
        if !relation_exists(client, &target)? {
            return Ok(BTreeMap::new());
        }
        let per = stored_hashes(client, &target, tenant_id, None)?;
        for r in client.select(
            &format!("SELECT DISTINCT period::text, period_start::text FROM {target} WHERE tenant_id = $1"),
            None,
            &[tenant_id.into()],
        )? {
            if let (Some(p), Some(d)) = (r.get::<String>(1)?, r.get::<String>(2)?) {
                starts.entry(p).or_insert(d);
            }
        }
        Ok(per)
    })?;
    let mut out: Vec<String> = starts
        .iter()
        .filter(|(p, _)| fresh.get(*p) != stored.get(*p))
        .map(|(_, d)| d.clone())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Recompute the periods of a KPI whose source rows changed since they were materialized —
/// however old — and only those.
#[pg_extern(volatile, parallel_unsafe)]
fn kpi_refresh(
    name: &str,
) -> TableIterator<
    'static,
    (
        name!(periods, i64),
        name!(row_count, i64),
        name!(last_ledger_seq, Option<i64>),
    ),
> {
    let row = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        // KPIs built on other KPIs: the upstream ones first, each once
        let order = upstream_order(client, &tenant_id, name)?;
        let mut total = (0, 0, None);
        for n in &order {
            let (p, r, s) = refresh_one(client, &tenant_id, n)?;
            if n == name {
                total = (p, r, s);
            }
        }
        Ok::<_, SqlError>(total)
    })
    .or_raise();
    TableIterator::once(row)
}

/// The KPI a source names, when it is one in the tenant's kpi schema (`kpi.<x>` or
/// `kpi_<tenant>.<x>`): the name `<x>`.
fn upstream_kpi<'a>(tenant_id: &str, source: &'a str) -> Option<&'a str> {
    source
        .split_once('.')
        .filter(|(schema, _)| *schema == tenant::schema(tenant_id, Layer::Kpi))
        .map(|(_, name)| name)
}

/// The KPIs this one reads (source kpi.<x> with x defined), upstream first, itself last; a
/// cycle is an error.
fn upstream_order(
    client: &SpiClient<'_>,
    tenant_id: &str,
    name: &str,
) -> Result<Vec<String>, SqlError> {
    dependency_order(name, |n| {
        let (_, kpi) = definition(client, tenant_id, n)?;
        Ok(upstream_kpi(tenant_id, &kpi.source)
            .filter(|up| definition(client, tenant_id, up).is_ok())
            .map(|up| vec![up.to_owned()])
            .unwrap_or_default())
    })
    .map_err(|e| match e {
        OrderError::Cycle(c) => SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_RECURSION,
            format!("KPIs depend on each other in a cycle: {}", c.join(" -> ")),
        ),
        OrderError::Lookup(e) => e,
    })
}

fn refresh_one(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
) -> Result<(i64, i64, Option<i64>), SqlError> {
    let tenant_id = tenant_id.to_owned();
    {
        let (_, kpi) = definition(client, &tenant_id, name)?;
        let calendar = calendar_literal(&kpi);
        let source = source_relation(&kpi);
        let table = is_table(client, &source)?;
        let starts: Vec<String> = if !table {
            changed_starts(client, &tenant_id, name, &kpi)?
        } else if !capture_intact(client, &tenant_id, name, &source)? {
            // the change-capture triggers are gone or disabled (the table was created again,
            // or its owner dropped or disabled them): the invalidation log cannot be trusted,
            // so every period is compared by content hash, and the capture is put back
            let starts = changed_starts(client, &tenant_id, name, &kpi)?;
            privilege::as_owner(|| {
                client.update(
                    "DELETE FROM barecount.kpi_invalidations WHERE tenant_id = $1 AND kpi = $2",
                    None,
                    &[tenant_id.as_str().into(), name.into()],
                )?;
                install_invalidation(client, &tenant_id, name, &kpi)
            })?;
            starts
        } else {
            privilege::as_owner(|| {
                let sql = format!(
                "SELECT DISTINCT ({start})::text FROM (SELECT day AS {time} FROM barecount.kpi_invalidations \
                  WHERE tenant_id = $1 AND kpi = $2) s ORDER BY 1",
                start = kpi.period_start_sql(&calendar),
                time = quote_ident(&kpi.time)
            );
                let mut out = Vec::new();
                for r in client.select(&sql, None, &[tenant_id.as_str().into(), name.into()])? {
                    if let Some(s) = r.get::<String>(1)? {
                        out.push(s);
                    }
                }
                client.update(
                    "DELETE FROM barecount.kpi_invalidations WHERE tenant_id = $1 AND kpi = $2",
                    None,
                    &[tenant_id.as_str().into(), name.into()],
                )?;
                Ok(out)
            })?
        };
        let (mut rows, mut last) = (0, None);
        for start in &starts {
            let lit = format!("{}::date", quote_literal(start));
            let (_, r, seq) = materialize(client, &tenant_id, name, &lit, &lit)?;
            rows += r;
            last = Some(seq);
        }
        Ok((starts.len() as i64, rows, last))
    }
}

/// SQL for a KPI row's dimension values as a jsonb object (`'{}'` without dimensions).
pub(crate) fn dims_sql(kpi: &Kpi) -> String {
    if kpi.dimensions.is_empty() {
        "'{}'::jsonb".to_owned()
    } else {
        format!(
            "jsonb_build_object({})",
            kpi.dimensions
                .iter()
                .map(|d| format!("{}, {}", quote_literal(d), quote_ident(d)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Compares each threshold's level on the rows a run wrote with the level last seen for the
/// same KPI, measure, period and dimension values; every change becomes a breach or recovery
/// event in the outbox and on the NOTIFY channel barecount_kpi_events. Privileged section.
fn evaluate_thresholds(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    kpi: &Kpi,
    run_seq: i64,
) -> Result<(), SqlError> {
    let target = tenant::relation(tenant_id, Layer::Kpi, name);
    let dims = dims_sql(kpi);
    for t in &kpi.thresholds {
        let sql = format!(
            "WITH now_levels AS (
               SELECT period, {dims} AS dims, ({col})::float8 AS value, {level} AS level
                 FROM {target} WHERE tenant_id = $1 AND run_seq = $4),
             changed AS (
               SELECT n.*, coalesce(s.level, 'ok') AS was
                 FROM now_levels n
                 LEFT JOIN barecount.kpi_threshold_state s
                   ON s.tenant_id = $1 AND s.kpi = $2 AND s.measure = $3 AND s.period = n.period AND s.dims = n.dims
                WHERE coalesce(s.level, 'ok') <> n.level),
             events AS (
               INSERT INTO barecount.kpi_events (tenant_id, kpi, measure, period, dims, value, level, kind, run_seq)
               SELECT $1, $2, $3, period, dims, value, level,
                      CASE WHEN level = 'ok' OR (was = 'critical' AND level = 'warn') THEN 'recovery' ELSE 'breach' END, $4
                 FROM changed
               RETURNING event_id, kpi, measure, period, dims, value, level, kind),
             outbox AS (
               INSERT INTO barecount.events (tenant_id, kind, subject, payload)
               SELECT $1, 'threshold', 'kpi:' || e.kpi || '/' || e.period,
                      jsonb_build_object('event_id', e.event_id, 'kpi', e.kpi, 'measure', e.measure, 'period', e.period,
                                         'dims', e.dims, 'value', e.value, 'level', e.level, 'kind', e.kind)
                 FROM events e RETURNING 1)
             SELECT count(pg_notify('barecount_kpi_events', '')) + (SELECT count(pg_notify('barecount_events', '')) FROM outbox)
               FROM events e",
            col = quote_ident(&t.measure),
            level = t.level_sql(),
        );
        client.update(
            &sql,
            None,
            &[
                tenant_id.into(),
                name.into(),
                t.measure.as_str().into(),
                run_seq.into(),
            ],
        )?;
        client.update(
            &format!(
                "INSERT INTO barecount.kpi_threshold_state AS st (tenant_id, kpi, measure, period, dims, level)
                 SELECT $1, $2, $3, period, {dims}, {level} FROM {target} WHERE tenant_id = $1 AND run_seq = $4
                 ON CONFLICT (tenant_id, kpi, measure, period, dims) DO UPDATE SET level = excluded.level",
                level = t.level_sql()
            ),
            None,
            &[tenant_id.into(), name.into(), t.measure.as_str().into(), run_seq.into()],
        )?;
    }
    Ok(())
}
