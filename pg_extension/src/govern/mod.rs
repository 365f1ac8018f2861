//! The governance family: policies (and, in SQL, flags, master data and the tenant lifecycle:
//! sql/barecount--0.1.0--0.2.0.sql).

pub mod autonomous;
pub mod policy;

use crate::errors::SqlError;

/// Whether the database's schema has the function (`signature` as `to_regprocedure` takes it):
/// the library serves a 0.1.0 schema too, between `cargo pgrx install` and `ALTER EXTENSION
/// barecount UPDATE`, and then skips what 0.2.0 added (suspension, policies).
pub fn has_function(client: &pgrx::spi::SpiClient<'_>, signature: &str) -> Result<bool, SqlError> {
    Ok(client
        .select(
            "SELECT to_regprocedure($1) IS NOT NULL",
            Some(1),
            &[signature.into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}
