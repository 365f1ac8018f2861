//! Receipts that outlive their transaction. A denial refuses its operation with an error, and
//! the error rolls back everything the transaction wrote, the denial's receipt included.
//! Postgres has no autonomous transactions; a dynamic background worker is one: it connects as
//! the caller's session user, appends the receipt as the extension owner in a transaction of its
//! own, commits and exits, while the caller waits for it (interruptibly) and then raises.
//!
//! The receipt travels in a dynamic shared memory segment the caller creates: a header (status,
//! mode, sequence number, payload length) and the payload as JSON. The worker sets the status
//! only after its commit.
//!
//! When the caller's transaction already holds the ledger's append lock (it wrote receipts
//! before the denial), the worker would wait for that transaction, which waits for the worker.
//! Then the caller does not wait: it pins the segment (so it outlives the caller's detach), and
//! the worker, once it has read the receipt, unpins it and appends as soon as the caller's
//! transaction ends and releases the lock.
//!
//! Unsafe code: the shared memory segment (created, written and read within its length), the
//! backend's identity, and the worker's exported entry point the postmaster calls by name.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::JsonB;
use std::sync::atomic::{fence, Ordering};

/// The header's layout: status (u32) at 0, mode (u32) at 4, sequence number (i64) at 8, payload
/// length (u32) at 16, payload from 24.
const HEADER: usize = 24;
const PENDING: u32 = 0;
const COMMITTED: u32 = 1;
/// Modes: the caller waits for the worker, or it does not (the segment is pinned).
const WAITED: u32 = 0;
const DEFERRED: u32 = 1;

/// The caller's transaction already holds the ledger's append lock (it wrote a receipt before
/// the denial): the worker would wait for it forever.
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

/// Appends a receipt in a transaction of its own (a background worker's), committed whatever
/// becomes of the caller's: its sequence number; 0 when the caller's transaction holds the
/// ledger's append lock, so the receipt is appended as soon as that transaction ends; NULL when
/// no background worker slot is free (max_worker_processes) or the worker failed (its error is
/// in the server log). Only the extension owner may call it (BareCount's denials).
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
    let payload = serde_json::json!({"tenant_id": tenant_id, "event_type": event_type,
                                     "subject": subject, "inputs": inputs.0})
    .to_string();
    let len = HEADER + payload.len();
    // SAFETY: dsm_create errors out (ERROR) on failure with DSM_CREATE_NULL_IF_MAXSEGMENTS
    // unset; the segment is len bytes, the writes below stay inside it. The caller's resource
    // owner detaches it at the end of the transaction if an error comes first.
    let seg = unsafe { pg_sys::dsm_create(len, 0) };
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    unsafe {
        (base as *mut u32).write_volatile(PENDING);
        (base.add(4) as *mut u32).write_volatile(if deferred { DEFERRED } else { WAITED });
        (base.add(8) as *mut i64).write_volatile(0);
        (base.add(16) as *mut u32).write_volatile(payload.len() as u32);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(HEADER), payload.len());
    }
    fence(Ordering::SeqCst);
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
        // SAFETY: keeps the segment past this backend's detach (at the end of its transaction)
        // until the worker unpins it, having read the receipt
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
            Ok(_) => Some(0),
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
    fence(Ordering::SeqCst);
    // SAFETY: the segment is still mapped here (detached just below).
    let (status, seq) = unsafe {
        (
            (base as *const u32).read_volatile(),
            (base.add(8) as *const i64).read_volatile(),
        )
    };
    unsafe { pg_sys::dsm_detach(seg) };
    (done && status == COMMITTED).then_some(seq)
}

/// The worker: connects to the caller's database as the caller's session user, reads the
/// receipt from the segment, appends it (as the extension owner, as every append does) and
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
    // (NULL if the segment is gone); reads stay within the length the caller wrote.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    if seg.is_null() {
        return;
    }
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    fence(Ordering::SeqCst);
    let (mode, len) = unsafe {
        (
            (base.add(4) as *const u32).read_volatile(),
            (base.add(16) as *const u32).read_volatile() as usize,
        )
    };
    let bytes = unsafe { std::slice::from_raw_parts(base.add(HEADER), len) }.to_vec();
    if mode == DEFERRED {
        // SAFETY: the caller pinned it for this worker; nobody else unpins it
        unsafe {
            pg_sys::dsm_unpin_segment(handle);
            pg_sys::dsm_detach(seg);
        }
    }
    let Ok(receipt) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return;
    };
    let seq = BackgroundWorker::transaction(|| {
        let text = |k: &str| receipt[k].as_str().unwrap_or_default().to_owned();
        // a deferred receipt waits here for the caller's transaction to release the lock
        pgrx::Spi::connect_mut(|client| {
            crate::ledger::append(
                client,
                &text("tenant_id"),
                &text("event_type"),
                &text("subject"),
                &receipt["inputs"],
                None,
            )
            .map(|r| r.seq)
        })
        .unwrap_or_else(|e| e.raise())
    });
    if mode == WAITED {
        // committed: only now does the caller learn the receipt exists
        // SAFETY: still attached (a waited-for segment is detached only here)
        unsafe {
            (base.add(8) as *mut i64).write_volatile(seq);
            fence(Ordering::SeqCst);
            (base as *mut u32).write_volatile(COMMITTED);
            pg_sys::dsm_detach(seg);
        }
    }
}
