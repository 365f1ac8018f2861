//! Policies where barecount-flight acts: reads and exports of published datasets are decided
//! by the tenant's Cedar policies (`barecount.gateway_policy_decide`, which records each
//! decision as a receipt and commits it, denials included); a denial is PERMISSION_DENIED with
//! the policies' reasons. A database without policies (schema 0.1.0) decides nothing.

use crate::auth::Caller;
use crate::catalog::Catalog;
use crate::db::Db;
use crate::error::{FlightError, Result};
use serde_json::{json, Value};

/// Decides `action` (read, export) of each dataset for `caller`; the first denial refuses.
pub async fn decide(
    db: &Db,
    caller: &Caller,
    action: &str,
    datasets: &[String],
    context: Value,
) -> Result<()> {
    for dataset in datasets {
        let mut ctx = json!({"channel": "flight", "scopes": caller.scopes});
        if let (Some(all), Some(more)) = (ctx.as_object_mut(), context.as_object()) {
            all.extend(more.clone());
        }
        let decided = db
            .run(|c| {
                let ctx = ctx.clone();
                async move {
                    c.query_one(
                        "SELECT barecount.gateway_policy_decide($1, $2, $3, $4, $5)",
                        &[&caller.tenant, &caller.subject, &action, dataset, &ctx],
                    )
                    .await
                }
            })
            .await;
        let decision: Value = match decided {
            Ok(row) => row.try_get(0)?,
            // the database has no policies yet (0.1.0, not updated): nothing to decide
            Err(FlightError::Internal(m)) if m.contains("(42883)") => return Ok(()),
            Err(e) => return Err(e),
        };
        if decision.get("allow").and_then(Value::as_bool) != Some(true) {
            let reasons: Vec<&str> = decision
                .get("reasons")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            return Err(FlightError::PermissionDenied(format!(
                "policy forbids {action} of \"{dataset}\": {}",
                reasons.join("; ")
            )));
        }
    }
    Ok(())
}

/// The datasets behind SQL table names (`sales`, `sales__v3`) of the caller's catalog.
pub fn datasets(catalog: &Catalog, tables: &[String]) -> Vec<String> {
    let mut out: Vec<String> = tables
        .iter()
        .filter_map(|t| catalog.resolve_table(t).map(|v| v.dataset.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}
