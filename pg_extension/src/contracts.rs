//! Contract registry and row validation: `contract_register`, `validate`, `validation_errors`.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::{jsonb_error, Batch, JsonbDatum};
use crate::{evolution, ledger, privilege, readonly, tenant};
use barecount_core::contract::{Contract, RowError, RowValidator};
use barecount_core::ident::quote_ident;
use barecount_core::jsonb::Node;
use barecount_core::ledger::canonical_json;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Register a data contract version from its YAML or JSON text.
#[pg_extern(volatile, parallel_unsafe)]
fn contract_register(
    source: &str,
) -> TableIterator<
    'static,
    (
        name!(contract, String),
        name!(version, String),
        name!(created, bool),
        name!(ledger_seq, i64),
    ),
> {
    let contract = Contract::parse(source).or_raise();
    // No user SQL runs here, so the whole registration is a privileged section.
    let row =
        Spi::connect_mut(|client| privilege::as_owner(|| register(client, &contract, source)))
            .or_raise();
    TableIterator::once(row)
}

fn register(
    client: &mut SpiClient<'_>,
    c: &Contract,
    source: &str,
) -> Result<(String, String, bool, i64), SqlError> {
    let tenant_id = tenant::current(client)?;
    let version = c.version.to_string();
    let digest = hex::encode(Sha256::digest(canonical_json(&c.document)));
    tenant::lock_object(client, "contract", &tenant_id, &c.name)?;

    let existing = client.select(
        "SELECT source_sha256, ledger_seq FROM barecount.contracts \
         WHERE tenant_id = $1 AND contract = $2 AND version = $3",
        Some(1),
        &[
            tenant_id.as_str().into(),
            c.name.as_str().into(),
            version.as_str().into(),
        ],
    )?;
    if !existing.is_empty() {
        let row = existing.first();
        let old_digest = row.get::<String>(1)?.unwrap_or_default();
        let seq = row.get::<i64>(2)?.unwrap_or_default();
        if old_digest == digest {
            return Ok((c.name.clone(), version, false, seq));
        }
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!(
                "contract \"{}\" version {} is already registered with different content",
                c.name, version
            ),
        )
        .detail("Registered contract versions are immutable.")
        .hint(
            "Bump the contract's version (e.g. to the next minor or major) and register it again.",
        ));
    }

    evolution::check_registration(client, &tenant_id, c)?;
    for s in &c.schemas {
        let owner = client.select(
            "SELECT contract FROM barecount.contract_datasets \
             WHERE tenant_id = $1 AND dataset = $2 AND contract <> $3 LIMIT 1",
            Some(1),
            &[
                tenant_id.as_str().into(),
                s.name.as_str().into(),
                c.name.as_str().into(),
            ],
        )?;
        if !owner.is_empty() {
            let other = owner.first().get::<String>(1)?.unwrap_or_default();
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("dataset \"{}\" is already governed by contract \"{other}\"", s.name),
            )
            .hint("A dataset belongs to one contract; register a new version of that contract instead."));
        }
    }

    let datasets: Vec<&str> = c.schemas.iter().map(|s| s.name.as_str()).collect();
    let receipt = ledger::append(
        client,
        &tenant_id,
        "contract_register",
        &format!("contract:{}@{}", c.name, version),
        &json!({
            "inputs": [],
            "outputs": datasets.iter().map(|d| format!("raw.{d}")).collect::<Vec<_>>(),
            "contract": c.name,
            "version": version,
            "datasets": datasets,
        }),
        Some(&digest),
    )?;
    let sort = vec![
        c.version.major as i64,
        c.version.minor as i64,
        c.version.patch as i64,
        i64::from(c.version.pre.is_none()),
    ];
    client.update(
        "INSERT INTO barecount.contracts \
           (tenant_id, contract, version, version_sort, status, document, source_text, source_sha256, unsupported, ledger_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        None,
        &[
            tenant_id.as_str().into(),
            c.name.as_str().into(),
            version.as_str().into(),
            sort.into(),
            c.status.as_str().into(),
            JsonB(c.document.clone()).into(),
            source.into(),
            digest.as_str().into(),
            c.unsupported_fields().into(),
            receipt.seq.into(),
        ],
    )?;
    for s in &c.schemas {
        client.update(
            "INSERT INTO barecount.contract_datasets \
               (tenant_id, contract, contract_version, dataset, row_schema, primary_key, quality) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            None,
            &[
                tenant_id.as_str().into(),
                c.name.as_str().into(),
                version.as_str().into(),
                s.name.as_str().into(),
                JsonB(s.row_schema.clone()).into(),
                s.primary_key.clone().into(),
                JsonB(Value::Array(s.quality.clone())).into(),
            ],
        )?;
        create_raw_store(client, &s.name)?;
    }
    Ok((c.name.clone(), version, true, receipt.seq))
}

/// `raw.<dataset>` holds every received row, valid or not, append-only; the view
/// `raw.<dataset>__accepted` holds the rows that flow on: valid on receipt, or released from
/// quarantine by a replay.
fn create_raw_store(client: &mut SpiClient<'_>, dataset: &str) -> Result<(), SqlError> {
    let t = format!("raw.{}", quote_ident(dataset));
    let v = format!("raw.{}", quote_ident(&format!("{dataset}__accepted")));
    let why = "raw stores are append-only";
    let hint = "Ingest a correcting batch instead.";
    client.update(
        &format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                tenant_id        text NOT NULL,
                batch_id         bigint NOT NULL,
                row_no           integer NOT NULL,
                payload          jsonb NOT NULL,
                contract         text NOT NULL,
                contract_version text NOT NULL,
                valid            boolean NOT NULL,
                received_at      timestamptz NOT NULL DEFAULT now(),
                -- tenant first: a tenant's scans (row-level security adds tenant_id = $0) read
                -- the index only
                PRIMARY KEY (tenant_id, batch_id, row_no));
             COMMENT ON TABLE {t} IS 'BareCount raw store for dataset {dataset}: every received row with its batch, contract version and validity on receipt; append-only';
             SELECT barecount._protect_table('{t}'::regclass);
             GRANT SELECT ON {t} TO barecount_engineer, barecount_publisher;
             -- every row's batch exists, of the same tenant: checked once per statement over
             -- the rows it inserted (a foreign key checked each row on its own, ~40 % of an
             -- ingest's time)
             CREATE OR REPLACE TRIGGER raw_batch_exists AFTER INSERT ON {t}
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION barecount._raw_batches_exist();
             COMMENT ON TRIGGER raw_batch_exists ON {t} IS 'Refuses rows whose batch does not exist for their tenant (23503), once per statement';
             CREATE OR REPLACE TRIGGER raw_append_only BEFORE UPDATE OR DELETE ON {t}
                FOR EACH ROW EXECUTE FUNCTION barecount._refuse_write('{why}', '{hint}');
             CREATE OR REPLACE TRIGGER raw_no_truncate BEFORE TRUNCATE ON {t}
                FOR EACH STATEMENT EXECUTE FUNCTION barecount._refuse_write('{why}', '{hint}');
             COMMENT ON TRIGGER raw_append_only ON {t} IS 'Refuses UPDATE and DELETE: {why}';
             COMMENT ON TRIGGER raw_no_truncate ON {t} IS 'Refuses TRUNCATE: {why}';
             CREATE OR REPLACE VIEW {v} WITH (security_invoker = true) AS
               SELECT r.* FROM {t} r
                WHERE r.valid
                   OR EXISTS (SELECT 1 FROM barecount.quarantine q
                               WHERE q.batch_id = r.batch_id AND q.row_no = r.row_no AND q.released_at IS NOT NULL);
             COMMENT ON VIEW {v} IS 'BareCount: rows of raw store {dataset} that flow on (valid on receipt or released by a replay)';
             GRANT SELECT ON {v} TO barecount_engineer, barecount_publisher;"
        ),
        None,
        &[],
    )?;
    Ok(())
}

/// The contract version governing a dataset, with its compiled validator.
pub struct Governing {
    pub contract: String,
    pub version: String,
    pub validator: Rc<RowValidator>,
}

type CacheKey = (String, String, String, String);

thread_local! {
    /// Compiled row schemas per backend. Contract versions are immutable, so an entry never goes
    /// stale; registering a new version changes which key the lookup picks.
    static VALIDATORS: RefCell<HashMap<CacheKey, Rc<RowValidator>>> = RefCell::new(HashMap::new());
}

/// The contract version governing `name`: a dataset (its latest governing version), a
/// contract with a single dataset, or either pinned as `name@version`.
///
/// Read-only SPI (see readonly.rs): row validation runs inside parallel queries.
pub fn governing(tenant_id: &str, name: &str) -> Result<Governing, SqlError> {
    let (name, pinned) = match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    };
    let latest = readonly::rows(
        "SELECT d.contract, d.contract_version, d.dataset \
           FROM barecount.contract_datasets d \
           JOIN barecount.contracts c \
             ON c.tenant_id = d.tenant_id AND c.contract = d.contract AND c.version = d.contract_version \
          WHERE d.tenant_id = $1 AND ($3::text IS NULL OR d.contract_version = $3) \
            AND (d.dataset = $2 OR (d.contract = $2 AND NOT EXISTS ( \
                   SELECT 1 FROM barecount.contract_datasets x \
                    WHERE x.tenant_id = d.tenant_id AND x.contract = d.contract \
                      AND x.contract_version = d.contract_version AND x.dataset <> d.dataset))) \
          ORDER BY (d.dataset = $2) DESC, c.version_sort DESC LIMIT 1",
        &[Some(tenant_id), Some(name), pinned],
    )?;
    let Some(row) = latest.into_iter().next() else {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            match pinned {
                Some(v) => format!("no registered contract version {v} declares dataset (or is the single-dataset contract) \"{name}\""),
                None => format!("no registered contract declares dataset \"{name}\""),
            },
        )
        .hint("Register a contract whose schema lists this dataset with barecount.contract_register(...)."));
    };
    let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let (contract, version, dataset) = (cell(0), cell(1), cell(2));
    let dataset = dataset.as_str();
    let key = (
        tenant_id.to_owned(),
        contract.clone(),
        version.clone(),
        dataset.to_owned(),
    );
    if let Some(v) = VALIDATORS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(Governing {
            contract,
            version,
            validator: v,
        });
    }
    let schema = match readonly::one(
        "SELECT row_schema::text FROM barecount.contract_datasets \
          WHERE tenant_id = $1 AND dataset = $2 AND contract = $3 AND contract_version = $4",
        &[
            Some(tenant_id),
            Some(dataset),
            Some(&contract),
            Some(&version),
        ],
    )? {
        Some(text) => crate::jsonarg::parse(&text)?,
        None => Value::Null,
    };
    let validator = Rc::new(RowValidator::new(dataset, &schema)?);
    VALIDATORS.with(|c| c.borrow_mut().insert(key, validator.clone()));
    Ok(Governing {
        contract,
        version,
        validator,
    })
}

/// The row's root, checked as the text path checks it, or the error for a row that is not an
/// object.
fn row_node<'a>(dataset: &str, row: &'a JsonbDatum) -> Node<'a> {
    let node = row.node().or_raise();
    if !matches!(node, Node::Object(_)) {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "a row of dataset \"{dataset}\" must be a JSON object, not {}",
                node.kind()
            ),
        )
        .hint(
            "Pass one row as a JSON object; ingest quarantines non-object rows of a batch instead.",
        )
        .raise()
    }
    node
}

/// (statement, name, validator)
type Resolved = ((u32, u32, i64), String, Rc<RowValidator>);

thread_local! {
    /// The validator `validate` resolved for a name in the current statement. Within one
    /// statement the tenant and the registered versions cannot change (the statement's snapshot
    /// is fixed), so a query validating a million rows resolves its contract once, not per row.
    static RESOLVED: RefCell<Option<Resolved>> = const { RefCell::new(None) };
}

fn statement_validator(name: &str) -> Rc<RowValidator> {
    let statement = crate::privilege::statement_key();
    if let Some(v) = RESOLVED.with(|r| {
        r.borrow()
            .as_ref()
            .filter(|(s, n, _)| *s == statement && n == name)
            .map(|(_, _, v)| v.clone())
    }) {
        return v;
    }
    let g = readonly::tenant()
        .and_then(|tenant_id| governing(&tenant_id, name))
        .or_raise();
    RESOLVED.with(|r| *r.borrow_mut() = Some((statement, name.to_owned(), g.validator.clone())));
    g.validator
}

// Parallel safety (audited for issue 13): validate, validation_errors and validate_batch are
// PARALLEL SAFE. They read the governing contract with read-only SPI (readonly.rs: no new
// command, allowed in a parallel operation) as the caller (no role switch: `governing` does not
// enter a privileged section), cache compiled validators in per-process thread_locals (a worker
// builds its own), and write nothing. Validation itself is pure core code.
/// True when the row satisfies the latest contract version governing the dataset.
#[pg_extern(stable, parallel_safe)]
fn validate(dataset: &str, row: JsonbDatum) -> bool {
    // read in place: the compiled validator runs over the jsonb's own bytes (issue 14)
    let node = row_node(dataset, &row);
    statement_validator(dataset)
        .is_valid_jsonb(node)
        .map_err(jsonb_error)
        .or_raise()
}

/// Every reason the row fails the latest contract version governing the dataset.
#[pg_extern(stable, parallel_safe)]
fn validation_errors(
    dataset: &str,
    row: JsonbDatum,
) -> TableIterator<
    'static,
    (
        name!(instance_path, String),
        name!(keyword, String),
        name!(message, String),
    ),
> {
    let node = row_node(dataset, &row);
    let errors: Vec<RowError> = statement_validator(dataset)
        .errors_jsonb(node)
        .map_err(jsonb_error)
        .or_raise();
    TableIterator::new(
        errors
            .into_iter()
            .map(|e| (e.instance_path, e.keyword, e.message)),
    )
}

/// Set-based validation of a whole batch (a JSON array): one row per input row with its
/// verdict and errors, without ingesting anything.
#[pg_extern(stable, parallel_safe)]
fn validate_batch(
    dataset: &str,
    rows: JsonbDatum,
) -> TableIterator<'static, (name!(row_no, i32), name!(valid, bool), name!(errors, JsonB))> {
    let Some(batch) = Batch::from_jsonb(&rows).or_raise() else {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("a batch for dataset \"{dataset}\" must be a JSON array of rows"),
        )
        .hint("Aggregate rows with jsonb_agg(...).")
        .raise()
    };
    let g = readonly::tenant()
        .and_then(|tenant_id| governing(&tenant_id, dataset))
        .or_raise();
    let out: Vec<(i32, bool, JsonB)> = batch
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            pgrx::check_for_interrupts!();
            let errors = row.errors(&g.validator);
            (i as i32 + 1, errors.is_empty(), JsonB(errors_json(&errors)))
        })
        .collect();
    TableIterator::new(out)
}

/// Errors as stored in quarantine: a JSON array of {instance_path, keyword, message}.
pub fn errors_json(errors: &[RowError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| json!({"instance_path": e.instance_path, "keyword": e.keyword, "message": e.message}))
            .collect(),
    )
}
