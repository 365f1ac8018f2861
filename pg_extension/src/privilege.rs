//! Privileged sections. BareCount's functions run as their caller (SECURITY INVOKER), so user
//! SQL — a publish source, say — runs with the caller's privileges and row-level security. The
//! writes only BareCount may make (ledger entries, catalog rows, raw stores, published
//! versions) run inside [`as_owner`], which switches the current user to the extension's owner
//! for the closure only, the way Postgres itself runs `REFRESH MATERIALIZED VIEW` as the
//! view's owner. Nothing SQL-callable exposes this switch.
//!
//! The owner bypasses row-level security, so code inside [`as_owner`] filters by tenant itself.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    static OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
}

/// The role that owns the extension (and so its catalog tables).
fn owner() -> Result<pg_sys::Oid, SqlError> {
    if let Some(o) = OWNER.with(Cell::get) {
        return Ok(o);
    }
    let oid = Spi::get_one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_extension WHERE extname = 'barecount'",
    )?
    .ok_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "extension barecount is not installed in this database",
        )
    })?;
    OWNER.with(|c| c.set(Some(oid)));
    Ok(oid)
}

/// Restores the caller's identity and settings when the section ends normally. While an ERROR
/// unwinds, Postgres's (sub)transaction abort restores both itself, so nothing is done then.
struct Restore {
    user: pg_sys::Oid,
    context: i32,
    guc_nest_level: i32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // SAFETY: backend-local state, restored to what was read before the switch; the same
        // calls Postgres makes after a SECURITY DEFINER function with SET clauses returns.
        unsafe {
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
            pg_sys::AtEOXact_GUC(true, self.guc_nest_level);
        }
    }
}

/// Runs `f` as the extension owner with `search_path = pg_catalog, pg_temp` (so objects the
/// caller planted on its own search path are never resolved with the owner's rights), then
/// switches back to the caller and its settings.
pub fn as_owner<T>(f: impl FnOnce() -> Result<T, SqlError>) -> Result<T, SqlError> {
    let owner = owner()?;
    let mut user = pg_sys::Oid::INVALID;
    let mut context: i32 = 0;
    // SAFETY: out-pointers to locals; backend-local state.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    // SAFETY: opens a GUC nesting level that Restore (or the transaction's abort) closes.
    let guc_nest_level = unsafe { pg_sys::NewGUCNestLevel() };
    let _restore = Restore {
        user,
        context,
        guc_nest_level,
    };
    // SAFETY: static NUL-terminated strings; GUC_ACTION_SAVE scopes the value to the level above.
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
    // SAFETY: as above; SECURITY_LOCAL_USERID_CHANGE marks the switch as local so SET ROLE
    // and similar are refused while it lasts.
    unsafe {
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32)
    };
    f()
}

/// Identifies the current statement for caches that may live only as long as it: the local
/// transaction, the command within it, and the statement's start time (several statements sent
/// in one message share a start time but not a transaction or command).
pub fn statement_key() -> (u32, u32, i64) {
    // SAFETY: reads backend-local state; MyProc is set for every backend that runs SQL.
    unsafe {
        let lxid = if pg_sys::MyProc.is_null() {
            0
        } else {
            (*pg_sys::MyProc).lxid
        };
        (
            lxid,
            pg_sys::GetCurrentCommandId(false),
            pg_sys::GetCurrentStatementStartTimestamp(),
        )
    }
}
