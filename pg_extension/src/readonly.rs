//! Read-only lookups that may run inside a parallel query. pgrx's SPI runs every statement
//! read-write once the transaction has written anything (so it sees its own writes), and a
//! read-write SPI statement increments the command counter, which Postgres refuses during a
//! parallel operation — in the leader of a parallel plan as in its workers (XX000 "cannot start
//! commands during a parallel operation"). The PARALLEL SAFE functions (calendars, row
//! validation, JSON Schema validation) look their definitions up here instead, with SPI's
//! `read_only = true`: no new command, no new snapshot — the statement's own snapshot, as
//! Postgres's STABLE SQL functions read. Arguments are passed as text, results read as text.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// Rows of text cells (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// Ends the SPI connection however the lookup ends (an ERROR unwinds through here too).
struct Connected;

impl Drop for Connected {
    fn drop(&mut self) {
        // SAFETY: made only after SPI_connect succeeded; pops exactly that connection.
        unsafe {
            pg_sys::SPI_finish();
        }
    }
}

fn nul(what: &str) -> SqlError {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
        format!("{what} contains a NUL character"),
    )
}

/// Runs one read-only query with text arguments `$1`, `$2`, … and returns every row's cells as
/// text. The query itself is BareCount's, never user SQL.
pub fn rows(sql: &str, args: &[Option<&str>]) -> Result<Rows, SqlError> {
    let query = CString::new(sql).map_err(|_| nul("a lookup"))?;
    let texts: Vec<Option<CString>> = args
        .iter()
        .map(|a| a.map(CString::new).transpose())
        .collect::<Result<_, _>>()
        .map_err(|_| nul("an argument"))?;
    let n = i32::try_from(texts.len()).map_err(|_| nul("a lookup"))?;
    // SAFETY: SPI_connect/SPI_finish bracket the use of SPI's globals (the guard finishes on
    // every exit, an ERROR's unwinding included); argument datums are text made in SPI's
    // procedure context, which lives until SPI_finish; result cells are copied out before.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "SPI_connect failed",
            ));
        }
        let _connected = Connected;
        let mut types = vec![pg_sys::TEXTOID; texts.len()];
        let mut values: Vec<pg_sys::Datum> = texts
            .iter()
            .map(|t| match t {
                Some(c) => pg_sys::Datum::from(pg_sys::cstring_to_text(c.as_ptr())),
                None => pg_sys::Datum::from(0usize),
            })
            .collect();
        let nulls: Vec<core::ffi::c_char> = texts
            .iter()
            .map(|t| if t.is_some() { b' ' } else { b'n' } as core::ffi::c_char)
            .collect();
        let rc = pg_sys::SPI_execute_with_args(
            query.as_ptr(),
            n,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            true,
            0,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("a read-only lookup answered SPI code {rc}"),
            ));
        }
        let table = pg_sys::SPI_tuptable;
        if table.is_null() {
            return Ok(Vec::new());
        }
        let desc = (*table).tupdesc;
        let natts = (*desc).natts;
        let count = usize::try_from(pg_sys::SPI_processed).unwrap_or(0);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let tuple = *(*table).vals.add(i);
            let mut row = Vec::with_capacity(natts as usize);
            for col in 1..=natts {
                let v = pg_sys::SPI_getvalue(tuple, desc, col);
                row.push(if v.is_null() {
                    None
                } else {
                    Some(CStr::from_ptr(v).to_string_lossy().into_owned())
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// The first cell of the first row, if any.
pub fn one(sql: &str, args: &[Option<&str>]) -> Result<Option<String>, SqlError> {
    Ok(rows(sql, args)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// The current tenant (as `tenant::current`, read-only).
pub fn tenant() -> Result<String, SqlError> {
    one("SELECT barecount.current_tenant()", &[])?.ok_or_else(crate::tenant::no_tenant)
}
