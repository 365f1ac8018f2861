//! GDP models: `model_define` registers a SQL model that conforms raw data into `gdp.<name>`;
//! `model_run` runs it (and the models it reads first, in dependency order), checks its output
//! against the model's GDP contract, replaces the tenant's rows and writes a receipt naming its
//! inputs.

use crate::contracts::{errors_json, governing};
use crate::errors::{OrRaise, SqlError};
use crate::publish::{columns_of, content_hash, plan_inputs};
use crate::staging::{assert_store_relation, relation_exists, stage, stamp_tenant};
use crate::{ledger, privilege, tenant};
use barecount_core::dag::{dependency_order, OrderError};
use barecount_core::ident::{check_dataset_name, quote_ident};
use barecount_core::layer::Layer;
use barecount_core::source::{classify, Source};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{json, Value};

/// Register (or replace) a model: a SELECT whose rows become `gdp.<name>`, optionally checked
/// against the dataset `contract` governs. Returns the model's version.
#[pg_extern(volatile, parallel_unsafe)]
fn model_define(
    name: Option<&str>,
    sql: Option<&str>,
    contract: default!(Option<&str>, "NULL"),
) -> i32 {
    let name = crate::errors::required(name, "model_define", "name");
    let sql = crate::errors::required(sql, "model_define", "sql");
    check_dataset_name("model", name).or_raise();
    let Source::Query(query) = classify(sql) else {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("model \"{name}\" must be a SELECT query"),
        )
        .raise()
    };
    let what = format!("model \"{name}\"");
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        // plan it as the caller: a model that does not plan is refused now, not at run time
        let inputs = plan_inputs(client, &what, query)?;
        if let Some(c) = contract {
            governing(&tenant_id, c)?;
        }
        privilege::as_owner(|| {
            let version = client
                .select("SELECT coalesce(max(version), 0) + 1 FROM barecount.models WHERE tenant_id = $1 AND name = $2", Some(1), &[tenant_id.as_str().into(), name.into()])?
                .first()
                .get::<i32>(1)?
                .unwrap_or(1);
            let receipt = ledger::append(
                client,
                &tenant_id,
                "model_define",
                &format!("model:{name}@{version}"),
                &json!({"inputs": [], "outputs": [], "sql": query, "contract": contract, "reads": inputs}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.models (tenant_id, name, version, sql, contract, ledger_seq) VALUES ($1, $2, $3, $4, $5, $6)",
                None,
                &[tenant_id.as_str().into(), name.into(), version.into(), query.into(), contract.into(), receipt.seq.into()],
            )?;
            Ok(version)
        })
    })
    .or_raise()
}

struct Model {
    name: String,
    sql: String,
    contract: Option<String>,
}

fn model(client: &SpiClient<'_>, tenant_id: &str, name: &str) -> Result<Option<Model>, SqlError> {
    let t = client.select(
        "SELECT sql, contract FROM barecount.models WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
        Some(1),
        &[tenant_id.into(), name.into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    let r = t.first();
    Ok(Some(Model {
        name: name.to_owned(),
        sql: r.get::<String>(1)?.unwrap_or_default(),
        contract: r.get::<String>(2)?,
    }))
}

/// The relations a model reads (lineage names, from its plan), or None when it is not defined.
pub(crate) fn model_reads(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
) -> Result<Option<Vec<String>>, SqlError> {
    match model(client, tenant_id, name)? {
        None => Ok(None),
        Some(m) => plan_inputs(client, &format!("model \"{name}\""), &m.sql).map(Some),
    }
}

/// The models `name` reads (gdp relations that are models), from its plan.
fn dependencies(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    m: &Model,
) -> Result<Vec<String>, SqlError> {
    let mut out = Vec::new();
    let prefix = format!("{}.", tenant::schema(tenant_id, Layer::Gdp));
    for input in plan_inputs(client, &format!("model \"{}\"", m.name), &m.sql)? {
        if let Some(dep) = input.strip_prefix(prefix.as_str()) {
            if dep != m.name && model(client, tenant_id, dep)?.is_some() {
                out.push(dep.to_owned());
            }
        }
    }
    Ok(out)
}

/// The model and the models it reads, dependencies first; a cycle is an error.
fn order(client: &mut SpiClient<'_>, tenant_id: &str, name: &str) -> Result<Vec<String>, SqlError> {
    dependency_order(name, |n| {
        let m = model(client, tenant_id, n)?.ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("model \"{n}\" is not defined"),
            )
            .hint("Define it with barecount.model_define(name, sql, contract).")
        })?;
        dependencies(client, tenant_id, &m)
    })
    .map_err(|e| match e {
        OrderError::Cycle(c) => SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_RECURSION,
            format!("models depend on each other in a cycle: {}", c.join(" -> ")),
        ),
        OrderError::Lookup(e) => e,
    })
}

const STAGING: &str = "barecount_model_staging";

fn run_one(client: &mut SpiClient<'_>, tenant_id: &str, m: &Model) -> Result<(i64, i64), SqlError> {
    let what = format!("model \"{}\"", m.name);
    let inputs = plan_inputs(client, &what, &m.sql)?;
    // the model's query runs as the caller, with its privileges and row-level security
    let staged = stage(client, &what, STAGING, &m.sql)?;
    let cols = columns_of(client, &staged)?;
    stamp_tenant(
        client,
        &format!("output of model \"{}\"", m.name),
        &staged,
        tenant_id,
        &cols,
    )?;
    if let Some(contract) = &m.contract {
        let g = governing(tenant_id, contract)?;
        let mut bad = 0_i64;
        let mut first: Option<Value> = None;
        for r in client.select(
            &format!("SELECT (to_jsonb(s) - 'tenant_id')::text FROM {staged} s"),
            None,
            &[],
        )? {
            pgrx::check_for_interrupts!();
            let text = r.get::<String>(1)?.unwrap_or_default();
            // a row serde_json cannot hold (a number beyond double precision) fails as a row
            let (row, errors) = match crate::jsonarg::parse(&text) {
                Ok(row) => {
                    let errors = g.validator.errors(&row);
                    (row, errors)
                }
                Err(e) => (
                    Value::String(text),
                    vec![barecount_core::contract::RowError {
                        instance_path: String::new(),
                        keyword: "json".to_owned(),
                        message: e.message,
                    }],
                ),
            };
            if !errors.is_empty() {
                bad += 1;
                first.get_or_insert_with(|| json!({"row": row, "errors": errors_json(&errors)}));
            }
        }
        if bad > 0 {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
                format!(
                    "model \"{}\" produced {bad} row(s) that fail contract \"{contract}\" {}",
                    m.name, g.version
                ),
            )
            .detail(first.map(|f| f.to_string()).unwrap_or_default())
            .hint("Fix the model's SQL or the contract; gdp.<model> was left as it was."));
        }
    }
    privilege::as_owner(|| {
        let target = tenant::relation(tenant_id, Layer::Gdp, &m.name);
        let exists = relation_exists(client, &target)?;
        if exists {
            // written as barecount_owner: only a table BareCount owns, with no user code
            assert_store_relation(
                client,
                &target,
                &format!("the table of model \"{}\"", m.name),
            )?;
            // the table is shared by every tenant's model of this name: its columns must be
            // exactly the model's, by name and type, or nothing is written
            let have = columns_of(client, &target)?;
            let want = columns_of(client, &staged)?;
            let shape = |cols: &[crate::publish::Column]| {
                let mut v: Vec<(String, String)> = cols
                    .iter()
                    .map(|c| (c.name.clone(), c.ty.clone()))
                    .collect();
                v.sort();
                v
            };
            if shape(&have) != shape(&want) {
                let show = |cols: &[crate::publish::Column]| {
                    cols.iter()
                        .map(|c| format!("{} {}", c.name, c.ty))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!(
                        "model \"{}\" returns columns ({}) but {target} has ({})",
                        m.name,
                        show(&want),
                        show(&have)
                    ),
                )
                .hint("Return the table's columns, or give the model another name (model tables are shared by name across tenants)."));
            }
            let names = want
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ");
            client.update(
                &format!("DELETE FROM {target} WHERE tenant_id = $1"),
                None,
                &[tenant_id.into()],
            )?;
            client.update(
                &format!("INSERT INTO {target} ({names}) SELECT {names} FROM {staged}"),
                None,
                &[],
            )?;
        } else {
            client.update(
                &format!("CREATE TABLE {target} AS SELECT * FROM {staged}"),
                None,
                &[],
            )?;
            client.update(
                &format!(
                    "COMMENT ON TABLE {target} IS {}",
                    barecount_core::ident::quote_literal(&format!(
                        "BareCount GDP model {}",
                        m.name
                    ))
                ),
                None,
                &[],
            )?;
        }
        let cols = columns_of(client, &target)?;
        let (hash, rows) = content_hash(
            client,
            &format!(
                "(SELECT * FROM {target} WHERE tenant_id = {}) t",
                barecount_core::ident::quote_literal(tenant_id)
            ),
            &cols,
        )?;
        let receipt = ledger::append(
            client,
            tenant_id,
            "model_run",
            &format!("{}.{}", tenant::schema(tenant_id, Layer::Gdp), m.name),
            &json!({"inputs": inputs, "outputs": [], "model": m.name, "contract": m.contract, "rows": rows}),
            Some(&hash),
        )?;
        crate::access::meter(client, tenant_id, "materialize", rows, 0)?;
        Ok((rows, receipt.seq))
    })
}

/// Run a model, after the models it reads (dependency order; a cycle is refused).
#[pg_extern(volatile, parallel_unsafe)]
fn model_run(
    name: &str,
) -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(row_count, i64),
        name!(ledger_seq, i64),
    ),
> {
    let rows = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let done = order(client, &tenant_id, name)?;
        let mut out = Vec::new();
        for n in done {
            let m = model(client, &tenant_id, &n)?.ok_or_else(|| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("model \"{n}\" is not defined"),
                )
            })?;
            let (rows, seq) = run_one(client, &tenant_id, &m)?;
            out.push((n, rows, seq));
        }
        Ok::<_, SqlError>(out)
    })
    .or_raise();
    TableIterator::new(rows)
}
