//! General JSON Schema validation from SQL: `json_schema_validate`, `json_schema_errors`, and
//! `json_schema_resource_put` for the schemas `$ref`s resolve to.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::{privilege, readonly, tenant};
use barecount_core::contract::RowError;
use barecount_core::json_schema::{SchemaError, SchemaValidator};
use barecount_core::ledger::canonical_json;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

impl From<SchemaError> for SqlError {
    fn from(e: SchemaError) -> Self {
        SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION, e.to_string())
            .hint("Check the schema against the JSON Schema 2020-12 meta-schema; $refs resolve only to resources registered with barecount.json_schema_resource_put.")
    }
}

/// Compiled schemas per backend, keyed by tenant, schema digest and the state of the tenant's
/// resources (so registering a resource invalidates what depended on the old set).
type Key = (String, String, String);
const CACHE_LIMIT: usize = 512;

thread_local! {
    static CACHE: RefCell<HashMap<Key, Rc<SchemaValidator>>> = RefCell::new(HashMap::new());
}

fn validator(schema: &Value) -> Rc<SchemaValidator> {
    // read-only SPI: this runs inside parallel queries (see readonly.rs)
    (|| {
        let tenant_id = readonly::tenant()?;
        let generation = readonly::one(
            "SELECT count(*)::text || '/' || coalesce(max(registered_at)::text, '') \
               FROM barecount.json_schema_resources WHERE tenant_id = $1",
            &[Some(&tenant_id)],
        )?
        .unwrap_or_default();
        let digest = hex::encode(Sha256::digest(canonical_json(schema)));
        let key = (tenant_id.clone(), digest, generation);
        if let Some(v) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
            return Ok(v);
        }
        let mut resources = HashMap::new();
        for r in readonly::rows(
            "SELECT uri, schema::text FROM barecount.json_schema_resources WHERE tenant_id = $1",
            &[Some(&tenant_id)],
        )? {
            if let [Some(uri), Some(s)] = r.as_slice() {
                resources.insert(uri.clone(), crate::jsonarg::parse(s)?);
            }
        }
        let v = Rc::new(SchemaValidator::new(schema, resources)?);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(key, v.clone());
        });
        Ok::<_, SqlError>(v)
    })()
    .or_raise()
}

// Parallel safety (audited for issue 13): json_schema_validate and json_schema_errors read the
// tenant's registered resources with read-only SPI (readonly.rs) as the caller and keep compiled
// schemas in a per-process thread_local (bounded); no role switch, no write: PARALLEL SAFE.
/// True when `instance` is valid against `schema` (JSON Schema 2020-12 unless `$schema` says otherwise).
#[pg_extern(stable, parallel_safe)]
fn json_schema_validate(schema: JsonbArg, instance: JsonbArg) -> bool {
    validator(&schema.0).is_valid(&instance.0)
}

/// Every error of `instance` against `schema`: instance path, schema keyword, message.
#[pg_extern(stable, parallel_safe)]
fn json_schema_errors(
    schema: JsonbArg,
    instance: JsonbArg,
) -> TableIterator<
    'static,
    (
        name!(instance_path, String),
        name!(keyword, String),
        name!(message, String),
    ),
> {
    let errors: Vec<RowError> = validator(&schema.0).errors(&instance.0);
    TableIterator::new(
        errors
            .into_iter()
            .map(|e| (e.instance_path, e.keyword, e.message)),
    )
}

/// Register (or replace) the schema a `$ref` URI resolves to, for the current tenant.
#[pg_extern(volatile, parallel_unsafe)]
fn json_schema_resource_put(uri: &str, schema: JsonbArg) {
    if uri.contains('#') || uri.trim().is_empty() {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("resource URI \"{uri}\" must be non-empty and without a fragment"),
        )
        .raise()
    }
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            client.update(
                "INSERT INTO barecount.json_schema_resources (tenant_id, uri, schema) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, uri) DO UPDATE SET schema = excluded.schema, \
                   registered_by = session_user, registered_at = clock_timestamp()",
                None,
                &[tenant_id.as_str().into(), uri.into(), JsonB(schema.0.clone()).into()],
            )?;
            // a resource changes what every schema that $refs it accepts: on the record
            let digest = hex::encode(Sha256::digest(canonical_json(&schema.0).as_bytes()));
            crate::ledger::append(
                client,
                &tenant_id,
                "json_schema_resource_put",
                &format!("schema:{uri}"),
                &serde_json::json!({"inputs": [], "outputs": [], "uri": uri, "schema": schema.0}),
                Some(&digest),
            )?;
            Ok(())
        })
    })
    .or_raise()
}
