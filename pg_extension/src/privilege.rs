//! Privileged sections. BareCount's functions run as their caller (SECURITY INVOKER), so user
//! SQL — a publish source, say — runs with the caller's privileges and row-level security. The
//! writes only BareCount may make (ledger entries, catalog rows, raw stores, published
//! versions) run inside [`as_owner`], which switches the current user to `barecount_owner` for
//! the closure only, the way Postgres itself runs `REFRESH MATERIALIZED VIEW` or `VACUUM` as
//! the table's owner: with `SECURITY_RESTRICTED_OPERATION` set (no temporary objects, no role
//! or session changes while it lasts) and `search_path = pg_catalog, pg_temp`.
//!
//! `barecount_owner` is NOLOGIN, NOSUPERUSER, NOINHERIT and member of no role: it owns the
//! catalog, the stores and the `SECURITY DEFINER` helpers, and it has BYPASSRLS so the ledger
//! chain (one for all tenants) can be read whole; code inside [`as_owner`] filters by tenant
//! itself. It never runs an object a tenant role can create or alter: relations it writes are
//! its own and carry no user code (see `barecount._assert_store_relation`), their columns have
//! only built-in types (see [`crate::staging::builtin_types_only`]), and user SQL never runs
//! inside a section. Nothing SQL-callable exposes this switch.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    static OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Counts open privileged sections; dropped also while an error unwinds.
struct Depth;

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Whether BareCount itself is writing (inside [`as_owner`]) right now.
pub fn in_section() -> bool {
    DEPTH.with(Cell::get) > 0
}

// Parallel safety (audited for issue 13): _outer_role reads GetOuterUserId, which a parallel
// worker restores from its leader before running any plan, so it answers the same there.
/// The role the session acts as outside any SECURITY DEFINER function: the login role, or the
/// role it SET ROLE'd to (a pooler's pattern). `current_user` inside `current_tenant()` is that
/// function's owner, so the function asks for this instead.
#[pg_extern(stable, parallel_safe)]
fn _outer_role() -> String {
    // SAFETY: GetOuterUserId reads backend state; GetUserNameFromId with noerr returns NULL
    // for a role dropped meanwhile.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

/// The role privileged sections run as.
pub const OWNER_ROLE: &str = "barecount_owner";

/// The oid of `barecount_owner`, which owns the catalog. It must not be a superuser: a
/// section refuses to start if someone made it one (checked on every section through the
/// role cache, so an `ALTER ROLE` takes effect at once).
pub(crate) fn owner() -> Result<pg_sys::Oid, SqlError> {
    let oid = match OWNER.with(Cell::get) {
        Some(o) => o,
        None => {
            let oid = Spi::get_one::<pg_sys::Oid>(
                "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'barecount_owner'",
            )?
            .ok_or_else(|| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    "role barecount_owner does not exist",
                )
                .hint("Recreate the extension: CREATE EXTENSION barecount creates the role.")
            })?;
            OWNER.with(|c| c.set(Some(oid)));
            oid
        }
    };
    // SAFETY: reads the role's attributes through the system cache.
    if unsafe { pg_sys::superuser_arg(oid) } {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "role barecount_owner is a superuser; BareCount refuses privileged work as one",
        )
        .hint("ALTER ROLE barecount_owner NOSUPERUSER;"));
    }
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
    // and similar are refused while it lasts, and SECURITY_RESTRICTED_OPERATION forbids
    // temporary objects and session changes, as Postgres does while it runs maintenance
    // commands as a table's owner.
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        )
    };
    DEPTH.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
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
