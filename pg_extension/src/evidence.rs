//! Proving history from SQL: `ledger_verify`, `ledger_digest`, `verify_dataset`.

use crate::errors::{OrRaise, SqlError};
use crate::publish::{columns_of, content_hash};
use crate::{privilege, tenant};
use barecount_core::ident::quote_qualified;
use barecount_core::ledger::{StoredEntry, Verifier};
use pgrx::prelude::*;
use serde_json::Value;

/// Rows fetched per round trip while verifying.
const FETCH: i64 = 10_000;

type VerifyRow = (bool, i64, i64, i64, String, Option<i64>, Option<String>);

/// Recompute the whole chain: every entry's hash, every link, every sequence number, and the
/// kept digest if given. Reports the first broken entry and why.
#[allow(clippy::type_complexity)]
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn ledger_verify(
    digest_seq: default!(Option<i64>, "NULL"),
    digest_hash: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(checked, i64),
        name!(bytes_hashed, i64),
        name!(last_seq, i64),
        name!(last_hash, String),
        name!(first_broken_seq, Option<i64>),
        name!(reason, Option<String>),
    ),
> {
    let digest = match (digest_seq, digest_hash) {
        (Some(s), Some(h)) => Some((s, h.to_owned())),
        (None, None) => None,
        _ => SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "a digest is a sequence number and a hash; pass both or neither",
        )
        .hint("Use the values barecount.ledger_digest() returned.")
        .raise(),
    };
    let row: VerifyRow = Spi::connect_mut(|client| {
        privilege::as_owner(|| {
            let mut verifier = Verifier::new(digest);
            let cursor = client.open_cursor(
                "SELECT seq, tenant_id, actor, \
                        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                        event_type, subject, inputs, content_hash, prev_hash, entry_hash \
                   FROM barecount.ledger ORDER BY seq",
                &[],
            );
            let mut cursor = cursor;
            'fetch: loop {
                pgrx::check_for_interrupts!();
                let batch = cursor.fetch(FETCH)?;
                if batch.is_empty() {
                    break;
                }
                for r in batch {
                    let e = StoredEntry {
                        seq: r.get::<i64>(1)?.unwrap_or_default(),
                        tenant_id: r.get::<String>(2)?.unwrap_or_default(),
                        actor: r.get::<String>(3)?.unwrap_or_default(),
                        at: r.get::<String>(4)?.unwrap_or_default(),
                        event_type: r.get::<String>(5)?.unwrap_or_default(),
                        subject: r.get::<String>(6)?.unwrap_or_default(),
                        inputs: r
                            .get::<crate::jsonarg::JsonbArg>(7)?
                            .map(|j| j.0)
                            .unwrap_or(Value::Null),
                        content_hash: r.get::<String>(8)?,
                        prev_hash: r.get::<String>(9)?.unwrap_or_default(),
                        entry_hash: r.get::<String>(10)?.unwrap_or_default(),
                    };
                    if !verifier.push(&e) {
                        break 'fetch;
                    }
                }
            }
            let report = verifier.finish();
            Ok((
                report.first_break.is_none(),
                report.checked as i64,
                report.bytes as i64,
                report.last_seq,
                report.last_hash,
                report.first_break.as_ref().map(|b| b.seq()),
                report.first_break.as_ref().map(|b| b.reason()),
            ))
        })
    })
    .or_raise();
    TableIterator::once(row)
}

/// The ledger's tail (sequence, hash): keep it outside the database; verifying against it later
/// proves the history up to it was not rewritten or truncated.
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn ledger_digest() -> TableIterator<'static, (name!(seq, i64), name!(entry_hash, String))> {
    let row = Spi::connect_mut(|client| {
        privilege::as_owner(|| {
            let t = client.select(
                "SELECT seq, entry_hash FROM barecount.ledger ORDER BY seq DESC LIMIT 1",
                Some(1),
                &[],
            )?;
            if t.is_empty() {
                return Ok((0, barecount_core::ledger::GENESIS_HASH.to_owned()));
            }
            let r = t.first();
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        })
    })
    .or_raise();
    TableIterator::once(row)
}

/// Recompute a published version's content hash and compare it with its catalog row and its
/// publish receipt in the ledger. Version NULL means the latest.
#[allow(clippy::type_complexity)]
// parallel unsafe: it switches to barecount_owner (a privileged section) and reads through
// pgrx's SPI, which runs read-write once the transaction has written; Postgres refuses both
// anywhere in a parallel operation, so it never runs in one
#[pg_extern(stable, parallel_unsafe)]
fn verify_dataset(
    dataset: Option<&str>,
    version: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(dataset, String),
        name!(version, i32),
        name!(ok, bool),
        name!(recorded_hash, String),
        name!(computed_hash, String),
        name!(receipt_seq, i64),
        name!(receipt_hash, Option<String>),
        name!(row_count, i64),
    ),
> {
    let dataset = crate::errors::required(dataset, "verify_dataset", "dataset");
    let row = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let v = client.select(
                "SELECT v.version, v.relation, v.content_hash, v.ledger_seq, l.content_hash \
                   FROM barecount.dataset_versions v \
                   JOIN barecount.datasets d ON d.tenant_id = v.tenant_id AND d.dataset = v.dataset \
                   LEFT JOIN barecount.ledger l ON l.seq = v.ledger_seq AND l.tenant_id = v.tenant_id \
                        AND l.event_type = 'publish' AND l.subject = split_part(v.relation, '.', 1) || '.' || v.dataset || '@' || v.version \
                  WHERE v.tenant_id = $1 AND v.dataset = $2 AND v.version = coalesce($3, d.latest_version)",
                Some(1),
                &[tenant_id.as_str().into(), dataset.into(), version.into()],
            )?;
            if v.is_empty() {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    match version {
                        Some(n) => format!("dataset \"{dataset}\" has no published version {n}"),
                        None => format!("dataset \"{dataset}\" is not published"),
                    },
                ));
            }
            let r = v.first();
            let version = r.get::<i32>(1)?.unwrap_or_default();
            let relation = r.get::<String>(2)?.unwrap_or_default();
            let recorded = r.get::<String>(3)?.unwrap_or_default();
            let seq = r.get::<i64>(4)?.unwrap_or_default();
            let receipt_hash = r.get::<String>(5)?;
            let quoted = quote_qualified(&relation);
            let cols = columns_of(client, &quoted)?;
            let (computed, rows) = content_hash(client, &quoted, &cols)?;
            let ok = computed == recorded && receipt_hash.as_deref() == Some(recorded.as_str());
            Ok((dataset.to_owned(), version, ok, recorded, computed, seq, receipt_hash, rows))
        })
    })
    .or_raise();
    TableIterator::once(row)
}
