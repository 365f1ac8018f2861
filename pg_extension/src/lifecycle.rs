//! Published versions over time: pins, deprecation and retirement. A version is retired only
//! by an explicit call, never while something pins it, and never the latest one.

use crate::errors::{OrRaise, SqlError};
use crate::{ledger, privilege, tenant};
use barecount_core::ident::quote_qualified;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

fn version_status(
    client: &SpiClient<'_>,
    tenant_id: &str,
    dataset: &str,
    version: i32,
) -> Result<(String, bool, String), SqlError> {
    let t = client.select(
        "SELECT v.status, d.latest_version = v.version, v.relation FROM barecount.dataset_versions v \
           JOIN barecount.datasets d ON d.tenant_id = v.tenant_id AND d.dataset = v.dataset \
          WHERE v.tenant_id = $1 AND v.dataset = $2 AND v.version = $3",
        Some(1),
        &[tenant_id.into(), dataset.into(), version.into()],
    )?;
    if t.is_empty() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("dataset \"{dataset}\" has no version {version}"),
        ));
    }
    let r = t.first();
    Ok((
        r.get::<String>(1)?.unwrap_or_default(),
        r.get::<bool>(2)?.unwrap_or(false),
        r.get::<String>(3)?.unwrap_or_default(),
    ))
}

/// Pin a version for a holder (a dashboard, a report): it cannot be retired while pinned.
#[pg_extern(volatile, parallel_unsafe)]
fn dataset_pin(dataset: &str, version: i32, holder: &str) -> bool {
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let (status, _, _) = version_status(client, &tenant_id, dataset, version)?;
            if status == "retired" {
                return Err(SqlError::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, format!("{dataset} version {version} is retired and cannot be pinned")));
            }
            let n = client
                .update(
                    "INSERT INTO barecount.dataset_pins (tenant_id, dataset, version, holder) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    None,
                    &[tenant_id.as_str().into(), dataset.into(), version.into(), holder.into()],
                )?
                .len();
            if n > 0 {
                pin_receipt(client, &tenant_id, "dataset_pin", dataset, version, holder)?;
            }
            Ok(n > 0)
        })
    })
    .or_raise()
}

/// Remove a holder's pin; true if there was one.
#[pg_extern(volatile, parallel_unsafe)]
fn dataset_unpin(dataset: &str, version: i32, holder: &str) -> bool {
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let n = client
                .update(
                    "DELETE FROM barecount.dataset_pins WHERE tenant_id = $1 AND dataset = $2 AND version = $3 AND holder = $4",
                    None,
                    &[tenant_id.as_str().into(), dataset.into(), version.into(), holder.into()],
                )?
                .len();
            if n > 0 {
                pin_receipt(client, &tenant_id, "dataset_unpin", dataset, version, holder)?;
            }
            Ok(n > 0)
        })
    })
    .or_raise()
}

/// The receipt of a pin or unpin: a pin decides whether a version may be retired.
fn pin_receipt(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    event: &str,
    dataset: &str,
    version: i32,
    holder: &str,
) -> Result<(), SqlError> {
    ledger::append(
        client,
        tenant_id,
        event,
        &format!(
            "{}.{dataset}@{version}",
            tenant::schema(tenant_id, barecount_core::layer::Layer::Published)
        ),
        &json!({"inputs": [], "outputs": [], "dataset": dataset, "version": version, "holder": holder}),
        None,
    )?;
    Ok(())
}

fn change(dataset: &str, version: i32, to: &str) -> String {
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            tenant::lock_object(client, "publish", "*", dataset)?;
            let (status, latest, relation) = version_status(client, &tenant_id, dataset, version)?;
            if latest {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("version {version} is the latest of dataset \"{dataset}\" and cannot be {to}"),
                )
                .hint("Publish a newer version first."));
            }
            if status == to {
                return Ok(status);
            }
            if to == "retired" {
                let holders: Vec<String> = client
                    .select(
                        "SELECT holder FROM barecount.dataset_pins WHERE tenant_id = $1 AND dataset = $2 AND version = $3 ORDER BY holder",
                        None,
                        &[tenant_id.as_str().into(), dataset.into(), version.into()],
                    )?
                    .filter_map(|r| r.get::<String>(1).ok().flatten())
                    .collect();
                if !holders.is_empty() {
                    return Err(SqlError::new(
                        PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                        format!("{dataset} version {version} is pinned by {} and cannot be retired", holders.join(", ")),
                    )
                    .hint("Unpin it with barecount.dataset_unpin(...) first."));
                }
            }
            if status == "retired" {
                return Err(SqlError::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, format!("{dataset} version {version} is retired")));
            }
            ledger::append(
                client,
                &tenant_id,
                &format!("dataset_{}", if to == "retired" { "retire" } else { "deprecate" }),
                &format!(
                    "{}.{dataset}@{version}",
                    tenant::schema(&tenant_id, barecount_core::layer::Layer::Published)
                ),
                &json!({"inputs": [], "outputs": [], "from": status, "to": to}),
                None,
            )?;
            client.update(
                "UPDATE barecount.dataset_versions SET status = $4 WHERE tenant_id = $1 AND dataset = $2 AND version = $3",
                None,
                &[tenant_id.as_str().into(), dataset.into(), version.into(), to.into()],
            )?;
            if to == "retired" {
                // kept for verification, no longer readable
                let rel = quote_qualified(&relation);
                client.update(&format!("REVOKE SELECT ON {rel} FROM barecount_reader"), None, &[])?;
            }
            Ok(to.to_owned())
        })
    })
    .or_raise()
}

/// Mark an old version deprecated (still served; readers should move on).
#[pg_extern(volatile, parallel_unsafe)]
fn dataset_deprecate(dataset: &str, version: i32) -> String {
    change(dataset, version, "deprecated")
}

/// Retire an old version: no longer served or readable (kept for verification). Refused while
/// it is pinned or if it is the latest.
#[pg_extern(volatile, parallel_unsafe)]
fn dataset_retire(dataset: &str, version: i32) -> String {
    change(dataset, version, "retired")
}
