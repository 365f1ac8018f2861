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

/// The scopes a login role's BareCount grants give it over a gateway: `read` for every
/// BareCount role (reader, engineer, publisher, admin), `export` for publishers and admins,
/// `ingest` for engineers (who ingest in SQL too).
/// Empty when it holds none. Runs as barecount_owner.
fn role_scopes(client: &SpiClient<'_>, role_name: &str) -> Result<Vec<String>, SqlError> {
    let r = client.select(
        "SELECT pg_has_role($1, 'barecount_reader', 'MEMBER') OR pg_has_role($1, 'barecount_engineer', 'MEMBER') \
                OR pg_has_role($1, 'barecount_publisher', 'MEMBER') OR pg_has_role($1, 'barecount_admin', 'MEMBER'), \
                pg_has_role($1, 'barecount_publisher', 'MEMBER'), pg_has_role($1, 'barecount_engineer', 'MEMBER')",
        Some(1),
        &[role_name.into()],
    )?;
    let row = r.first();
    let mut scopes = Vec::new();
    if row.get::<bool>(2)?.unwrap_or(false) {
        scopes.push("export".to_owned());
    }
    if row.get::<bool>(3)?.unwrap_or(false) {
        scopes.push("ingest".to_owned());
    }
    if row.get::<bool>(1)?.unwrap_or(false) {
        scopes.push("read".to_owned());
    }
    Ok(scopes)
}

/// The tenant and stored password verifier of a login role that may use a gateway now: it can
/// log in, has not expired and is mapped to a tenant. Runs as barecount_owner.
fn login_role(
    client: &SpiClient<'_>,
    role_name: &str,
) -> Result<Option<(String, String)>, SqlError> {
    let r = client.select(
        "SELECT coalesce(a.rolpassword, ''), m.tenant_id FROM pg_catalog.pg_authid a \
           JOIN barecount.tenant_members m ON m.role_name = a.rolname \
          WHERE a.rolname = $1 AND a.rolcanlogin \
            AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > now())",
        Some(1),
        &[role_name.into()],
    )?;
    if r.is_empty() {
        return Ok(None);
    }
    let row = r.first();
    Ok(Some((
        row.get::<String>(2)?.unwrap_or_default(),
        row.get::<String>(1)?.unwrap_or_default(),
    )))
}

/// For gateways: checks a login role's own Postgres password (its SCRAM-SHA-256 verifier) and
/// returns the tenant it belongs to, with the scopes its grants give (see [`role_scopes`]).
/// Every failure (unknown role, no login, expired, no tenant, no BareCount role, wrong
/// password) is the same SQLSTATE 28P01.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn password_authenticate(
    role_name: &str,
    password: &str,
) -> TableIterator<'static, (name!(tenant_id, String), name!(scopes, Vec<String>))> {
    let row = Spi::connect(|client| {
        require_gateway(client, "authenticate passwords")?;
        privilege::as_owner(|| {
            let Some((tenant, verifier)) = login_role(client, role_name)? else {
                return Err(login_failed(role_name));
            };
            let scopes = role_scopes(client, role_name)?;
            if scopes.is_empty() {
                return Err(login_failed(role_name));
            }
            match scram::verify(&verifier, password) {
                Ok(true) => {
                    tenant::require_active(client, &tenant)?;
                    Ok((tenant, scopes))
                }
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

/// For gateways: whether the credential behind a session still holds, and what it may do now.
/// `subject` is a login role, or `token:<id>` for an API token. A revoked or expired token, a
/// role that can no longer log in, has expired, lost its tenant or every BareCount role is
/// SQLSTATE 28000; otherwise the tenant and the scopes it has now.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn credential_check(
    subject: &str,
) -> TableIterator<'static, (name!(tenant_id, String), name!(scopes, Vec<String>))> {
    let row = Spi::connect(|client| {
        require_gateway(client, "check credentials")?;
        privilege::as_owner(|| grants(client, subject))
    })
    .or_raise();
    TableIterator::once(row)
}

/// The tenant and scopes `subject` (a login role, or `token:<id>`) has now; SQLSTATE 28000
/// when the credential is revoked, expired or no longer a BareCount login, 55000 when its
/// tenant is suspended. Runs as barecount_owner.
fn grants(client: &SpiClient<'_>, subject: &str) -> Result<(String, Vec<String>), SqlError> {
    let gone = || {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!("the credentials of \"{subject}\" are no longer valid"),
        )
        .hint("Authenticate again.")
    };
    if let Some(id) = subject.strip_prefix("token:") {
        let r = client.select(
            "SELECT tenant_id, scopes FROM barecount.tokens \
              WHERE token_id = $1 AND revoked_at IS NULL AND expires_at > now()",
            Some(1),
            &[id.into()],
        )?;
        if r.is_empty() {
            return Err(gone());
        }
        let row = r.first();
        let tenant = row.get::<String>(1)?.unwrap_or_default();
        tenant::require_active(client, &tenant)?;
        return Ok((tenant, row.get::<Vec<String>>(2)?.unwrap_or_default()));
    }
    let Some((tenant, _)) = login_role(client, subject)? else {
        return Err(gone());
    };
    let scopes = role_scopes(client, subject)?;
    if scopes.is_empty() {
        return Err(gone());
    }
    tenant::require_active(client, &tenant)?;
    Ok((tenant, scopes))
}

/// For gateways (Flight `DoPut`): ingests rows a client sent, for the tenant of the credential
/// that sent them (`subject`: a login role or `token:<id>`), which must hold the `ingest`
/// scope now. `rows` is a JSON array of objects; it lands as one batch under the contract
/// governing `dataset`, with its receipt, invalid rows in quarantine. The read is recorded in
/// `barecount.connector_reads` (source `flight`, SHA-256 of the rows, or of the client's
/// idempotency key when it gives one): the same put again returns the first batch with
/// `already_landed` and lands nothing.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn gateway_ingest(
    subject: Option<&str>,
    dataset: Option<&str>,
    rows: Option<String>,
    idempotency_key: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(batch_id, i64),
        name!(row_count, i64),
        name!(accepted, i64),
        name!(quarantined, i64),
        name!(ledger_seq, Option<i64>),
        name!(already_landed, bool),
    ),
> {
    let subject = crate::errors::required(subject, "gateway_ingest", "subject");
    let dataset = crate::errors::required(dataset, "gateway_ingest", "dataset");
    let rows = crate::errors::required(rows, "gateway_ingest", "rows");
    let row = Spi::connect_mut(|client| {
        require_gateway(client, "ingest for a client")?;
        privilege::as_owner(|| {
            let (tenant_id, scopes) = grants(client, subject)?;
            if !scopes.iter().any(|s| s == "ingest") {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("the credentials of \"{subject}\" lack the ingest scope"),
                )
                .hint("Ingest with a token made with ARRAY['ingest'] among its scopes, or as a login role that is a barecount_engineer."));
            }
            crate::govern::policy::enforce_subject(
                client,
                &tenant_id,
                subject,
                "ingest",
                dataset,
                serde_json::json!({"channel": "flight", "scopes": scopes}),
            )?;
            crate::connectors::land_sent(client, &tenant_id, dataset, rows, idempotency_key)
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
    tenant_id: Option<&str>,
    source: Option<&str>,
    format: Option<&str>,
    path: Option<&str>,
    rows: Option<i64>,
    bytes: Option<i64>,
    file_sha256: Option<&str>,
    source_content_hash: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(ledger_seq, i64), name!(entry_hash, String))> {
    let tenant_id = crate::errors::required(tenant_id, "export_receipt", "tenant_id");
    let source = crate::errors::required(source, "export_receipt", "source");
    let format = crate::errors::required(format, "export_receipt", "format");
    let path = crate::errors::required(path, "export_receipt", "path");
    let rows = crate::errors::required(rows, "export_receipt", "rows");
    let bytes = crate::errors::required(bytes, "export_receipt", "bytes");
    let file_sha256 = crate::errors::required(file_sha256, "export_receipt", "file_sha256");
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
            tenant::require_exists(client, tenant_id)?;
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
