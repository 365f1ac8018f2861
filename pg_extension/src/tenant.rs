//! The current tenant, as the catalog function `barecount.current_tenant()` defines it.

use crate::errors::SqlError;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

pub fn current(client: &SpiClient<'_>) -> Result<String, SqlError> {
    let row = client
        .select("SELECT barecount.current_tenant()", Some(1), &[])?
        .first();
    row.get::<String>(1)?.ok_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "this session has no BareCount tenant",
        )
        .hint("Ask an administrator to map your role to a tenant.")
    })
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
