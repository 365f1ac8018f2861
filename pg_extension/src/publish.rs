//! `publish`: an immutable, content-hashed version of a dataset and a view of the latest one.

use crate::errors::{OrRaise, SqlError};
use crate::staging::{stage, stamp_tenant};
use crate::{access, ledger, obligations, privilege, tenant};
use barecount_core::content_hash::ContentHasher;
use barecount_core::entitlement::Limit;
use barecount_core::ident::{check_dataset_name, quote_ident, quote_literal};
use barecount_core::layer::Layer;
use barecount_core::source::{classify, lineage_ref, relations_in_plan, Source};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};

/// One column of a published version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: String,
    nullable: bool,
}

/// Publish the rows of a query, table or view as the next immutable version of a dataset.
#[pg_extern(volatile, parallel_unsafe)]
fn publish(
    dataset: &str,
    source: &str,
) -> TableIterator<
    'static,
    (
        name!(dataset, String),
        name!(version, i32),
        name!(row_count, i64),
        name!(content_hash, String),
        name!(ledger_seq, i64),
        name!(ledger_hash, String),
    ),
> {
    check_dataset_name("dataset", dataset).or_raise();
    let row = Spi::connect_mut(|client| run(client, dataset, source)).or_raise();
    TableIterator::once(row)
}

fn source_query(client: &SpiClient<'_>, dataset: &str, source: &str) -> Result<String, SqlError> {
    let rel_name = match classify(source) {
        Source::Query(q) => return Ok(q.to_owned()),
        Source::Relation(r) => r,
        Source::Empty => {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("source for dataset \"{dataset}\" is empty"),
            )
            .hint("Pass a SELECT query or the name of a table or view."))
        }
    };
    let rel = client
        .select("SELECT to_regclass($1)::text", Some(1), &[rel_name.into()])?
        .first()
        .get::<String>(1)?;
    let is_kpi = |r: &str| {
        matches!(
            barecount_core::layer::layer_of(r.split_once('.').map_or("", |(s, _)| s)),
            Some((Layer::Kpi, _))
        )
    };
    match rel {
        // a KPI table's run bookkeeping is not part of what is published, so republishing
        // unchanged values gives the same content hash
        Some(r) if is_kpi(&r) => {
            let cols = client
                .select(
                    "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
                      WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped \
                        AND attname NOT IN ('run_seq', 'computed_at')",
                    Some(1),
                    &[r.as_str().into()],
                )?
                .first()
                .get::<String>(1)?
                .unwrap_or_else(|| "*".into());
            Ok(format!("SELECT {cols} FROM {r}"))
        }
        Some(r) => Ok(format!("SELECT * FROM {r}")),
        None => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("source \"{source}\" for dataset \"{dataset}\" is neither a query nor an existing table or view"),
        )
        .hint("Pass a SELECT query, or a table name such as kpi.daily_sales.")),
    }
}

pub(crate) fn columns_of(client: &SpiClient<'_>, relation: &str) -> Result<Vec<Column>, SqlError> {
    let rows = client.select(
        "SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull \
           FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped \
          ORDER BY attnum",
        None,
        &[relation.into()],
    )?;
    let mut out = Vec::new();
    for r in rows {
        out.push(Column {
            name: r.get::<String>(1)?.unwrap_or_default(),
            ty: r.get::<String>(2)?.unwrap_or_default(),
            nullable: r.get::<bool>(3)?.unwrap_or(true),
        });
    }
    Ok(out)
}

fn columns_json(cols: &[Column], numeric: &[(String, i64, i64)]) -> Value {
    Value::Array(
        cols.iter()
            .map(|c| {
                let mut col = json!({"name": c.name, "type": c.ty, "nullable": c.nullable});
                if let Some((_, p, s)) = numeric.iter().find(|(n, _, _)| *n == c.name) {
                    col["precision"] = json!(p);
                    col["scale"] = json!(s);
                }
                col
            })
            .collect(),
    )
}

/// Hashes a relation's rows with the canonical content encoding (barecount-content-v1).
pub(crate) fn content_hash(
    client: &SpiClient<'_>,
    relation: &str,
    cols: &[Column],
) -> Result<(String, i64), SqlError> {
    let pairs: Vec<(&str, &str)> = cols
        .iter()
        .map(|c| (c.name.as_str(), c.ty.as_str()))
        .collect();
    let mut hasher = ContentHasher::new(&pairs);
    let cells: Vec<String> = cols
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect();
    let query = format!("SELECT ARRAY[{}]::text[] FROM {relation}", cells.join(", "));
    for row in client.select(&query, None, &[])? {
        pgrx::check_for_interrupts!();
        let values = row.get::<Vec<Option<String>>>(1)?.unwrap_or_default();
        hasher
            .add_row(&values)
            .map_err(|e| SqlError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()))?;
    }
    let n = hasher.row_count() as i64;
    Ok((hasher.finish(), n))
}

/// Where the source's rows wait between the caller's query and the privileged copy.
const STAGING: &str = "barecount_publish_staging";

type Published = (String, i32, i64, String, i64, String);

fn run(client: &mut SpiClient<'_>, dataset: &str, source: &str) -> Result<Published, SqlError> {
    let tenant_id = tenant::current(client)?;
    crate::govern::policy::enforce_caller(client, "publish", dataset, serde_json::json!({}))?;
    let query = source_query(client, dataset, source)?;
    let what = format!("source for dataset \"{dataset}\"");
    let inputs = plan_inputs(client, &what, &query)?;
    // columns the source reads from a table column declared NOT NULL stay NOT NULL
    let not_null = crate::usersql::not_null_origins(client, &what, &query)?;
    // The source runs as the caller: its privileges and row-level security decide what it reads.
    let staged = stage(
        client,
        &format!("source for dataset \"{dataset}\""),
        STAGING,
        &query,
    )?;
    finite_values_only(client, dataset, &staged)?;
    let out = privilege::as_owner(|| {
        publish_staged(
            client, dataset, source, &tenant_id, &inputs, &staged, &not_null,
        )
    })?;
    client.update(&format!("DROP TABLE {staged}"), None, &[])?;
    Ok(out)
}

/// Refuses a version with an infinite date or timestamp (`'infinity'`, `'-infinity'`) or a
/// numeric NaN or infinity: no client type (Arrow's Date32, Timestamp and decimals, Parquet,
/// CSV readers) can hold one, so a single such value would make the whole version unservable.
/// Names the first such column. (double precision NaN and infinities are fine: Arrow floats
/// hold them.)
fn finite_values_only(client: &SpiClient<'_>, dataset: &str, staged: &str) -> Result<(), SqlError> {
    let checked: Vec<(Column, bool)> = columns_of(client, staged)?
        .into_iter()
        .filter_map(|c| {
            let numeric = c.ty == "numeric" || c.ty.starts_with("numeric(");
            let dated = c.ty == "date" || c.ty.starts_with("timestamp");
            (numeric || dated).then_some((c, numeric))
        })
        .collect();
    if checked.is_empty() {
        return Ok(());
    }
    // one scan counts the non-finite values of every such column
    let counts: Vec<String> = checked
        .iter()
        .map(|(c, numeric)| {
            let col = quote_ident(&c.name);
            if *numeric {
                format!("count(*) FILTER (WHERE {col} IN ('NaN', 'Infinity', '-Infinity'))")
            } else {
                format!("count(*) FILTER (WHERE NOT isfinite({col}))")
            }
        })
        .collect();
    let row = int8_aggregates(client, staged, &counts)?;
    match checked.iter().zip(row).find(|(_, n)| *n > 0) {
        None => Ok(()),
        Some(((c, true), n)) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "source for dataset \"{dataset}\": column {} holds {n} NaN or infinite value(s) ({})",
                c.name, c.ty
            ),
        )
        .hint("Published versions are read as exact decimals, which have no NaN or infinity: map them to NULL in the source, or cast the column to double precision.")),
        Some(((c, false), n)) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            format!(
                "source for dataset \"{dataset}\": column {} holds {n} infinite value(s) ({})",
                c.name, c.ty
            ),
        )
        .hint("Published versions are read by clients whose date and time types have no infinity: map it to NULL or a real date in the source.")),
    }
}

/// One scan of `relation`: each expression (an aggregate whose value fits int8), in order.
fn int8_aggregates(
    client: &SpiClient<'_>,
    relation: &str,
    exprs: &[String],
) -> Result<Vec<i64>, SqlError> {
    Ok(client
        .select(
            &format!("SELECT ARRAY[{}]::int8[] FROM {relation}", exprs.join(", ")),
            Some(1),
            &[],
        )?
        .first()
        .get::<Vec<i64>>(1)?
        .unwrap_or_default())
}

/// The columns to declare NOT NULL, and (name, precision, scale) per unconstrained numeric.
type Measured = (Vec<String>, Vec<(String, i64, i64)>);

/// What a new version's columns are, measured in one scan:
/// - the columns to declare NOT NULL: their source column is declared NOT NULL and they hold
///   no NULL (an outer join can bring one under such a column);
/// - for each unconstrained `numeric` column, the digits its values need and how many of them
///   follow the point (name, precision, scale), so clients can be served an exact decimal of
///   that size (Flight: Decimal128, Decimal256 or text).
fn measure_version(
    client: &SpiClient<'_>,
    relation: &str,
    cols: &[Column],
    declared: &[String],
) -> Result<Measured, SqlError> {
    let candidates: Vec<&Column> = cols
        .iter()
        .filter(|c| c.nullable && declared.contains(&c.name))
        .collect();
    let free: Vec<&Column> = cols.iter().filter(|c| c.ty == "numeric").collect();
    let mut exprs: Vec<String> = candidates
        .iter()
        .map(|c| format!("count(*) FILTER (WHERE {} IS NULL)", quote_ident(&c.name)))
        .collect();
    for c in &free {
        let col = quote_ident(&c.name);
        exprs.push(format!("coalesce(max(length(trunc(abs({col}))::text)), 1)"));
        exprs.push(format!("coalesce(max(scale({col})), 0)"));
    }
    if exprs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let found = int8_aggregates(client, relation, &exprs)?;
    let (nulls, extents) = found.split_at(candidates.len().min(found.len()));
    let not_null = candidates
        .iter()
        .zip(nulls)
        .filter(|(_, n)| **n == 0)
        .map(|(c, _)| c.name.clone())
        .collect();
    let extents = free
        .iter()
        .zip(extents.chunks(2))
        .map(|(c, ps)| {
            let (int_digits, scale) = (
                ps.first().copied().unwrap_or(1),
                ps.get(1).copied().unwrap_or(0),
            );
            (c.name.clone(), int_digits + scale, scale)
        })
        .collect();
    Ok((not_null, extents))
}

/// Declares NOT NULL on `columns` of `relation`, in one ALTER.
fn declare_not_null(
    client: &mut SpiClient<'_>,
    relation: &str,
    columns: &[String],
) -> Result<(), SqlError> {
    if columns.is_empty() {
        return Ok(());
    }
    let alters: Vec<String> = columns
        .iter()
        .map(|c| format!("ALTER COLUMN {} SET NOT NULL", quote_ident(c)))
        .collect();
    client.update(
        &format!("ALTER TABLE {relation} {}", alters.join(", ")),
        None,
        &[],
    )?;
    Ok(())
}

/// The lineage names of the relations the source reads, from its plan (views expanded).
pub(crate) fn plan_inputs(
    client: &mut SpiClient<'_>,
    what: &str,
    query: &str,
) -> Result<Vec<String>, SqlError> {
    crate::usersql::one_query(what, query)?;
    // a utility statement, so not through the read-only select path
    let plan = client
        .update(
            &format!("EXPLAIN (VERBOSE, FORMAT JSON) {query}"),
            None,
            &[],
        )?
        .first()
        .get::<pgrx::Json>(1)?
        .map(|j| j.0)
        .unwrap_or(Value::Null);
    Ok(relations_in_plan(&plan)
        .into_iter()
        .filter_map(|(schema, rel)| lineage_ref(&schema, &rel))
        .filter(|r| !r.starts_with("pg_temp"))
        .collect())
}

/// Copies the staged rows into the next immutable version; runs as the extension owner.
fn publish_staged(
    client: &mut SpiClient<'_>,
    dataset: &str,
    source: &str,
    tenant_id: &str,
    inputs: &[String],
    staged: &str,
    not_null: &[String],
) -> Result<Published, SqlError> {
    let tenant_id = tenant_id.to_owned();
    // dataset names are the tenant's own: its versions live in its published schema
    tenant::lock_object(client, "publish", &tenant_id, dataset)?;
    let published = tenant::schema(&tenant_id, Layer::Published);

    let prev = client.select(
        "SELECT v.version, v.columns FROM barecount.datasets d \
           JOIN barecount.dataset_versions v \
             ON v.tenant_id = d.tenant_id AND v.dataset = d.dataset AND v.version = d.latest_version \
          WHERE d.tenant_id = $1 AND d.dataset = $2",
        Some(1),
        &[tenant_id.as_str().into(), dataset.into()],
    )?;
    let (prev_version, prev_columns) = if prev.is_empty() {
        (0, Value::Null)
    } else {
        let r = prev.first();
        (
            r.get::<i32>(1)?.unwrap_or(0),
            r.get::<JsonB>(2)?.map(|j| j.0).unwrap_or(Value::Null),
        )
    };
    if prev_version == 0 {
        access::enforce(client, &tenant_id, Limit::Datasets, 1)?;
    }
    access::enforce(client, &tenant_id, Limit::PublishedVersions, 1)?;
    let version = prev_version + 1;
    let table = format!("{dataset}__v{version}");
    let relation = tenant::relation(&tenant_id, Layer::Published, &table);
    let view = tenant::relation(&tenant_id, Layer::Published, dataset);

    client.update(
        &format!("CREATE TABLE {relation} AS SELECT * FROM {staged}"),
        None,
        &[],
    )?;
    let mut cols = columns_of(client, &relation)?;
    if cols.is_empty() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("source for dataset \"{dataset}\" returns no columns"),
        ));
    }
    let (declare, numeric) = measure_version(client, &relation, &cols, not_null)?;
    declare_not_null(client, &relation, &declare)?;
    stamp_tenant(
        client,
        &format!("source for dataset \"{dataset}\""),
        &relation,
        &tenant_id,
        &cols,
    )?;
    cols = columns_of(client, &relation)?;
    let (hash, row_count) = content_hash(client, &relation, &cols)?;
    let bytes = client
        .select(
            "SELECT pg_total_relation_size($1::regclass)",
            Some(1),
            &[relation.as_str().into()],
        )?
        .first()
        .get::<i64>(1)?
        .unwrap_or(0);
    let cols_json = columns_json(&cols, &numeric);

    let why = quote_literal("published versions are immutable");
    let hint = quote_literal("Publish a new version instead.");
    client.update(
        &format!(
            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {relation} FROM PUBLIC;
             CREATE TRIGGER published_immutable BEFORE INSERT OR UPDATE OR DELETE ON {relation}
                FOR EACH STATEMENT EXECUTE FUNCTION barecount._refuse_write({why}, {hint});
             CREATE TRIGGER published_no_truncate BEFORE TRUNCATE ON {relation}
                FOR EACH STATEMENT EXECUTE FUNCTION barecount._refuse_write({why}, {hint});
             COMMENT ON TRIGGER published_immutable ON {relation} IS {why};
             COMMENT ON TRIGGER published_no_truncate ON {relation} IS {why};
             COMMENT ON TABLE {relation} IS {};
             SELECT barecount._protect_table('{relation}'::regclass);
             GRANT SELECT ON {relation} TO barecount_reader;",
            quote_literal(&format!(
                "BareCount published dataset {dataset}, version {version} (immutable); content hash {hash}"
            ))
        ),
        None,
        &[],
    )?;
    // A latest view whose columns only grow can be replaced in place; otherwise recreate it.
    let grows = prev_columns.as_array().is_some_and(|old| {
        cols_json
            .as_array()
            .is_some_and(|new| new.len() >= old.len() && new[..old.len()] == old[..])
    });
    if prev_version > 0 && !grows {
        client.update(&format!("DROP VIEW {view}"), None, &[])?;
    }
    client.update(
        &format!(
            "CREATE OR REPLACE VIEW {view} WITH (security_invoker = true) AS SELECT * FROM {relation};
             GRANT SELECT ON {view} TO barecount_reader;
             COMMENT ON VIEW {view} IS {};",
            quote_literal(&format!(
                "BareCount published dataset {dataset}: latest version ({version})"
            ))
        ),
        None,
        &[],
    )?;

    let subject = format!("{published}.{dataset}@{version}");
    let warnings = obligations::enforce(client, &tenant_id, "publish", dataset, &subject, inputs)?;
    let receipt = ledger::append(
        client,
        &tenant_id,
        "publish",
        &subject,
        &json!({
            "inputs": inputs,
            "outputs": [format!("{published}.{dataset}")],
            "dataset": dataset,
            "version": version,
            "source": source,
            "row_count": row_count,
            "obligation_warnings": warnings,
        }),
        Some(&hash),
    )?;
    if prev_version == 0 {
        client.update(
            "INSERT INTO barecount.datasets (tenant_id, dataset, latest_version) VALUES ($1, $2, $3)",
            None,
            &[tenant_id.as_str().into(), dataset.into(), version.into()],
        )?;
    } else {
        client.update(
            "UPDATE barecount.datasets SET latest_version = $3 WHERE tenant_id = $1 AND dataset = $2",
            None,
            &[tenant_id.as_str().into(), dataset.into(), version.into()],
        )?;
    }
    client.update(
        "INSERT INTO barecount.dataset_versions \
           (tenant_id, dataset, version, relation, source, columns, row_count, bytes, content_hash, ledger_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        None,
        &[
            tenant_id.as_str().into(),
            dataset.into(),
            version.into(),
            format!("{published}.{table}").into(),
            source.into(),
            JsonB(cols_json).into(),
            row_count.into(),
            bytes.into(),
            hash.as_str().into(),
            receipt.seq.into(),
        ],
    )?;
    access::meter(client, &tenant_id, "publish", row_count, bytes)?;
    // LISTEN is open to every role, so the shared channel carries a wake-up and no tenant
    // data: listeners read what changed back through row-level security (dataset_versions).
    client.update("SELECT pg_notify('barecount_publish', '')", None, &[])?;
    crate::pipelines::emit(
        client,
        &tenant_id,
        "publish",
        &format!("{published}.{dataset}@{version}"),
        &serde_json::json!({"dataset": dataset, "version": version, "rows": row_count,
                            "content_hash": hash, "ledger_seq": receipt.seq}),
    )?;
    Ok((
        dataset.to_owned(),
        version,
        row_count,
        hash,
        receipt.seq,
        receipt.entry_hash,
    ))
}
