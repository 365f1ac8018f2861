//! Cedar policies at the SQL boundary: two pure functions the registry and the enforcement
//! points (sql/barecount--0.1.0--0.2.0.sql) call. They are declared in that file, not by pgrx
//! (`sql = false`), so a fresh install and the update from 0.1.0 create them the same way.

use crate::errors::SqlError;
use barecount_core::policy::{self, Invalid, PolicyError, Request};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

fn sql_error(name: &str, e: PolicyError) -> SqlError {
    let code = match &e {
        PolicyError::Syntax { .. } => PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
        PolicyError::Invalid { kind, .. } => match kind {
            Invalid::UnknownAttribute => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            Invalid::UnknownName => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            Invalid::Type => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        },
        PolicyError::Unsupported(_) => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        PolicyError::Request(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    };
    let hint = match &e {
        PolicyError::Invalid { .. } => Some(
            "Policies see BareCount::Role (roles), BareCount::Dataset (tags, layer, contract), BareCount::Endpoint (kind, host), actions ingest, publish, export, read, deliver, and context now, hour, weekday, rows, scopes, channel, format.",
        ),
        PolicyError::Syntax { .. } => Some("Policies are written in Cedar: https://docs.cedarpolicy.com/policies/syntax-policy.html"),
        _ => None,
    };
    let err = SqlError::new(code, format!("policy \"{name}\": {e}"));
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

/// Parses and validates a policy document against BareCount's Cedar schema; its number of
/// statements, or the first error with its line and column.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn _policy_parse(name: &str, body: &str) -> i32 {
    match policy::parse(name, body) {
        Ok(doc) => i32::try_from(doc.statements()).unwrap_or(i32::MAX),
        Err(e) => sql_error(name, e).raise(),
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Decides a request (`{tenant, principal, roles, action, resource, resource_attrs, context}`)
/// under the documents (`[{name, body}]`, validated when they were registered): `{allow,
/// policies, reasons, obligations, errors}`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn _policy_decide(documents: JsonB, request: JsonB) -> JsonB {
    let mut docs = vec![];
    for d in documents
        .0
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = text(d, "name");
        match policy::parse(&name, &text(d, "body")) {
            Ok(doc) => docs.push(doc),
            Err(e) => sql_error(&name, e).raise(),
        }
    }
    let r = &request.0;
    let req = Request {
        tenant: text(r, "tenant"),
        principal: text(r, "principal"),
        principal_roles: r
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        action: text(r, "action"),
        resource: text(r, "resource"),
        resource_attrs: r.get("resource_attrs").cloned().unwrap_or(json!({})),
        context: r.get("context").cloned().unwrap_or(json!({})),
    };
    match policy::decide(&docs, &req) {
        Ok(d) => JsonB(json!({
            "allow": d.allow,
            "policies": d.policies,
            "reasons": d.reasons,
            "obligations": d.obligations,
            "errors": d.errors,
        })),
        Err(e) => sql_error("request", e).raise(),
    }
}

/// Whether the database has policies at all (over a 0.1.0 schema, before `ALTER EXTENSION
/// barecount UPDATE`, it does not, and nothing is decided).
fn installed(client: &pgrx::spi::SpiClient<'_>) -> Result<bool, SqlError> {
    super::has_function(
        client,
        "barecount._policy_enforce(text, text, text, text, jsonb, boolean)",
    )
}

/// Decides the calling role's `action` on `resource` (ingest, publish in SQL) under its
/// tenant's policies: a receipt when the tenant has policies, 42501 for a denial.
pub fn enforce_caller(
    client: &mut pgrx::spi::SpiClient<'_>,
    action: &str,
    resource: &str,
    context: Value,
) -> Result<(), SqlError> {
    if installed(client)? {
        client.update(
            "SELECT barecount._policy_enforce_caller($1, $2, $3)",
            None,
            &[action.into(), resource.into(), JsonB(context).into()],
        )?;
    }
    Ok(())
}

/// The same for a gateway's credential (`subject`: a login role or `token:<id>`) of `tenant`;
/// runs in the privileged section.
pub fn enforce_subject(
    client: &mut pgrx::spi::SpiClient<'_>,
    tenant: &str,
    subject: &str,
    action: &str,
    resource: &str,
    context: Value,
) -> Result<(), SqlError> {
    if installed(client)? {
        client.update(
            "SELECT barecount._policy_enforce($1, $2, $3, $4, $5, true)",
            None,
            &[
                tenant.into(),
                subject.into(),
                action.into(),
                resource.into(),
                JsonB(context).into(),
            ],
        )?;
    }
    Ok(())
}

/// Decides a playbook's delivery of `action` (the principal `playbook:<name>`, the resource the
/// action's endpoint) under the tenant's policies, in the transaction that made the event, so
/// the decision's receipt stays: the reasons when denied, None when allowed.
pub fn deliver_denied(
    client: &mut pgrx::spi::SpiClient<'_>,
    tenant: &str,
    playbook: &str,
    action: &str,
) -> Result<Option<String>, SqlError> {
    if !installed(client)? {
        return Ok(None);
    }
    let decision = client
        .update(
            "SELECT barecount._policy_enforce($1, 'playbook:' || $2, 'deliver', $3, '{\"channel\": \"worker\"}', false)",
            Some(1),
            &[tenant.into(), playbook.into(), action.into()],
        )?
        .first()
        .get::<JsonB>(1)?
        .map(|j| j.0)
        .unwrap_or(Value::Null);
    if decision.get("allow").and_then(Value::as_bool) == Some(false) {
        let reasons: Vec<&str> = decision
            .get("reasons")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        return Ok(Some(format!(
            "policy forbids deliver of \"{action}\": {}",
            reasons.join("; ")
        )));
    }
    Ok(None)
}
