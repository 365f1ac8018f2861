//! `jsonb` arguments read with a clear error. pgrx's own `JsonB` turns a document serde_json
//! cannot hold (a number beyond f64 such as `1e400`, nesting deeper than 128) into an internal
//! error (XX000) with panic text; [`JsonbArg`] reads the same value and answers such a document
//! with a specific SQLSTATE: 22003 for a number out of range, 54001 for nesting too deep.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::prelude::*;
use pgrx::{direct_function_call, pg_sys, FromDatum};
use serde_json::Value;

/// A `jsonb` argument as a serde_json value.
#[derive(Debug)]
pub struct JsonbArg(pub Value);

pgrx::impl_sql_translatable!(JsonbArg, arg_only = "jsonb");

/// Parses jsonb text, mapping what serde_json cannot hold to a specific SQLSTATE.
pub fn parse(text: &str) -> Result<Value, SqlError> {
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("number out of range") {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                format!("a JSON number is out of range: {msg}"),
            )
            .hint("BareCount validates numbers as double precision: keep them within ±1.7e308.")
        } else if msg.contains("recursion limit") {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
                "a JSON document is nested more than 127 levels deep",
            )
            .hint("Flatten the document; BareCount validates at most 127 levels of nesting.")
        } else {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                format!("a JSON document cannot be read: {msg}"),
            )
        }
    })
}

impl FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonbArg> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb varlena (the argument's declared type); jsonb_out returns
        // a palloc'd C string in the current memory context.
        let text = unsafe {
            let varlena = datum.cast_mut_ptr::<pg_sys::varlena>();
            let detoasted = pg_sys::pg_detoast_datum_packed(varlena);
            let cstr = direct_function_call::<&core::ffi::CStr>(
                pg_sys::jsonb_out,
                &[Some(pg_sys::Datum::from(detoasted))],
            )?;
            let text = cstr.to_string_lossy().into_owned();
            pg_sys::pfree(cstr.as_ptr() as *mut core::ffi::c_void);
            if detoasted != varlena {
                pg_sys::pfree(detoasted.cast());
            }
            text
        };
        match parse(&text) {
            Ok(v) => Some(JsonbArg(v)),
            Err(e) => e.raise(),
        }
    }
}

// SAFETY: the same implementation pgrx gives its own `JsonB` (unbox through FromDatum).
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller guarantees the argument is a jsonb datum
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("argument {index} must not be NULL"),
            )
            .raise()
        })
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}
