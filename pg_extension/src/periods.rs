//! Period close: `period_close`, `period_reopen`, and `restatement`, the only way to change
//! rows of a closed period in a guarded table (see `barecount.period_guard`).

use crate::calendars::period_for;
use crate::errors::{OrRaise, SqlError};
use crate::{ledger, privilege, tenant, usersql};
use std::cell::Cell;

thread_local! {
    /// The receipt of the restatement whose statement is running, with its transaction.
    static RESTATING: Cell<Option<(u32, i64)>> = const { Cell::new(None) };
}

/// Sets the restatement marker; clears it when dropped (also while an error unwinds).
struct Restating;

impl Restating {
    fn set(seq: i64) -> Restating {
        RESTATING.with(|r| r.set(Some((privilege::statement_key().0, seq))));
        Restating
    }
}

impl Drop for Restating {
    fn drop(&mut self) {
        RESTATING.with(|r| r.set(None));
    }
}

/// For the period guard: the receipt of the restatement whose statement is running now in
/// this transaction, or NULL. Set only by `barecount.restatement`; no SQL can set it.
#[pg_extern(volatile, parallel_unsafe)]
fn _restatement_seq() -> Option<i64> {
    let lxid = privilege::statement_key().0;
    RESTATING
        .with(Cell::get)
        .and_then(|(x, seq)| (x == lxid).then_some(seq))
}
use pgrx::datum::Date;
use pgrx::prelude::*;
use serde_json::json;

fn set_status(calendar: &str, grain: &str, d: Date, status: &str, reason: Option<&str>) -> String {
    let p = period_for(d, calendar, grain);
    let label = p.label();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let current = client
                .select(
                    "SELECT status FROM barecount.period_status WHERE tenant_id = $1 AND calendar = $2 AND grain = $3 AND label = $4",
                    Some(1),
                    &[tenant_id.as_str().into(), calendar.into(), grain.into(), label.as_str().into()],
                )?
                .first()
                .get::<String>(1)
                .unwrap_or(None)
                .unwrap_or_else(|| "open".into());
            if current == status {
                return Ok(());
            }
            if status == "open" && current == "closed" && reason.is_none_or(|r| r.trim().is_empty()) {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("reopening closed period {label} of calendar \"{calendar}\" needs a reason"),
                ));
            }
            let event = if status == "open" { "period_reopen" } else { "period_close" };
            let receipt = ledger::append(
                client,
                &tenant_id,
                event,
                &format!("period:{calendar}/{label}"),
                &json!({"inputs": [], "outputs": [], "calendar": calendar, "grain": grain, "label": label,
                        "from": current, "to": status, "reason": reason}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.period_status (tenant_id, calendar, grain, label, status, reason, ledger_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, calendar, grain, label) DO UPDATE SET status = excluded.status, \
                   reason = excluded.reason, ledger_seq = excluded.ledger_seq, changed_by = session_user, changed_at = now()",
                None,
                &[
                    tenant_id.as_str().into(),
                    calendar.into(),
                    grain.into(),
                    label.as_str().into(),
                    status.into(),
                    reason.into(),
                    receipt.seq.into(),
                ],
            )?;
            Ok(())
        })
    })
    .or_raise();
    label
}

/// Close (or soft-close) the period of `grain` containing the date; writes a receipt.
#[pg_extern(volatile, parallel_unsafe)]
fn period_close(calendar: &str, grain: &str, d: Date, soft: default!(bool, false)) -> String {
    set_status(
        calendar,
        grain,
        d,
        if soft { "soft_closed" } else { "closed" },
        None,
    )
}

/// Reopen the period of `grain` containing the date; a closed period needs a reason.
#[pg_extern(volatile, parallel_unsafe)]
fn period_reopen(
    calendar: Option<&str>,
    grain: Option<&str>,
    d: Option<Date>,
    reason: default!(Option<&str>, "NULL"),
) -> String {
    let calendar = crate::errors::required(calendar, "period_reopen", "calendar");
    let grain = crate::errors::required(grain, "period_reopen", "grain");
    let d = crate::errors::required(d, "period_reopen", "d");
    set_status(calendar, grain, d, "open", reason)
}

/// Run one statement that may change rows of closed periods in guarded tables, recording the
/// reason and the statement in a ledger receipt first. Returns the receipt's sequence number.
#[pg_extern(volatile, parallel_unsafe)]
fn restatement(reason: &str, statement: &str) -> i64 {
    if reason.trim().is_empty() {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "a restatement needs a reason",
        )
        .raise()
    }
    usersql::one_change("the restatement's statement", statement).or_raise();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let txid = client.update("SELECT txid_current()", Some(1), &[])?.first().get::<i64>(1)?.unwrap_or(0);
        let receipt = privilege::as_owner(|| {
            ledger::append(
                client,
                &tenant_id,
                "restatement",
                "restatement",
                &json!({"inputs": [], "outputs": [], "reason": reason, "statement": statement, "txid": txid}),
                None,
            )
        })?;
        // The marker the period guard reads lives in this backend's memory, set only for the
        // duration of the one statement below: no SQL can set it, and it is gone once the
        // statement ends (or fails), so later statements in the transaction are not covered.
        let _marker = Restating::set(receipt.seq);
        // the statement runs as the caller: its privileges and row-level security apply
        client.update(statement, None, &[])?;
        Ok::<_, SqlError>(receipt.seq)
    })
    .or_raise()
}
