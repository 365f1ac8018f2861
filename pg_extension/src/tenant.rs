//! The current tenant, as the catalog function `barecount.current_tenant()` defines it.

use crate::errors::SqlError;
use barecount_core::ident::quote_ident;
use barecount_core::layer::{self, Layer};
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

pub fn current(client: &SpiClient<'_>) -> Result<String, SqlError> {
    let row = client
        .select("SELECT barecount.current_tenant()", Some(1), &[])?
        .first();
    row.get::<String>(1)?.ok_or_else(no_tenant)
}

/// Refuses a tenant id that names no tenant (42704), before anything refers to it.
pub fn require_exists(client: &SpiClient<'_>, tenant_id: &str) -> Result<(), SqlError> {
    let known = client
        .select(
            "SELECT 1 FROM barecount.tenants WHERE tenant_id = $1",
            Some(1),
            &[tenant_id.into()],
        )?
        .len();
    if known == 0 {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("tenant \"{tenant_id}\" does not exist"),
        )
        .hint("Create it with barecount.tenant_create(tenant_id, name)."));
    }
    Ok(())
}

/// Refuses a suspended tenant (55000, from `barecount._tenant_active`, which the gateways'
/// authentications call: they resolve a tenant without `current_tenant()`). Over a 0.1.0
/// schema (the library installed, `ALTER EXTENSION barecount UPDATE` not yet run) there is no
/// suspension to check.
pub fn require_active(client: &SpiClient<'_>, tenant_id: &str) -> Result<(), SqlError> {
    if crate::govern::has_function(client, "barecount._tenant_active(text)")? {
        client.select(
            "SELECT barecount._tenant_active($1)",
            Some(1),
            &[tenant_id.into()],
        )?;
    }
    Ok(())
}

/// The error for a session of no tenant.
pub fn no_tenant() -> SqlError {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "this session has no BareCount tenant",
    )
    .hint("Ask an administrator to map your role to a tenant.")
}

/// Serializes work on one named object within a tenant until the transaction ends.
pub fn lock_object(
    client: &mut SpiClient<'_>,
    kind: &str,
    tenant_id: &str,
    name: &str,
) -> Result<(), SqlError> {
    let key = format!("barecount.{kind}/{tenant_id}/{name}");
    client.update(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        None,
        &[key.as_str().into()],
    )?;
    Ok(())
}

/// The schema holding the tenant's relations of a layer (`gdp`, `gdp_acme`, ...; see
/// `barecount_core::layer`).
pub fn schema(tenant_id: &str, layer: Layer) -> String {
    layer::schema_of(layer, tenant_id)
}

/// `schema.name` in the tenant's schema of the layer, quoted for SQL.
pub fn relation(tenant_id: &str, layer: Layer, name: &str) -> String {
    format!(
        "{}.{}",
        quote_ident(&schema(tenant_id, layer)),
        quote_ident(name)
    )
}

/// Refuses (42501) a qualified name in another tenant's layer schema; `what` names it.
pub fn check_owns(tenant_id: &str, qualified: &str, what: &str) -> Result<(), SqlError> {
    let named = qualified.split_once('.').map_or("", |(s, _)| s);
    if layer::layer_of(named).is_some() && !layer::owns(named, tenant_id) {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("{what} {qualified} is not in a schema of tenant \"{tenant_id}\""),
        )
        .hint(format!(
            "Tenant \"{tenant_id}\" keeps its relations in {}, {} and {} (raw is shared).",
            schema(tenant_id, Layer::Gdp),
            schema(tenant_id, Layer::Kpi),
            schema(tenant_id, Layer::Published)
        )));
    }
    Ok(())
}
