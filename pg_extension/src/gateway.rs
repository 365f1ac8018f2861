//! What gateways such as barecount-flight call besides tokens: password logins for Flight
//! clients and ledger receipts for the exports they write.

use crate::access::{denied, enforce, meter, session_has_role};
use crate::errors::{OrRaise, SqlError};
use crate::{ledger, privilege, tenant};
use barecount_core::entitlement::Limit;
use barecount_core::scram;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

fn require_gateway(client: &SpiClient<'_>, action: &str) -> Result<(), SqlError> {
    if session_has_role(client, "barecount_admin")? {
        Ok(())
    } else {
        Err(denied(action).hint("Gateways connect as a member of barecount_admin."))
    }
}

fn login_failed(role: &str) -> SqlError {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_INVALID_PASSWORD,
        format!("password authentication failed for role \"{role}\""),
    )
}

/// For gateways: checks a login role's own Postgres password (its SCRAM-SHA-256 verifier) and
/// returns the tenant it belongs to, with scopes read and export. Every failure (unknown role,
/// no login, expired, no tenant, wrong password) is the same SQLSTATE 28P01.
#[pg_extern(stable, parallel_safe)]
fn password_authenticate(
    role_name: &str,
    password: &str,
) -> TableIterator<'static, (name!(tenant_id, String), name!(scopes, Vec<String>))> {
    let row = Spi::connect(|client| {
        require_gateway(client, "authenticate passwords")?;
        privilege::as_owner(|| {
            let r = client.select(
                "SELECT a.rolpassword, m.tenant_id FROM pg_catalog.pg_authid a \
                   JOIN barecount.tenant_members m ON m.role_name = a.rolname \
                  WHERE a.rolname = $1 AND a.rolcanlogin \
                    AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > now())",
                Some(1),
                &[role_name.into()],
            )?;
            if r.is_empty() {
                return Err(login_failed(role_name));
            }
            let row = r.first();
            let verifier = row.get::<String>(1)?.unwrap_or_default();
            let tenant = row.get::<String>(2)?.unwrap_or_default();
            match scram::verify(&verifier, password) {
                Ok(true) => Ok((tenant, vec!["export".to_owned(), "read".to_owned()])),
                Ok(false) => Err(login_failed(role_name)),
                Err(e) => Err(login_failed(role_name)
                    .detail(e.to_string())
                    .hint("Set the password again with password_encryption = 'scram-sha-256'.")),
            }
        })
    })
    .or_raise();
    TableIterator::once(row)
}

/// For gateways: records an export a gateway wrote. Checks the tenant's daily export limit
/// (53400), meters the export and appends a ledger receipt naming what was exported, the file
/// and its SHA-256, in one transaction.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn export_receipt(
    tenant_id: &str,
    source: &str,
    format: &str,
    path: &str,
    rows: i64,
    bytes: i64,
    file_sha256: &str,
    source_content_hash: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(ledger_seq, i64), name!(entry_hash, String))> {
    let row = Spi::connect_mut(|client| {
        require_gateway(client, "record exports")?;
        if rows < 0 || bytes < 0 {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "rows and bytes must not be negative",
            ));
        }
        if !matches!(format, "parquet" | "csv" | "arrow") {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("export format \"{format}\" is unknown"),
            )
            .hint("Formats are parquet, csv and arrow."));
        }
        privilege::as_owner(|| {
            tenant::lock_object(client, "usage", tenant_id, "export")?;
            enforce(client, tenant_id, Limit::ExportsPerDay, 1)?;
            meter(client, tenant_id, "export", rows, bytes)
        })?;
        let inputs = json!({
            "source": source,
            "format": format,
            "path": path,
            "rows": rows,
            "bytes": bytes,
            "file_sha256": file_sha256,
            "source_content_hash": source_content_hash,
        });
        let receipt = ledger::append(
            client,
            tenant_id,
            "export",
            &format!("export:{source}"),
            &inputs,
            Some(file_sha256),
        )?;
        Ok((receipt.seq, receipt.entry_hash))
    })
    .or_raise();
    TableIterator::once(row)
}
