//! Appending to the evidence ledger, inside the caller's transaction.
//!
//! Concurrency: an append takes a transaction-scoped advisory lock before it reads the chain's
//! tail, so appends serialize on the link step and the chain never forks; the lock is held until
//! commit or rollback, and a rolled-back transaction leaves no entry (the sequence number is the
//! tail's plus one, not a sequence object, so there are no gaps either).

use crate::errors::SqlError;
use crate::privilege;
use barecount_core::ledger::{canonical_json, decode, hash_of, LedgerEntry, GENESIS_HASH};
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::Value;

/// Advisory lock key that serializes ledger appends (`hashtext('barecount.ledger')` is not
/// stable across major versions, so the key is a constant).
pub(crate) const LEDGER_LOCK_KEY: i64 = 0x4243_4c45_4447_4552; // "BCLEDGER"

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
            "SELECT $1::jsonb, session_user::text, \
                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            Some(1),
            &[JsonB(inputs.clone()).into()],
        )?
        .first();
    let stored_inputs = meta.get::<JsonB>(1)?.map(|j| j.0).unwrap_or(Value::Null);
    let actor = meta.get::<String>(2)?.unwrap_or_default();
    let at_text = meta.get::<String>(3)?.unwrap_or_default();
    let seq = prev_seq + 1;
    let inputs_json = canonical_json(&stored_inputs);
    let entry = LedgerEntry {
        seq,
        tenant_id,
        actor: &actor,
        at: &at_text,
        event_type,
        subject,
        inputs: &inputs_json,
        content_hash,
        prev_hash: &prev_hash,
    };
    // The canonical bytes are what is stored; every readable column of the entry is computed
    // from them (generated columns), so what is read is what was hashed.
    let canonical = entry.canonical_bytes();
    let entry_hash = hash_of(&canonical);
    client.update(
        "INSERT INTO barecount.ledger (canonical, entry_hash) VALUES ($1, $2)",
        None,
        &[canonical.as_slice().into(), entry_hash.as_str().into()],
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

// The ledger's readable columns are generated from its stored canonical bytes by these four
// functions (see sql/ledger.sql). Immutable: the result depends on the bytes alone. Parallel
// safe: pure decoding, no SPI, no state, no privileged section.

fn decoded(canonical: &[u8]) -> LedgerEntry<'_> {
    decode(canonical).unwrap_or_else(|why| {
        SqlError::new(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!("barecount.ledger: the canonical bytes are not a ledger entry: {why}"),
        )
        .detail("Entries are encoded as barecount-ledger-v1 by BareCount's own append.")
        .hint("Ledger entries are written by BareCount functions only.")
        .raise()
    })
}

/// The sequence number in a ledger entry's canonical bytes (for the generated column `seq`).
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn _ledger_seq(canonical: &[u8]) -> i64 {
    decoded(canonical).seq
}

/// A text field of a ledger entry's canonical bytes (for the generated columns): 2 tenant_id,
/// 3 actor, 5 event_type, 6 subject, 8 content_hash (NULL when empty), 9 prev_hash.
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn _ledger_field(canonical: &[u8], field: i32) -> Option<String> {
    let d = decoded(canonical);
    let value = match field {
        2 => Some(d.tenant_id),
        3 => Some(d.actor),
        5 => Some(d.event_type),
        6 => Some(d.subject),
        8 => d.content_hash,
        9 => Some(d.prev_hash),
        _ => SqlError::new(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("barecount._ledger_field: field {field} is not a text field"),
        )
        .hint("Text fields are 2, 3, 5, 6, 8 and 9.")
        .raise(),
    };
    value.map(str::to_owned)
}

/// The time of a ledger entry's canonical bytes (for the generated column `at`).
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn _ledger_at(canonical: &[u8]) -> pgrx::datum::TimestampWithTimeZone {
    let d = decoded(canonical);
    barecount_core::ledger::at_micros(d.at)
        .ok()
        .and_then(|us| pgrx::datum::TimestampWithTimeZone::try_from(us).ok())
        .unwrap_or_else(|| {
            SqlError::new(
                pgrx::PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                format!("barecount.ledger: the time {} is out of range", d.at),
            )
            .raise()
        })
}

/// The inputs of a ledger entry's canonical bytes, as jsonb (for the generated column `inputs`).
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn _ledger_inputs(canonical: &[u8]) -> JsonB {
    let d = decoded(canonical);
    match serde_json::from_str::<Value>(d.inputs) {
        Ok(v) => JsonB(v),
        Err(e) => SqlError::new(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!(
                "barecount.ledger: entry {} has inputs that are not JSON: {e}",
                d.seq
            ),
        )
        .raise(),
    }
}
