//! Appending to the evidence ledger, inside the caller's transaction.
//!
//! Concurrency: an append takes a transaction-scoped advisory lock before it reads the chain's
//! tail, so appends serialize on the link step and the chain never forks; the lock is held until
//! commit or rollback, and a rolled-back transaction leaves no entry (the sequence number is the
//! tail's plus one, not a sequence object, so there are no gaps either).

use crate::errors::SqlError;
use crate::privilege;
use barecount_core::ledger::{LedgerEntry, GENESIS_HASH};
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::Value;

/// Advisory lock key that serializes ledger appends (`hashtext('barecount.ledger')` is not
/// stable across major versions, so the key is a constant).
const LEDGER_LOCK_KEY: i64 = 0x4243_4c45_4447_4552; // "BCLEDGER"

/// What an append returns: the entry's place and hash.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub seq: i64,
    pub entry_hash: String,
}

pub fn append(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    event_type: &str,
    subject: &str,
    inputs: &Value,
    content_hash: Option<&str>,
) -> Result<Receipt, SqlError> {
    // The chain spans tenants, so its tail must be read past row-level security.
    privilege::as_owner(|| {
        append_as_owner(client, tenant_id, event_type, subject, inputs, content_hash)
    })
}

fn append_as_owner(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    event_type: &str,
    subject: &str,
    inputs: &Value,
    content_hash: Option<&str>,
) -> Result<Receipt, SqlError> {
    client.update(
        "SELECT pg_advisory_xact_lock($1)",
        None,
        &[LEDGER_LOCK_KEY.into()],
    )?;
    let tail = client.select(
        "SELECT seq, entry_hash FROM barecount.ledger ORDER BY seq DESC LIMIT 1",
        Some(1),
        &[],
    )?;
    let (prev_seq, prev_hash) = if tail.is_empty() {
        (0_i64, GENESIS_HASH.to_owned())
    } else {
        let row = tail.first();
        (
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<String>(2)?.unwrap_or_default(),
        )
    };
    // Normalize inputs through jsonb so the hash is computed over what is stored.
    let meta = client
        .select(
            "SELECT $1::jsonb, session_user::text, now(), \
                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            Some(1),
            &[JsonB(inputs.clone()).into()],
        )?
        .first();
    let stored_inputs = meta.get::<JsonB>(1)?.map(|j| j.0).unwrap_or(Value::Null);
    let actor = meta.get::<String>(2)?.unwrap_or_default();
    let at = meta.get::<pgrx::datum::TimestampWithTimeZone>(3)?;
    let at_text = meta.get::<String>(4)?.unwrap_or_default();
    let seq = prev_seq + 1;
    let entry = LedgerEntry {
        seq,
        tenant_id,
        actor: &actor,
        at: &at_text,
        event_type,
        subject,
        inputs: &stored_inputs,
        content_hash,
        prev_hash: &prev_hash,
    };
    let entry_hash = entry.hash();
    client.update(
        "INSERT INTO barecount.ledger \
           (seq, tenant_id, actor, at, event_type, subject, inputs, content_hash, prev_hash, entry_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        None,
        &[
            seq.into(),
            tenant_id.into(),
            actor.as_str().into(),
            at.into(),
            event_type.into(),
            subject.into(),
            JsonB(stored_inputs.clone()).into(),
            content_hash.into(),
            prev_hash.as_str().into(),
            entry_hash.as_str().into(),
        ],
    )?;
    Ok(Receipt { seq, entry_hash })
}

/// For the `barecount_store_write` statement trigger on gdp and kpi tables: a receipt for a
/// write made outside BareCount's own sections (BareCount's writes have receipts of their own).
/// Not granted to anyone: only the trigger function (owned by barecount_owner) calls it.
#[pgrx::pg_extern(volatile, parallel_unsafe)]
fn _store_write_receipt(rel: pgrx::pg_sys::Oid, op: &str) {
    use crate::errors::OrRaise;
    if privilege::in_section() {
        return;
    }
    pgrx::Spi::connect_mut(|client| {
        let tenant_id = crate::tenant::current(client)?;
        let row = client
            .select(
                "SELECT $1::regclass::text, left(current_query(), 4000)",
                Some(1),
                &[rel.into()],
            )?
            .first();
        let relation = row.get::<String>(1)?.unwrap_or_default();
        let statement = row.get::<String>(2)?;
        append(
            client,
            &tenant_id,
            "store_write",
            &relation,
            &serde_json::json!({"inputs": [], "outputs": [relation], "operation": op,
                                "statement": statement}),
            None,
        )?;
        Ok::<_, SqlError>(())
    })
    .or_raise()
}

/// For BareCount's own plpgsql helpers (tenant membership): appends a receipt. Not granted to
/// anyone: only functions owned by barecount_owner call it.
#[pgrx::pg_extern(volatile, parallel_unsafe)]
fn _ledger_append(tenant_id: &str, event_type: &str, subject: &str, inputs: JsonB) -> i64 {
    use crate::errors::OrRaise;
    pgrx::Spi::connect_mut(|client| {
        append(client, tenant_id, event_type, subject, &inputs.0, None).map(|r| r.seq)
    })
    .or_raise()
}
