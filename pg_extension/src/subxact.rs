//! Running a closure in a subtransaction and catching its error, as PL/pgSQL's
//! `BEGIN … EXCEPTION` does: on an error everything the closure did is rolled back, the error
//! is returned (SQLSTATE and message) and the outer transaction goes on. A query cancel or a
//! shutdown request is never swallowed: it is raised again.
#![allow(unsafe_code)]

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;

/// A caught error: its SQLSTATE (five characters) and message.
#[derive(Debug, Clone)]
pub struct Caught {
    pub sqlstate: String,
    pub message: String,
}

/// Runs `f` in a subtransaction: committed when it returns `Ok`, rolled back when it returns
/// `Err` or raises an error (which is then returned as [`Caught`]).
pub fn attempt<R>(f: impl FnOnce() -> Result<R, Caught>) -> Result<R, Caught> {
    // SAFETY: the sequence PL/pgSQL uses (pl_exec.c, exec_stmt_block): remember the memory
    // context and resource owner, begin an internal subtransaction, and on the way out release
    // or roll it back and restore both. Errors raised inside are caught by PgTryBuilder, which
    // has already flushed the error state when the handler runs.
    unsafe {
        let ctx = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(ctx);
        let f = AssertUnwindSafe(f);
        let out = PgTryBuilder::new(move || {
            let f = f;
            (f.0)().map_err(|c| Box::new(Ok(c)))
        })
        .catch_others(|e| Err(Box::new(Err(e))))
        .execute();
        match out {
            Ok(v) => {
                pg_sys::ReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(ctx);
                pg_sys::CurrentResourceOwner = owner;
                Ok(v)
            }
            Err(e) => {
                pg_sys::MemoryContextSwitchTo(ctx);
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(ctx);
                pg_sys::CurrentResourceOwner = owner;
                match *e {
                    Ok(caught) => Err(caught),
                    Err(caught) => {
                        let report = match &caught {
                            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
                            CaughtError::RustPanic { ereport, .. } => ereport,
                        };
                        let code = report.sql_error_code();
                        // a cancel or termination is the user's or the server's, never the step's
                        if matches!(
                            code,
                            PgSqlErrorCode::ERRCODE_QUERY_CANCELED
                                | PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN
                                | PgSqlErrorCode::ERRCODE_CRASH_SHUTDOWN
                        ) {
                            caught.rethrow();
                        }
                        Err(Caught {
                            sqlstate: sqlstate_text(code),
                            message: report.message().to_owned(),
                        })
                    }
                }
            }
        }
    }
}

/// The five-character SQLSTATE of an error code.
pub fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let mut n = code as i32;
    let mut s = String::with_capacity(5);
    for _ in 0..5 {
        let c = (n & 0x3F) as u8 + b'0';
        s.push(c as char);
        n >>= 6;
    }
    s
}
