//! `ingest`: rows into a raw store, each checked against its contract; failures to quarantine.

use crate::contracts::{errors_json, governing, Governing};
use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::{Batch, BatchRow, JsonbDatum, JsonbText};
use crate::{access, ledger, privilege, settings, tenant};
use barecount_core::content_hash::ContentHasher;
use barecount_core::contract::ErrorBudget;
use barecount_core::ident::quote_ident;
use barecount_core::quality::{self, Check};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};

pub(crate) type Ingested = (i64, i64, i64, i64);

/// Ingest a JSON array of rows into raw.<dataset>; rows failing the contract go to quarantine.
#[pg_extern(volatile, parallel_unsafe)]
fn ingest(
    dataset: &str,
    rows: JsonbDatum,
) -> TableIterator<
    'static,
    (
        name!(batch_id, i64),
        name!(accepted, i64),
        name!(quarantined, i64),
        name!(ledger_seq, i64),
    ),
> {
    let batch = Batch::from_jsonb(&rows).or_raise();
    TableIterator::once(ingest_batch(dataset, not_an_array(dataset, batch)))
}

/// Ingest an array of jsonb rows (e.g. `array_agg(j)` over a query). A name of its own, so
/// that `ingest('orders', '[...]')` with an untyped literal stays unambiguous.
#[pg_extern(volatile, parallel_unsafe)]
fn ingest_rows(
    dataset: &str,
    rows: Vec<Option<JsonbText>>,
) -> TableIterator<
    'static,
    (
        name!(batch_id, i64),
        name!(accepted, i64),
        name!(quarantined, i64),
        name!(ledger_seq, i64),
    ),
> {
    let mut texts = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        match r {
            Some(j) => texts.push(j.0),
            None => SqlError::new(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("row {} for dataset \"{dataset}\" is NULL", i + 1),
            )
            .hint("Filter NULLs out before ingesting; a row is a JSON object.")
            .raise(),
        }
    }
    TableIterator::once(ingest_batch(dataset, Batch::from_texts(texts)))
}

/// Ingest every row of a staging table or view (each row as a JSON object of its columns).
/// The table is read with the caller's privileges.
#[pg_extern(volatile, parallel_unsafe)]
fn ingest_table(
    dataset: &str,
    source: &str,
) -> TableIterator<
    'static,
    (
        name!(batch_id, i64),
        name!(accepted, i64),
        name!(quarantined, i64),
        name!(ledger_seq, i64),
    ),
> {
    let rows = Spi::connect(|client| {
        crate::connectors::read_table(client, dataset, source, false).map(|(_, rows, _)| rows)
    })
    .or_raise();
    TableIterator::once(ingest_text(dataset, rows))
}

fn ingest_text(dataset: &str, text: String) -> Ingested {
    let batch = Batch::from_array_text(text).or_raise();
    ingest_batch(dataset, not_an_array(dataset, batch))
}

/// The batch, or the error for a document that is not an array.
fn not_an_array<'a>(dataset: &str, batch: Option<Batch<'a>>) -> Batch<'a> {
    batch.unwrap_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("rows for dataset \"{dataset}\" must be a JSON array of objects"),
        )
        .hint("Wrap a single row in [ ... ], or aggregate rows with jsonb_agg(...).")
        .raise()
    })
}

fn ingest_batch(dataset: &str, batch: Batch<'_>) -> Ingested {
    // No user SQL runs here, so the whole ingest is a privileged section.
    Spi::connect_mut(|client| privilege::as_owner(|| run(client, dataset, &batch))).or_raise()
}

fn run(client: &mut SpiClient<'_>, dataset: &str, batch: &Batch<'_>) -> Result<Ingested, SqlError> {
    let tenant_id = tenant::current(client)?;
    crate::govern::policy::enforce_caller(
        client,
        "ingest",
        dataset,
        serde_json::json!({"rows": batch.rows.len()}),
    )?;
    run_for(client, &tenant_id, dataset, batch)
}

/// The ingest of a batch for `tenant_id` (the caller's tenant, or for gateways the tenant of
/// the credential that sent the rows). Runs inside the privileged section.
pub(crate) fn run_for(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    batch: &Batch<'_>,
) -> Result<Ingested, SqlError> {
    let items = &batch.rows;
    let tenant_id = tenant_id.to_owned();
    let g = governing(&tenant_id, dataset).map_err(|e| {
        if e.code == PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT {
            // for ingest the dataset itself is unknown: there is no raw store to write to
            SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("dataset \"{dataset}\" has no contract, so no raw store"))
                .hint("Register a contract whose schema lists this dataset with barecount.contract_register(...).")
        } else {
            e
        }
    })?;

    let mut bad_rows: Vec<i32> = Vec::new();
    // row i (0-based) failed: looked up per row, so a batch of bad rows stays linear
    let mut is_bad = vec![false; items.len()];
    // every bad row's error document, bound as one jsonb array (one parse, not one per row)
    let mut bad_errors: Vec<Value> = Vec::new();
    let mut payload_bytes: i64 = 0;
    let mut budget = ErrorBudget::new(
        settings::MAX_ERRORS_PER_ROW.get().max(1) as usize,
        settings::MAX_ERROR_BYTES_PER_BATCH.get().max(0) as usize,
    );
    let mut hasher = ContentHasher::new(&[("row_no", "integer"), ("payload", "jsonb")]);
    for (i, row) in items.iter().enumerate() {
        let row_no = i32::try_from(i + 1).map_err(|_| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                "too many rows in one batch",
            )
            .hint("Split the batch into batches of at most 2^31-1 rows.")
        })?;
        pgrx::check_for_interrupts!();
        let errors = row.errors(&g.validator);
        let canonical = row.canonical();
        if !errors.is_empty() {
            let errors = budget.admit(errors);
            bad_rows.push(row_no);
            is_bad[i] = true;
            bad_errors.push(errors_json(&errors));
        }
        payload_bytes += canonical.len() as i64;
        hasher
            .add_row(&[Some(row_no.to_string().as_str()), Some(&canonical)])
            .map_err(|e| SqlError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()))?;
    }
    let quality = check_quality(client, &tenant_id, dataset, &g, items, &is_bad)?;
    if let Some(blocking) = quality.iter().find(|q| q.blocking && q.failing > 0) {
        // a blocking rule failed: the whole batch waits in quarantine
        let note = JsonB(json!([{
            "instance_path": "",
            "keyword": "quality",
            "message": format!("the batch failed blocking quality rule {} ({} failing)", blocking.name, blocking.failing),
        }]));
        for (i, bad) in is_bad.iter_mut().enumerate() {
            if !*bad {
                *bad = true;
                bad_rows.push(i as i32 + 1);
                bad_errors.push(note.0.clone());
            }
        }
    }
    let total = items.len() as i64;
    let quarantined = bad_rows.len() as i64;
    let accepted = total - quarantined;
    let content_hash = hasher.finish();

    let batch_id = client
        .update(
            "SELECT nextval(pg_get_serial_sequence('barecount.batches', 'batch_id'))",
            Some(1),
            &[],
        )?
        .first()
        .get::<i64>(1)?
        .unwrap_or_default();
    let receipt = ledger::append(
        client,
        &tenant_id,
        "ingest",
        &format!("batch:{batch_id}"),
        &json!({
            "inputs": [format!("contract:{}@{}", g.contract, g.version)],
            "outputs": [format!("raw.{dataset}")],
            "batch_id": batch_id,
            "dataset": dataset,
            "contract": g.contract,
            "contract_version": g.version,
            "rows": total,
            "accepted": accepted,
            "quarantined": quarantined,
            "quality": quality.iter().map(|q| json!({"rule": q.name, "passed": q.failing == 0, "failing": q.failing, "blocking": q.blocking})).collect::<Vec<_>>(),
        }),
        Some(&content_hash),
    )?;
    client.update(
        "INSERT INTO barecount.batches \
           (tenant_id, batch_id, dataset, contract, contract_version, rows_total, rows_accepted, \
            rows_quarantined, content_hash, ledger_seq) \
         OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        None,
        &[
            tenant_id.as_str().into(),
            batch_id.into(),
            dataset.into(),
            g.contract.as_str().into(),
            g.version.as_str().into(),
            total.into(),
            accepted.into(),
            quarantined.into(),
            content_hash.as_str().into(),
            receipt.seq.into(),
        ],
    )?;
    client.update(
        &format!(
            "INSERT INTO raw.{} (tenant_id, batch_id, row_no, payload, contract, contract_version, valid) \
             SELECT $1, $2, e.n, e.p, $5, $6, ($4::bool[])[e.n] \
               FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(p, n)",
            quote_ident(dataset)
        ),
        None,
        &[
            tenant_id.as_str().into(),
            batch_id.into(),
            batch.payload_arg(),
            is_bad.iter().map(|b| !b).collect::<Vec<bool>>().into(),
            g.contract.as_str().into(),
            g.version.as_str().into(),
        ],
    )?;
    if quarantined > 0 {
        client.update(
            "INSERT INTO barecount.quarantine (tenant_id, batch_id, dataset, row_no, payload, errors) \
             SELECT $1, $2, $3, q.n, $4::jsonb -> (q.n - 1), $6::jsonb -> (q.i::int - 1) \
               FROM unnest($5::int[]) WITH ORDINALITY AS q(n, i)",
            None,
            &[
                tenant_id.as_str().into(),
                batch_id.into(),
                dataset.into(),
                batch.payload_arg(),
                bad_rows.clone().into(),
                JsonB(Value::Array(bad_errors)).into(),
            ],
        )?;
        ledger::append(
            client,
            &tenant_id,
            "quarantine",
            &format!("quarantine:batch:{batch_id}"),
            &json!({
                "inputs": [format!("batch:{batch_id}")],
                "outputs": [],
                "batch_id": batch_id,
                "dataset": dataset,
                // the quarantined row numbers as [first, last] ranges: a batch of bad rows
                // records a few pairs, not one number per row
                "row_ranges": barecount_core::ledger::row_ranges(&bad_rows),
                "count": quarantined,
                "ingest_seq": receipt.seq,
            }),
            None,
        )?;
    }
    for q in &quality {
        client.update(
            "INSERT INTO barecount.quality_results \
               (tenant_id, batch_id, dataset, rule_name, rule, severity, passed, failing_count, failing_sample) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            None,
            &[
                tenant_id.as_str().into(),
                batch_id.into(),
                dataset.into(),
                q.name.as_str().into(),
                JsonB(q.rule.clone()).into(),
                (if q.blocking { "blocking" } else { "warning" }).into(),
                (q.failing == 0).into(),
                (q.failing as i64).into(),
                JsonB(Value::Array(q.sample.clone())).into(),
            ],
        )?;
    }
    access::meter(client, &tenant_id, "ingest", total, payload_bytes)?;
    if quarantined > 0 {
        crate::pipelines::emit(
            client,
            &tenant_id,
            "quarantine",
            &format!("batch:{batch_id}"),
            &serde_json::json!({"dataset": dataset, "batch_id": batch_id, "accepted": accepted,
                                "quarantined": quarantined, "ledger_seq": receipt.seq}),
        )?;
    }
    Ok((batch_id, accepted, quarantined, receipt.seq))
}

/// One quality rule's result for a batch.
struct QualityResult {
    name: String,
    rule: Value,
    blocking: bool,
    failing: u64,
    sample: Vec<Value>,
}

/// Evaluates the contract version's quality rules on the rows that passed row validation,
/// completing `unique` against the rows already accepted and `references` against the
/// referenced table, both within the tenant. Runs inside the privileged section.
fn check_quality(
    client: &SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    g: &Governing,
    items: &[BatchRow<'_>],
    is_bad: &[bool],
) -> Result<Vec<QualityResult>, SqlError> {
    let defined = client
        .select(
            "SELECT quality FROM barecount.contract_datasets \
              WHERE tenant_id = $1 AND dataset = $2 AND contract = $3 AND contract_version = $4",
            Some(1),
            &[
                tenant_id.into(),
                dataset.into(),
                g.contract.as_str().into(),
                g.version.as_str().into(),
            ],
        )?
        .first()
        .get::<JsonB>(1)?
        .map(|j| j.0)
        .unwrap_or(Value::Null);
    let rules = quality::parse(dataset, defined.as_array().map_or(&[][..], Vec::as_slice))?;
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let today = client
        .select(
            "SELECT ((now() AT TIME ZONE 'UTC')::date - DATE '1970-01-01')::int8",
            Some(1),
            &[],
        )?
        .first()
        .get::<i64>(1)?
        .unwrap_or(0);
    let values: Vec<std::borrow::Cow<'_, Value>> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| !is_bad[*i])
        .filter_map(|(_, r)| r.value())
        .collect();
    let valid: Vec<&Value> = values.iter().map(|v| v.as_ref()).collect();
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let mut o = quality::evaluate(&rule, &valid, today);
        let property = rule.property.clone().unwrap_or_default();
        let found: Vec<String> = match &rule.check {
            Check::Unique if !o.lookup.is_empty() => client
                .select(
                    &format!(
                        "SELECT DISTINCT payload->>$3 FROM raw.{} WHERE tenant_id = $1 AND payload->>$3 = ANY($2)",
                        quote_ident(&format!("{dataset}__accepted"))
                    ),
                    None,
                    &[tenant_id.into(), o.lookup.clone().into(), property.as_str().into()],
                )?
                .filter_map(|r| r.get::<String>(1).ok().flatten())
                .collect(),
            Check::References { table, column } if !o.lookup.is_empty() => {
                let (schema, rel) = table.split_once('.').unwrap_or(("", ""));
                tenant::check_owns(tenant_id, table, "table referenced by a quality rule,")?;
                let qualified = format!("{}.{}", quote_ident(schema), quote_ident(rel));
                // read as barecount_owner: only BareCount's raw views, or a store table it owns
                // that carries no user code (a user view, cast or type could run as it)
                let ours = client
                    .select(
                        "SELECT c.relkind = 'v' AND c.relnamespace = 'raw'::regnamespace \
                                AND pg_get_userbyid(c.relowner) = 'barecount_owner' \
                           FROM pg_class c WHERE c.oid = to_regclass($1)",
                        Some(1),
                        &[qualified.as_str().into()],
                    )?;
                let known = !ours.is_empty();
                if known && !ours.first().get::<bool>(1)?.unwrap_or(false) {
                    crate::staging::assert_store_relation(
                        client,
                        &qualified,
                        &format!("table {table} referenced by a quality rule of dataset \"{dataset}\""),
                    )?;
                }
                client
                    .select(
                        &format!(
                            "SELECT k FROM unnest($2::text[]) AS k WHERE NOT EXISTS \
                               (SELECT 1 FROM {}.{} t WHERE t.tenant_id = $1 AND t.{}::text = k)",
                            quote_ident(schema),
                            quote_ident(rel),
                            quote_ident(column)
                        ),
                        None,
                        &[tenant_id.into(), o.lookup.clone().into()],
                    )?
                    .filter_map(|r| r.get::<String>(1).ok().flatten())
                    .collect()
            }
            _ => Vec::new(),
        };
        o.failing += found.len() as u64;
        o.sample
            .extend(found.into_iter().take(10).map(Value::String));
        o.sample.truncate(10);
        out.push(QualityResult {
            name: rule.name,
            rule: rule.definition,
            blocking: rule.blocking,
            failing: o.failing,
            sample: o.sample,
        });
    }
    Ok(out)
}
