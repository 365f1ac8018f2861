//! Receipts that outlive their transaction. A denial refuses its operation with an error, and
//! the error rolls back everything the transaction wrote, the denial's receipt included.
//! Postgres has no autonomous transactions; a dynamic background worker is one: it connects as
//! the caller's session user, appends the receipt as the extension owner in a transaction of its
//! own, commits and exits, while the caller waits for it (interruptibly) and then raises.
//!
//! The receipts travel in a dynamic shared memory segment the caller creates: a header and the
//! receipts as length-prefixed JSON. The worker sets the status only after its commit.
//!
//! When the caller's transaction already holds the ledger's append lock (it wrote receipts
//! before the denial), the worker would wait for that transaction, which waits for the worker.
//! Then the caller does not wait: it pins the segment (so it outlives the caller's mapping) and
//! the worker first takes the ledger's lock — which it gets once the caller's transaction ends —
//! then closes the segment, reads the receipts, unpins it and appends them. Further denials of
//! the same transaction add their receipts to that open segment instead of starting workers of
//! their own, so a transaction looping over denials cannot fill the server's worker slots. The
//! segment's state word (open, being written, closed) keeps the caller's additions and the
//! worker's reading apart.
//!
//! Unsafe code: the shared memory segment (created, written and read within its length), the
//! backend's identity, and the worker's exported entry point the postmaster calls by name.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::JsonB;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// The segment's header; the receipts follow it, each a u32 length and its JSON. Every field is
/// an atomic: the caller and the worker are two processes.
#[repr(C)]
struct Header {
    /// PENDING, or COMMITTED once the worker's transaction has committed
    status: AtomicU32,
    /// WAITED or DEFERRED
    mode: AtomicU32,
    /// the last receipt's sequence number, once committed
    seq: AtomicI64,
    /// receipts, and the bytes they take after the header
    count: AtomicU32,
    used: AtomicU32,
    /// OPEN, WRITING or CLOSED (a deferred segment)
    state: AtomicU32,
    /// the bytes after the header
    capacity: AtomicU32,
}
const HEADER: usize = std::mem::size_of::<Header>();
const PENDING: u32 = 0;
const COMMITTED: u32 = 1;
/// Modes: the caller waits for the worker, or it does not (the segment is pinned).
const WAITED: u32 = 0;
const DEFERRED: u32 = 1;
/// States of a deferred segment.
const OPEN: u32 = 0;
const CLOSED: u32 = 1;
const WRITING: u32 = 2;
/// Room for the receipts of one transaction's denials while its worker waits (some hundreds).
const DEFERRED_CAPACITY: usize = 512 * 1024;

thread_local! {
    /// The top-level transaction whose deferred segment is open, and the segment.
    static DEFERRED_FOR: std::cell::Cell<(u32, pg_sys::dsm_handle)> = const { std::cell::Cell::new((0, 0)) };
}

/// The caller's transaction already holds the ledger's append lock (it wrote a receipt before
/// the denial): a worker would wait for it.
fn holds_ledger_lock(client: &pgrx::spi::SpiClient<'_>) -> Result<bool, SqlError> {
    let key = crate::ledger::LEDGER_LOCK_KEY;
    let (class, obj) = ((key >> 32) as u32, (key & 0xffff_ffff) as u32);
    Ok(client
        .select(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
               AND pid = pg_catalog.pg_backend_pid() AND granted AND objsubid = 1 \
               AND classid = $1::bigint::oid AND objid = $2::bigint::oid)",
            Some(1),
            &[i64::from(class).into(), i64::from(obj).into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}

/// A mapped segment's header.
///
/// # Safety
/// `base` is a mapped segment of at least [`HEADER`] bytes (aligned: DSM segments are).
unsafe fn header<'a>(base: *mut u8) -> &'a Header {
    unsafe { &*(base as *const Header) }
}

/// Appends `receipt` to an open deferred segment; false when it is closed (its worker has
/// read it) or full.
///
/// # Safety
/// `base` is a mapped deferred segment.
unsafe fn add(base: *mut u8, receipt: &[u8]) -> bool {
    let h = unsafe { header(base) };
    if h.state
        .compare_exchange(OPEN, WRITING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    let used = h.used.load(Ordering::Acquire) as usize;
    let fits = used + 4 + receipt.len() <= h.capacity.load(Ordering::Acquire) as usize;
    if fits {
        unsafe {
            let at = base.add(HEADER + used);
            (at as *mut u32).write_unaligned(receipt.len() as u32);
            std::ptr::copy_nonoverlapping(receipt.as_ptr(), at.add(4), receipt.len());
        }
        h.used
            .store((used + 4 + receipt.len()) as u32, Ordering::Release);
        h.count.fetch_add(1, Ordering::AcqRel);
    }
    h.state.store(OPEN, Ordering::Release);
    fits
}

/// Appends a receipt in a transaction of its own (a background worker's), committed whatever
/// becomes of the caller's: its sequence number; 0 when the caller's transaction holds the
/// ledger's append lock, so the receipt is appended as soon as that transaction ends; NULL when
/// no background worker could be started (max_worker_processes), the worker failed (its error
/// is in the server log), or a transaction's deferred receipts overflow their segment. Only the
/// extension owner may call it (BareCount's denials).
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn _ledger_append_autonomous(
    tenant_id: &str,
    event_type: &str,
    subject: &str,
    inputs: JsonB,
) -> Option<i64> {
    use crate::errors::OrRaise;
    let owner = crate::privilege::owner().or_raise();
    // SAFETY: reads backend-local state.
    if unsafe { pg_sys::GetUserId() } != owner {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "barecount._ledger_append_autonomous is BareCount's own",
        )
        .hint("Receipts are written by BareCount's functions only.")
        .raise();
    }
    let deferred = pgrx::Spi::connect(holds_ledger_lock).or_raise();
    let receipt = serde_json::json!({"tenant_id": tenant_id, "event_type": event_type,
                                     "subject": subject, "inputs": inputs.0})
    .to_string();
    // SAFETY: reads backend-local state (with the lock held the transaction has an id)
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() }.into_inner();
    if deferred && xid != 0 {
        let (open_xid, handle) = DEFERRED_FOR.with(std::cell::Cell::get);
        if open_xid == xid {
            // this transaction's segment: still pinned until its worker has read it
            // SAFETY: a mapping of this backend's is reused; otherwise the segment is
            // attached (NULL if its worker has unpinned it and it is gone) and detached here
            let mapped = unsafe { pg_sys::dsm_find_mapping(handle) };
            let seg = if mapped.is_null() {
                unsafe { pg_sys::dsm_attach(handle) }
            } else {
                mapped
            };
            if !seg.is_null() {
                let added = unsafe {
                    add(
                        pg_sys::dsm_segment_address(seg) as *mut u8,
                        receipt.as_bytes(),
                    )
                };
                if mapped.is_null() {
                    unsafe { pg_sys::dsm_detach(seg) };
                }
                if added {
                    return Some(0);
                }
            }
            // closed (its worker got the lock: the lock was a subtransaction's) or full: a
            // worker of its own
        }
    }
    let capacity = if deferred {
        DEFERRED_CAPACITY.max(receipt.len() + 4)
    } else {
        receipt.len() + 4
    };
    // SAFETY: dsm_create errors out (ERROR) on failure; the segment is HEADER + capacity bytes
    // and the writes below stay inside it. The caller's resource owner detaches it at the end
    // of the transaction if an error comes first.
    let seg = unsafe { pg_sys::dsm_create(HEADER + capacity, 0) };
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    let h = unsafe { header(base) };
    h.status.store(PENDING, Ordering::Release);
    h.mode
        .store(if deferred { DEFERRED } else { WAITED }, Ordering::Release);
    h.seq.store(0, Ordering::Release);
    h.count.store(0, Ordering::Release);
    h.used.store(0, Ordering::Release);
    h.state.store(OPEN, Ordering::Release);
    h.capacity.store(capacity as u32, Ordering::Release);
    unsafe { add(base, receipt.as_bytes()) };
    // SAFETY: backend-local state.
    let (handle, db, user, pid) = unsafe {
        (
            pg_sys::dsm_segment_handle(seg),
            pg_sys::MyDatabaseId,
            pg_sys::GetSessionUserId(),
            pg_sys::MyProcPid,
        )
    };
    if deferred {
        // SAFETY: keeps the segment past this backend's mapping until the worker unpins it,
        // having read the receipts
        unsafe { pg_sys::dsm_pin_segment(seg) };
    }
    let worker = BackgroundWorkerBuilder::new("barecount receipt")
        .set_type("barecount receipt")
        .set_library("barecount")
        .set_function("barecount_receipt_worker")
        .set_argument(Some(pg_sys::Datum::from(handle as usize)))
        .set_extra(&format!("{} {}", db.to_u32(), user.to_u32()))
        .enable_spi_access()
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic();
    if deferred {
        return match worker {
            Ok(_) => {
                DEFERRED_FOR.with(|d| d.set((xid, handle)));
                Some(0)
            }
            Err(_) => {
                // SAFETY: pinned above, by this backend, and not handed to any worker
                unsafe {
                    pg_sys::dsm_unpin_segment(handle);
                    pg_sys::dsm_detach(seg);
                }
                None
            }
        };
    }
    let done = match worker {
        Ok(w) => w.wait_for_shutdown().is_ok(),
        Err(_) => false,
    };
    let (status, seq) = (
        h.status.load(Ordering::Acquire),
        h.seq.load(Ordering::Acquire),
    );
    // SAFETY: mapped since dsm_create; `h` is not used after this
    unsafe { pg_sys::dsm_detach(seg) };
    (done && status == COMMITTED).then_some(seq)
}

/// The worker: connects to the caller's database as the caller's session user, reads the
/// receipts from the segment, appends them (as the extension owner, as every append does) and
/// commits; then it tells a waiting caller the sequence number.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn barecount_receipt_worker(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let mut ids = BackgroundWorker::get_extra()
        .split(' ')
        .map(|v| v.parse::<u32>().unwrap_or(0));
    let (db, user) = (ids.next().unwrap_or(0), ids.next().unwrap_or(0));
    if db == 0 || user == 0 {
        return;
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(db)),
        Some(pg_sys::Oid::from(user)),
    );
    let handle = arg.value() as pg_sys::dsm_handle;
    // SAFETY: attached outside any transaction, so the mapping lasts until the detach below
    // (NULL if the segment is gone); reads stay within the lengths the caller wrote.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    if seg.is_null() {
        return;
    }
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    let h = unsafe { header(base) };
    let mode = h.mode.load(Ordering::Acquire);
    let seq = BackgroundWorker::transaction(|| {
        pgrx::Spi::connect_mut(|client| {
            if mode == DEFERRED {
                // the caller's transaction holds this lock: wait for it to end, then take the
                // receipts its denials left (no more can come: the segment is closed)
                client.update(
                    "SELECT pg_advisory_xact_lock($1)",
                    None,
                    &[crate::ledger::LEDGER_LOCK_KEY.into()],
                )?;
            }
            let receipts = unsafe { close_and_read(base, mode) };
            if mode == DEFERRED {
                // SAFETY: the caller pinned it for this worker; nobody else unpins it
                unsafe { pg_sys::dsm_unpin_segment(handle) };
            }
            let mut last = 0;
            for receipt in receipts {
                let text = |k: &str| receipt[k].as_str().unwrap_or_default().to_owned();
                last = crate::ledger::append(
                    client,
                    &text("tenant_id"),
                    &text("event_type"),
                    &text("subject"),
                    &receipt["inputs"],
                    None,
                )?
                .seq;
            }
            Ok::<_, SqlError>(last)
        })
        .unwrap_or_else(|e| e.raise())
    });
    // committed: only now does a waiting caller learn the receipt exists
    h.seq.store(seq, Ordering::Release);
    h.status.store(COMMITTED, Ordering::Release);
    // SAFETY: attached above; `h` is not used after this
    unsafe { pg_sys::dsm_detach(seg) };
}

/// Closes a deferred segment (waiting out a caller's addition in progress) and reads its
/// receipts; a waited-for segment holds one and is not shared.
///
/// # Safety
/// `base` is a mapped segment the caller initialised.
unsafe fn close_and_read(base: *mut u8, mode: u32) -> Vec<serde_json::Value> {
    let h = unsafe { header(base) };
    if mode == DEFERRED {
        while h
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }
    let (count, used) = (
        h.count.load(Ordering::Acquire) as usize,
        h.used.load(Ordering::Acquire) as usize,
    );
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    while at + 4 <= used && out.len() < count {
        let len = unsafe { (base.add(HEADER + at) as *const u32).read_unaligned() } as usize;
        let bytes = unsafe { std::slice::from_raw_parts(base.add(HEADER + at + 4), len) };
        if let Ok(v) = serde_json::from_slice(bytes) {
            out.push(v);
        }
        at += 4 + len;
    }
    out
}
