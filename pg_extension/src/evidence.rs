//! Proving history from SQL: `ledger_verify`, `ledger_digest`, `verify_dataset`.

use crate::errors::{OrRaise, SqlError};
use crate::publish::{columns_of, content_hash};
use crate::{privilege, tenant};
use barecount_core::ident::quote_qualified;
use barecount_core::ledger::{verify_unordered, Verifier};
use pgrx::prelude::*;

/// Rows fetched per round trip while verifying in sequence order.
const FETCH: i64 = 10_000;
/// Bytes of entries met before their turn that a heap-order verification keeps waiting.
const WAITING: usize = 64 << 20;

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
            let layout = match layout(client)? {
                Ok(layout) => layout,
                Err(reason) => return Ok((false, 0, 0, 0, String::new(), None, Some(reason))),
            };
            // Fast path: one pass over the heap in physical order, reading each entry in its
            // buffer. Concurrent writers leave entries a little out of sequence; those wait
            // (up to WAITING bytes) for their turn. SHA-256 runs on a helper thread (pure Rust,
            // it calls nothing in Postgres) while this backend reads on. A clean result is
            // definitive; a break, or too much out of place, is settled by a second pass in
            // sequence order through the primary key, which places the break exactly.
            let fast = verify_unordered(digest.clone(), WAITING, |push| scan_heap(&layout, push));
            let report = match fast {
                Some(r) if r.first_break.is_none() => r,
                _ => in_sequence_order(client, digest)?,
            };
            Ok((
                report.first_break.is_none(),
                // redacted entries (an offboarded tenant's) count: their links were checked
                (report.checked + report.redacted) as i64,
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

/// Verifies the chain reading entries in sequence order through the primary key, a batch at a
/// time (keyset pages: an index range scan each, no sort).
fn in_sequence_order(
    client: &pgrx::spi::SpiClient<'_>,
    digest: Option<(i64, String)>,
) -> Result<barecount_core::ledger::Report, SqlError> {
    let mut verifier = Verifier::new(digest);
    let mut after = 0i64;
    // entries of offboarded tenants are redactions (0.2.0): in sequence with the rest
    let redactions = client
        .select(
            "SELECT to_regclass('barecount.ledger_redactions') IS NOT NULL",
            Some(1),
            &[],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false);
    let query = if redactions {
        "SELECT seq, canonical, entry_hash, NULL::text FROM barecount.ledger WHERE seq > $1 \
         UNION ALL SELECT seq, NULL::bytea, entry_hash, prev_hash FROM barecount.ledger_redactions WHERE seq > $1 \
         ORDER BY 1 LIMIT $2"
    } else {
        "SELECT seq, canonical, entry_hash, NULL::text FROM barecount.ledger WHERE seq > $1 ORDER BY seq LIMIT $2"
    };
    loop {
        pgrx::check_for_interrupts!();
        let page = client.select(query, None, &[after.into(), FETCH.into()])?;
        if page.is_empty() {
            break;
        }
        for r in page {
            after = r.get::<i64>(1)?.unwrap_or(after);
            let entry_hash = r.get::<&str>(3)?.unwrap_or_default();
            let ok = match r.get::<&[u8]>(2)? {
                Some(canonical) => verifier.push(canonical, entry_hash),
                None => {
                    verifier.push_redacted(after, r.get::<&str>(4)?.unwrap_or_default(), entry_hash)
                }
            };
            if !ok {
                return Ok(verifier.finish());
            }
        }
    }
    Ok(verifier.finish())
}

/// The ledger's heap and the attribute numbers of the two columns verification reads.
struct Layout {
    rel: pg_sys::Oid,
    canonical: usize,
    entry_hash: usize,
}

/// Feeds every ledger entry visible to the statement's snapshot to `push` — its canonical bytes
/// and stored hash, read in place in the shared buffer, no copy — in the heap's physical order,
/// until `push` returns false.
#[allow(unsafe_code)]
fn scan_heap(layout: &Layout, push: &mut dyn FnMut(&[u8], &str) -> bool) {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: the relation is opened and locked for the scan and closed after it; the tuple a
    // heap_getnext returns stays valid (its buffer pinned) until the next call, and the slices
    // made from it are used only before that call; attribute numbers come from pg_attribute
    // and are checked against natts; anything detoasting allocates lives in `scratch`, reset every
    // 1,024 tuples, after the slices of earlier tuples are gone. An ERROR (a cancel) unwinds
    // through here and the transaction's abort releases the scan, the pin and the lock.
    unsafe {
        let rel = pg_sys::table_open(layout.rel, lock);
        let desc = (*rel).rd_att;
        let natts = usize::try_from((*desc).natts).unwrap_or(0);
        if layout.canonical > natts || layout.entry_hash > natts {
            pg_sys::table_close(rel, lock);
            return;
        }
        let scan =
            pg_sys::table_beginscan(rel, pg_sys::GetActiveSnapshot(), 0, std::ptr::null_mut());
        let mut scratch = pgrx::PgMemoryContexts::new("ledger_verify");
        let mut n = 0u64;
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            n += 1;
            if n.is_multiple_of(1024) {
                pgrx::check_for_interrupts!();
                scratch.reset();
            }
            let go = scratch.switch_to(|_| {
                // only the two attributes read are deformed (they lead the table)
                let bytes = |attnum: usize| -> &[u8] {
                    let mut null = true;
                    let datum = pg_sys::heap_getattr(tuple, attnum as i32, desc, &mut null);
                    if null {
                        &[]
                    } else {
                        pgrx::varlena::varlena_to_byte_slice(pg_sys::pg_detoast_datum_packed(
                            datum.cast_mut_ptr(),
                        ))
                    }
                };
                let canonical = bytes(layout.canonical);
                let hash = std::str::from_utf8(bytes(layout.entry_hash)).unwrap_or("");
                push(canonical, hash)
            });
            if !go {
                break;
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, lock);
    }
}

/// The ledger's columns and the functions that generate them, as created: the readable columns
/// say what was hashed only while they are generated from `canonical` by BareCount's own code.
const GENERATED: &[(&str, &str)] = &[
    ("seq", "_ledger_seq(canonical)"),
    ("tenant_id", "_ledger_field(canonical, 2)"),
    ("actor", "_ledger_field(canonical, 3)"),
    ("at", "_ledger_at(canonical)"),
    ("event_type", "_ledger_field(canonical, 5)"),
    ("subject", "_ledger_field(canonical, 6)"),
    ("inputs", "_ledger_inputs(canonical)"),
    ("content_hash", "_ledger_field(canonical, 8)"),
    ("prev_hash", "_ledger_field(canonical, 9)"),
];

/// Where verification reads the ledger — or why its readable columns can no longer be trusted
/// to show what was hashed (a column no longer generated, say after `ALTER TABLE … DROP
/// EXPRESSION`, or a generating function replaced). One look at the catalog serves both.
fn layout(client: &pgrx::spi::SpiClient<'_>) -> Result<Result<Layout, String>, SqlError> {
    let cols = client.select(
        "SELECT a.attname::text, a.attnum::int, a.attgenerated::text, pg_get_expr(d.adbin, d.adrelid, false), \
                a.attrelid::oid \
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
          WHERE a.attrelid = 'barecount.ledger'::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        None,
        &[],
    )?;
    let mut found = std::collections::HashMap::new();
    let mut rel = pg_sys::InvalidOid;
    for r in cols {
        let name = r.get::<String>(1)?.unwrap_or_default();
        let attnum = r
            .get::<i32>(2)?
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let generated = r.get::<String>(3)?.unwrap_or_default();
        let expr = r.get::<String>(4)?.unwrap_or_default();
        rel = r.get::<pg_sys::Oid>(5)?.unwrap_or(rel);
        found.insert(name, (attnum, generated, expr));
    }
    for (col, expected) in GENERATED {
        let ok = found.get(*col).is_some_and(|(_, g, e)| {
            g == "s" && e.strip_prefix("barecount.").unwrap_or(e) == *expected
        });
        if !ok {
            return Ok(Err(format!(
                "column {col} of barecount.ledger is no longer generated from the hashed bytes by \
                 barecount.{expected} (altered outside BareCount): its values may not be what was hashed"
            )));
        }
    }
    let attnum = |col: &str| -> Result<usize, SqlError> {
        found
            .get(col)
            .map(|(n, _, _)| *n)
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!("barecount.ledger has lost its {col} column"),
                )
            })
    };
    let layout = Layout {
        rel,
        canonical: attnum("canonical")?,
        entry_hash: attnum("entry_hash")?,
    };
    let funcs = client.select(
        "SELECT p.proname::text, l.lanname::text, coalesce(p.probin, ''), p.prosrc \
           FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
          WHERE p.pronamespace = 'barecount'::regnamespace \
            AND p.proname IN ('_ledger_seq', '_ledger_field', '_ledger_at', '_ledger_inputs')",
        None,
        &[],
    )?;
    let mut seen = 0;
    for r in funcs {
        let name = r.get::<String>(1)?.unwrap_or_default();
        let lang = r.get::<String>(2)?.unwrap_or_default();
        let bin = r.get::<String>(3)?.unwrap_or_default();
        let src = r.get::<String>(4)?.unwrap_or_default();
        // module_pathname in barecount.control
        let ours = bin == "barecount" || bin == "$libdir/barecount";
        if lang != "c" || !ours || src != format!("{name}_wrapper") {
            return Ok(Err(format!(
                "function barecount.{name}, which generates ledger columns, was replaced \
                 (now {lang}, {bin:?}): the columns may not show what was hashed"
            )));
        }
        seen += 1;
    }
    if seen != 4 {
        return Ok(Err(
            "the functions that generate the ledger's columns are not all BareCount's own".into(),
        ));
    }
    Ok(Ok(layout))
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
