//! Tokens for non-SQL clients, plan limits (entitlements) and metering.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::{ledger, privilege, tenant};
use barecount_core::entitlement::{self, Exceeded, Limit};
use barecount_core::token::{self, TokenError};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use rand::RngCore;
use serde_json::json;
use serde_json::Value;

impl From<TokenError> for SqlError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::UnknownScope(_) | TokenError::NoScopes => SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                e.to_string(),
            )
            .hint("Scopes are read and export."),
            TokenError::Malformed => SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                "invalid or expired token",
            ),
        }
    }
}

impl From<Exceeded> for SqlError {
    fn from(e: Exceeded) -> Self {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            e.to_string(),
        )
        .detail(format!("limit {} = {}", e.limit.key(), e.max))
        .hint("Ask a BareCount admin to raise the limit with barecount.entitlement_set(...).")
    }
}

pub(crate) fn session_has_role(client: &SpiClient<'_>, role: &str) -> Result<bool, SqlError> {
    Ok(client
        .select(
            "SELECT pg_has_role(session_user, $1, 'MEMBER')",
            Some(1),
            &[role.into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}

pub(crate) fn denied(action: &str) -> SqlError {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("permission denied to {action}"),
    )
}

/// Admins act for any tenant; everyone else only for their own.
fn require_tenant_access(
    client: &SpiClient<'_>,
    tenant_id: &str,
    action: &str,
) -> Result<(), SqlError> {
    if session_has_role(client, "barecount_admin")? {
        return Ok(());
    }
    let own = tenant::current(client)?;
    if own != tenant_id {
        return Err(denied(action).detail(format!("your tenant is \"{own}\", not \"{tenant_id}\"")));
    }
    Ok(())
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Create a token for a tenant; the token is returned once and never stored.
#[pg_extern(volatile, parallel_unsafe)]
fn token_create(
    tenant_id: Option<&str>,
    scopes: Option<Vec<Option<String>>>,
    expires_at: Option<TimestampWithTimeZone>,
    name: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(token_id, String), name!(token, String))> {
    let tenant_id = crate::errors::required(tenant_id, "token_create", "tenant_id");
    let expires_at = crate::errors::required(expires_at, "token_create", "expires_at");
    // a NULL list or a NULL scope in it has no meaning: a clear 22004, not an internal error
    let scopes: Vec<String> = scopes
        .and_then(|v| v.into_iter().collect::<Option<Vec<String>>>())
        .unwrap_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "token scopes must not be NULL or contain NULL",
            )
            .hint("Pass scopes such as ARRAY['read'] or ARRAY['read', 'export'].")
            .raise()
        });
    let scopes = token::check_scopes(&scopes).or_raise();
    let row = Spi::connect_mut(|client| {
        if !session_has_role(client, "barecount_admin")? && !session_has_role(client, "barecount_publisher")? {
            return Err(denied("create tokens").hint("Tokens are created by publishers (own tenant) and admins."));
        }
        require_tenant_access(client, tenant_id, &format!("create tokens for tenant \"{tenant_id}\""))?;
        let future = client
            .select("SELECT $1 > now() AND $1 <= now() + interval '1 year'", Some(1), &[expires_at.into()])?
            .first()
            .get::<bool>(1)?
            .unwrap_or(false);
        if !future {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "token expiry must be in the future and at most one year away",
            ));
        }
        let minted = token::mint(random(), random(), random());
        privilege::as_owner(|| {
            let exists = client
                .select("SELECT 1 FROM barecount.tenants WHERE tenant_id = $1", Some(1), &[tenant_id.into()])?;
            if exists.is_empty() {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("tenant \"{tenant_id}\" does not exist"),
                ));
            }
            client.update(
                "INSERT INTO barecount.tokens (tenant_id, token_id, name, scopes, salt, secret_hash, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                None,
                &[
                    tenant_id.into(),
                    minted.id.as_str().into(),
                    name.into(),
                    scopes.clone().into(),
                    minted.salt.as_str().into(),
                    minted.secret_hash.as_str().into(),
                    expires_at.into(),
                ],
            )?;
            ledger::append(
                client,
                tenant_id,
                "token_create",
                &format!("token:{}", minted.id),
                &json!({"inputs": [], "outputs": [], "token_id": minted.id, "scopes": scopes,
                        "name": name, "expires_at": expires_at.to_string()}),
                None,
            )?;
            Ok(())
        })?;
        Ok((minted.id, minted.token))
    })
    .or_raise();
    TableIterator::once(row)
}

/// Revoke a token of one's own tenant (admins: any). True if it was active.
#[pg_extern(volatile, parallel_unsafe)]
fn token_revoke(token_id: &str) -> bool {
    Spi::connect_mut(|client| {
        let is_admin = session_has_role(client, "barecount_admin")?;
        if !is_admin && !session_has_role(client, "barecount_publisher")? {
            return Err(denied("revoke tokens"));
        }
        let own = tenant::current(client)?;
        privilege::as_owner(|| {
            let revoked = client.update(
                "UPDATE barecount.tokens SET revoked_at = now(), revoked_by = session_user \
                  WHERE token_id = $1 AND revoked_at IS NULL AND ($2 OR tenant_id = $3) RETURNING tenant_id",
                None,
                &[token_id.into(), is_admin.into(), own.as_str().into()],
            )?;
            let tenant = if revoked.is_empty() {
                None
            } else {
                revoked.first().get::<String>(1)?
            };
            if let Some(t) = &tenant {
                ledger::append(
                    client,
                    t,
                    "token_revoke",
                    &format!("token:{token_id}"),
                    &json!({"inputs": [], "outputs": [], "token_id": token_id}),
                    None,
                )?;
            }
            Ok(tenant.is_some())
        })
    })
    .or_raise()
}

/// The tokens of the current tenant (never their secrets or hashes).
// pgrx reads the column names from the signature, so the row type cannot be an alias.
#[allow(clippy::type_complexity)]
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn token_list() -> TableIterator<
    'static,
    (
        name!(token_id, String),
        name!(tenant_id, String),
        name!(name, Option<String>),
        name!(scopes, Vec<String>),
        name!(created_by, String),
        name!(created_at, TimestampWithTimeZone),
        name!(expires_at, TimestampWithTimeZone),
        name!(revoked_at, Option<TimestampWithTimeZone>),
        name!(status, String),
    ),
> {
    let rows = Spi::connect_mut(|client| {
        let own = tenant::current(client)?;
        privilege::as_owner(|| {
            let mut out = Vec::new();
            let table = client.select(
                "SELECT token_id, tenant_id, name, scopes, created_by::text, created_at, expires_at, revoked_at, \
                        CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
                             WHEN expires_at <= now() THEN 'expired' ELSE 'active' END \
                   FROM barecount.tokens WHERE tenant_id = $1 ORDER BY created_at, token_id",
                None,
                &[own.as_str().into()],
            )?;
            for r in table {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?,
                    r.get::<Vec<String>>(4)?.unwrap_or_default(),
                    r.get::<String>(5)?.unwrap_or_default(),
                    r.get::<TimestampWithTimeZone>(6)?.ok_or_else(|| denied("read tokens"))?,
                    r.get::<TimestampWithTimeZone>(7)?.ok_or_else(|| denied("read tokens"))?,
                    r.get::<TimestampWithTimeZone>(8)?,
                    r.get::<String>(9)?.unwrap_or_default(),
                ));
            }
            Ok(out)
        })
    })
    .or_raise();
    TableIterator::new(rows)
}

/// For gateways (the Flight server): the tenant and scopes of a valid token, or SQLSTATE 28000.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn token_authenticate(
    token: &str,
) -> TableIterator<
    'static,
    (
        name!(tenant_id, String),
        name!(scopes, Vec<String>),
        name!(token_id, String),
    ),
> {
    let (id, secret) = token::parse(token).or_raise();
    let row = Spi::connect_mut(|client| {
        if !session_has_role(client, "barecount_admin")? {
            return Err(denied("authenticate tokens")
                .hint("Gateways connect as a member of barecount_admin."));
        }
        privilege::as_owner(|| {
            let t = client.select(
                "SELECT tenant_id, scopes, salt, secret_hash FROM barecount.tokens \
                  WHERE token_id = $1 AND revoked_at IS NULL AND expires_at > now()",
                Some(1),
                &[id.into()],
            )?;
            let bad = || SqlError::from(TokenError::Malformed);
            if t.is_empty() {
                return Err(bad());
            }
            let r = t.first();
            let salt = r.get::<String>(3)?.unwrap_or_default();
            let stored = r.get::<String>(4)?.unwrap_or_default();
            if !token::verify(&salt, secret, &stored) {
                return Err(bad());
            }
            tenant::require_active(client, &r.get::<String>(1)?.unwrap_or_default())?;
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?.unwrap_or_default(),
                id.to_owned(),
            ))
        })
    })
    .or_raise();
    TableIterator::once(row)
}

/// Set a tenant's plan limits (admins only): keys max_datasets, max_published_versions,
/// max_exports_per_day, max_rows_served_per_day; null means unlimited; absent keys unchanged.
#[pg_extern(volatile, parallel_unsafe)]
fn entitlement_set(tenant_id: &str, limits: JsonbArg) {
    let Value::Object(map) = limits.0 else {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "limits must be a JSON object",
        )
        .hint("For example '{\"max_datasets\": 10, \"max_rows_served_per_day\": null}'.")
        .raise()
    };
    let mut sets: Vec<(Limit, Option<i64>)> = Vec::new();
    for (k, v) in &map {
        let limit = Limit::from_key(k).ok_or_else(|| {
            SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("unknown limit \"{k}\""))
                .hint("Limits are max_datasets, max_published_versions, max_exports_per_day, max_rows_served_per_day.")
        }).or_raise();
        let value = match v {
            Value::Null => None,
            Value::Number(n) => match n.as_i64() {
                Some(x) if x >= 0 => Some(x),
                _ => SqlError::new(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("limit \"{k}\" must be a non-negative integer or null"),
                )
                .raise(),
            },
            _ => SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("limit \"{k}\" must be a non-negative integer or null"),
            )
            .raise(),
        };
        sets.push((limit, value));
    }
    Spi::connect_mut(|client| {
        if !session_has_role(client, "barecount_admin")? {
            return Err(denied("set plan limits"));
        }
        privilege::as_owner(|| {
            tenant::require_exists(client, tenant_id)?;
            client.update(
                "INSERT INTO barecount.entitlements (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING",
                None,
                &[tenant_id.into()],
            )?;
            for (limit, value) in &sets {
                client.update(
                    &format!(
                        "UPDATE barecount.entitlements SET {} = $2, updated_by = session_user, updated_at = now() \
                          WHERE tenant_id = $1",
                        limit.key()
                    ),
                    None,
                    &[tenant_id.into(), (*value).into()],
                )?;
            }
            let changes: serde_json::Map<String, Value> = sets
                .iter()
                .map(|(l, v)| (l.key().to_owned(), v.map(Value::from).unwrap_or(Value::Null)))
                .collect();
            ledger::append(
                client,
                tenant_id,
                "entitlement_set",
                &format!("tenant:{tenant_id}"),
                &json!({"inputs": [], "outputs": [], "limits": changes}),
                None,
            )?;
            Ok(())
        })
    })
    .or_raise()
}

fn limit_of(
    client: &SpiClient<'_>,
    tenant_id: &str,
    limit: Limit,
) -> Result<Option<i64>, SqlError> {
    Ok(client
        .select(
            &format!(
                "SELECT {}::bigint FROM barecount.entitlements WHERE tenant_id = $1",
                limit.key()
            ),
            Some(1),
            &[tenant_id.into()],
        )?
        .first()
        .get::<i64>(1)
        .unwrap_or(None))
}

/// Refuses with 53400 when the tenant's plan does not allow `adding` more of `limit`.
/// Runs inside a privileged section.
pub fn enforce(
    client: &SpiClient<'_>,
    tenant_id: &str,
    limit: Limit,
    adding: i64,
) -> Result<(), SqlError> {
    let max = limit_of(client, tenant_id, limit)?;
    if max.is_none() {
        return Ok(());
    }
    let used_sql = match limit {
        Limit::Datasets => "SELECT count(*) FROM barecount.datasets WHERE tenant_id = $1",
        Limit::PublishedVersions => {
            "SELECT count(*) FROM barecount.dataset_versions WHERE tenant_id = $1 AND status <> 'retired'"
        }
        Limit::ExportsPerDay => {
            "SELECT coalesce(sum(events), 0)::bigint FROM barecount.usage \
              WHERE tenant_id = $1 AND kind = 'export' AND day = (now() AT TIME ZONE 'UTC')::date"
        }
        Limit::RowsServedPerDay => {
            "SELECT coalesce(sum(rows), 0)::bigint FROM barecount.usage \
              WHERE tenant_id = $1 AND kind = 'read' AND day = (now() AT TIME ZONE 'UTC')::date"
        }
    };
    let used = client
        .select(used_sql, Some(1), &[tenant_id.into()])?
        .first()
        .get::<i64>(1)?
        .unwrap_or(0);
    entitlement::check(tenant_id, limit, max, used, adding)?;
    Ok(())
}

/// Adds one event of `kind` with its rows and bytes to today's usage. Runs inside a privileged
/// section, in the caller's transaction (so a rolled-back action is not metered).
pub fn meter(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    kind: &str,
    rows: i64,
    bytes: i64,
) -> Result<(), SqlError> {
    client.update(
        "INSERT INTO barecount.usage AS u (tenant_id, day, kind, events, rows, bytes) \
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2, 1, $3, $4) \
         ON CONFLICT (tenant_id, day, kind) DO UPDATE \
           SET events = u.events + 1, rows = u.rows + excluded.rows, bytes = u.bytes + excluded.bytes",
        None,
        &[tenant_id.into(), kind.into(), rows.into(), bytes.into()],
    )?;
    Ok(())
}

/// For gateways: check the plan and meter a read or an export of `rows` rows and `bytes` bytes
/// for a tenant. Refuses with 53400 past the tenant's daily limit, and then meters nothing.
#[pg_extern(volatile, parallel_unsafe)]
fn usage_charge(tenant_id: &str, kind: &str, rows: i64, bytes: i64) {
    Spi::connect_mut(|client| {
        if !session_has_role(client, "barecount_admin")? {
            return Err(
                denied("charge usage").hint("Gateways connect as a member of barecount_admin.")
            );
        }
        if rows < 0 || bytes < 0 {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "rows and bytes must not be negative",
            ));
        }
        privilege::as_owner(|| {
            tenant::require_exists(client, tenant_id)?;
            tenant::require_active(client, tenant_id)?;
            tenant::lock_object(client, "usage", tenant_id, kind)?;
            match kind {
                "read" => enforce(client, tenant_id, Limit::RowsServedPerDay, rows)?,
                "export" => enforce(client, tenant_id, Limit::ExportsPerDay, 1)?,
                other => {
                    return Err(SqlError::new(
                        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                        format!("usage kind \"{other}\" is not charged by gateways"),
                    )
                    .hint(
                        "Gateways charge read and export; the extension meters the rest itself.",
                    ))
                }
            }
            meter(client, tenant_id, kind, rows, bytes)
        })
    })
    .or_raise()
}
