//! Staging user queries: a query runs once, as the caller, into a session temp table that the
//! privileged part then copies from — shared by publish, model runs and KPI materialization.

use crate::errors::SqlError;
use crate::privilege::OWNER_ROLE;
use crate::publish::Column;
use crate::usersql;
use barecount_core::ident::quote_literal;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// The column that ties every store row to its tenant.
pub const TENANT_COLUMN: &str = "tenant_id";

/// Whether a (possibly qualified) relation name resolves.
pub fn relation_exists(client: &SpiClient<'_>, name: &str) -> Result<bool, SqlError> {
    Ok(client
        .select(
            "SELECT to_regclass($1) IS NOT NULL",
            Some(1),
            &[name.into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}

/// Runs `query` — accepted only as exactly one read-only query ([`usersql::one_query`]) — as
/// the caller into the temp table `name` (dropped at commit; a leftover of an earlier call in
/// the same transaction is dropped first, without a NOTICE), lets `barecount_owner` read it,
/// and refuses columns of any type that is not built into Postgres (a user type could carry a
/// cast, domain check or output function that would run while BareCount copies or hashes the
/// rows). `what` names the query's owner in messages. Returns the qualified name.
pub fn stage(
    client: &mut SpiClient<'_>,
    what: &str,
    name: &str,
    query: &str,
) -> Result<String, SqlError> {
    usersql::one_query(what, query)?;
    let qualified = format!("pg_temp.{name}");
    if relation_exists(client, &qualified)? {
        client.update(&format!("DROP TABLE {qualified}"), None, &[])?;
    }
    client.update(
        &format!("CREATE TEMP TABLE {name} ON COMMIT DROP AS {query}"),
        None,
        &[],
    )?;
    client.update(
        &format!("GRANT SELECT ON {qualified} TO {OWNER_ROLE}"),
        None,
        &[],
    )?;
    builtin_types_only(client, what, &qualified)?;
    Ok(qualified)
}

/// Refuses a relation with a column whose type Postgres does not ship (oid 16384 and up:
/// domains, enums, composites, ranges and base types someone created).
pub fn builtin_types_only(
    client: &SpiClient<'_>,
    what: &str,
    relation: &str,
) -> Result<(), SqlError> {
    let bad = client
        .select(
            "SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum) \
               FROM pg_catalog.pg_attribute \
              WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND atttypid >= 16384",
            Some(1),
            &[relation.into()],
        )?
        .first()
        .get::<String>(1)?;
    match bad {
        None => Ok(()),
        Some(cols) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("{what} returns columns of types that are not built into Postgres: {cols}"),
        )
        .hint("Cast them to a built-in type (text, numeric, date, ...) in the query.")),
    }
}

/// Every stored row carries its tenant: rows without `tenant_id` get the column (last,
/// constant); rows with one must all be the caller's tenant's. `what` names the rows in
/// messages, e.g. `source for dataset "sales"`.
pub fn stamp_tenant(
    client: &mut SpiClient<'_>,
    what: &str,
    relation: &str,
    tenant_id: &str,
    cols: &[Column],
) -> Result<(), SqlError> {
    match cols.iter().find(|c| c.name == TENANT_COLUMN) {
        None => {
            client.update(
                &format!(
                    "ALTER TABLE {relation} ADD COLUMN {TENANT_COLUMN} text NOT NULL DEFAULT {}",
                    quote_literal(tenant_id)
                ),
                None,
                &[],
            )?;
        }
        Some(c) if c.ty != "text" => {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!("column tenant_id of the {what} has type {}, not text", c.ty),
            )
            .hint("Drop the column; BareCount adds tenant_id itself."));
        }
        Some(_) => {
            let foreign = client
                .select(
                    &format!(
                        "SELECT count(*) FROM {relation} WHERE {TENANT_COLUMN} IS DISTINCT FROM $1"
                    ),
                    Some(1),
                    &[tenant_id.into()],
                )?
                .first()
                .get::<i64>(1)?
                .unwrap_or(0);
            if foreign > 0 {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("{what} has {foreign} row(s) whose tenant_id is not the current tenant \"{tenant_id}\""),
                )
                .hint("Only the current tenant's rows may be written."));
            }
        }
    }
    Ok(())
}

/// Refuses (42501) to let BareCount read or write `relation` as barecount_owner unless it is a
/// plain table barecount_owner owns that carries no user code (`barecount._assert_store_relation`).
/// `what` names it in the message.
pub fn assert_store_relation(
    client: &SpiClient<'_>,
    relation: &str,
    what: &str,
) -> Result<(), SqlError> {
    client.select(
        "SELECT barecount._assert_store_relation($1::regclass, $2)",
        Some(1),
        &[relation.into(), what.into()],
    )?;
    Ok(())
}
