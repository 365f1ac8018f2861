//! `jsonb` arguments read with a clear error. pgrx's own `JsonB` turns a document serde_json
//! cannot hold (a number beyond f64 such as `1e400`, nesting deeper than 128) into an internal
//! error (XX000) with panic text; [`JsonbArg`] reads the same value and answers such a document
//! with a specific SQLSTATE: 22003 for a number out of range, 54001 for nesting too deep.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use barecount_core::contract::{RowError, RowValidator};
use barecount_core::jsonb::{Container, JsonbError, Node};
use barecount_core::ledger::canonical_json;
use pgrx::prelude::*;
use pgrx::{direct_function_call, pg_sys, FromDatum};
use serde_json::Value;
use std::borrow::Cow;

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

// So SPI results can be read as JsonbArg too (the ledger's inputs, read in binary form).
impl pgrx::IntoDatum for JsonbArg {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        pgrx::JsonB(self.0).into_datum()
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

/// A NULL where a jsonb argument is required: 22004 naming it.
fn null_argument(index: usize) -> ! {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("argument {index} must not be NULL"),
    )
    .raise()
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
        // SAFETY: not null, and declared jsonb
        let held = unsafe { JsonbDatum::from_polymorphic_datum(datum, false, pg_sys::JSONBOID) }?;
        match jsonb_value(&held) {
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
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| null_argument(index))
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

/// A `jsonb` argument kept as its text (`jsonb_out`), read later row by row: a batch whose one
/// row serde_json cannot hold is still read, and only that row is refused.
#[derive(Debug)]
pub struct JsonbText(pub String);

pgrx::impl_sql_translatable!(JsonbText, arg_only = "jsonb");

fn too_deep() -> SqlError {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
        "a JSON document is nested more than 127 levels deep",
    )
    .hint("Flatten the document; BareCount validates at most 127 levels of nesting.")
}

/// A jsonb document as a serde value, read in place by `barecount_core::jsonb` (no text in
/// between). A number beyond double precision (22003) or nesting past 127 levels (54001) is
/// refused as in the text path.
pub(crate) fn jsonb_value(held: &JsonbDatum) -> Result<Value, SqlError> {
    Container::root_node(held.bytes())
        .and_then(|n| n.to_value())
        .map_err(jsonb_error)
}

/// `jsonb_out` of a jsonb datum.
///
/// # Safety
/// `datum` must be a non-null jsonb datum.
pub(crate) unsafe fn jsonb_text(datum: pg_sys::Datum) -> Option<String> {
    // SAFETY: the datum is a jsonb varlena (the argument's declared type); jsonb_out returns a
    // palloc'd C string in the current memory context.
    unsafe {
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
        Some(text)
    }
}

impl FromDatum for JsonbText {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonbText> {
        if is_null {
            return None;
        }
        // SAFETY: not null, and declared jsonb
        unsafe { jsonb_text(datum) }.map(JsonbText)
    }
}

// SAFETY: as for JsonbArg; the element type of a jsonb[] argument unboxes the same way.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbText {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller guarantees the argument is a jsonb datum
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| null_argument(index))
    }
}

// SAFETY: array elements handed to `unbox` are non-null jsonb datums (NULL elements are
// reported as None by the array before unboxing).
unsafe impl pgrx::datum::UnboxDatum for JsonbText {
    type As<'src> = JsonbText;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        // SAFETY: see above
        JsonbText(unsafe { jsonb_text(datum.sans_lifetime()) }.unwrap_or_default())
    }
}

/// One row of a batch: its value, read in place, or why it cannot be read (with its text, kept
/// as sent).
#[derive(Debug)]
pub enum BatchRow<'a> {
    Read(Value),
    /// A row of a jsonb batch, read where it lies, with its canonical JSON (computed while
    /// checking it reads as the text path reads it).
    Binary {
        node: Node<'a>,
        canonical: String,
    },
    Unreadable {
        text: String,
        error: SqlError,
    },
}

impl BatchRow<'_> {
    /// The row as a serde value (built for a row read in place; for rules that need one).
    pub fn value(&self) -> Option<Cow<'_, Value>> {
        match self {
            BatchRow::Read(v) => Some(Cow::Borrowed(v)),
            BatchRow::Binary { node, .. } => node.to_value().ok().map(Cow::Owned),
            BatchRow::Unreadable { .. } => None,
        }
    }

    /// Every reason the row fails `validator`.
    pub fn errors(&self, validator: &RowValidator) -> Vec<RowError> {
        match self {
            BatchRow::Read(v) => validator.errors(v),
            BatchRow::Binary { node, .. } => validator
                .errors_jsonb(*node)
                .unwrap_or_else(|e| vec![json_error(e.to_string())]),
            BatchRow::Unreadable { error, .. } => vec![json_error(error.message.clone())],
        }
    }

    /// The row's canonical JSON (for an unreadable row, its text as sent).
    pub fn canonical(&self) -> Cow<'_, str> {
        match self {
            BatchRow::Read(v) => Cow::Owned(canonical_json(v)),
            BatchRow::Binary { canonical, .. } => Cow::Borrowed(canonical),
            BatchRow::Unreadable { text, .. } => Cow::Borrowed(text),
        }
    }
}

/// The error of a row that cannot be read as JSON (keyword `json`).
fn json_error(message: String) -> RowError {
    RowError {
        instance_path: String::new(),
        keyword: "json".to_owned(),
        message,
    }
}

/// A `jsonb` argument kept as its (detoasted) datum, valid for the call: a batch read in its
/// binary form and stored as it came, with no text in between.
#[derive(Debug)]
pub struct JsonbDatum(pub pg_sys::Datum);

pgrx::impl_sql_translatable!(JsonbDatum, arg_only = "jsonb");

impl FromDatum for JsonbDatum {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonbDatum> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null jsonb datum; detoasted once here (in the call's memory context) so
        // every later use reads it in place instead of detoasting it again per row
        let detoasted =
            unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr::<pg_sys::varlena>()) };
        Some(JsonbDatum(pg_sys::Datum::from(detoasted)))
    }
}

// So SPI results can be read in place too (quarantined rows on replay).
impl pgrx::IntoDatum for JsonbDatum {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

impl JsonbDatum {
    /// The document's bytes after its varlena header (Postgres's `JsonbContainer`), read in place
    /// by `barecount_core::jsonb`.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a detoasted (uncompressed, inline) jsonb varlena, valid for the call: its data
        // is the varsize_any_exhdr bytes at vardata_any
        unsafe {
            let ptr = self.0.cast_mut_ptr::<pg_sys::varlena>();
            let data = pgrx::varlena::vardata_any(ptr).cast::<u8>();
            std::slice::from_raw_parts(data, pgrx::varlena::varsize_any_exhdr(ptr))
        }
    }

    /// The document's root value, checked as the text path checks it.
    pub fn node(&self) -> Result<Node<'_>, SqlError> {
        let node = Container::root_node(self.bytes()).map_err(jsonb_error)?;
        node.check().map_err(jsonb_error)?;
        Ok(node)
    }
}

/// A document the reader refuses: what the text path raises for the same document (22003 for a
/// number beyond double precision, 54001 for nesting past 127 levels); a malformed document is
/// corrupt data (XX001).
pub fn jsonb_error(e: JsonbError) -> SqlError {
    match e {
        JsonbError::OutOfRange(msg) => SqlError::new(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("a JSON number is out of range: {msg}"),
        )
        .hint("BareCount validates numbers as double precision: keep them within ±1.7e308."),
        JsonbError::TooDeep => too_deep(),
        other => SqlError::new(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, other.to_string()),
    }
}

// SAFETY: as for JsonbArg.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbDatum {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller guarantees the argument is a jsonb datum
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| null_argument(index))
    }
}

/// How a batch's rows are stored: the jsonb as it came, or its text.
#[derive(Debug)]
pub enum Payload {
    Jsonb(pg_sys::Datum),
    Text(String),
}

/// A batch of rows and its payload (a jsonb array), as stored.
#[derive(Debug)]
pub struct Batch<'a> {
    pub rows: Vec<BatchRow<'a>>,
    pub payload: Payload,
}

impl<'a> Batch<'a> {
    /// Reads a jsonb array of rows in place (issue 14): each row is validated where it lies and
    /// canonicalized straight from its bytes. When one row cannot be held as the text path holds
    /// it (a number beyond double precision, nesting past 127 levels), reads the batch row by row
    /// through its text instead, so only that row is refused. `Ok(None)` when it is not an array.
    pub fn from_jsonb(arg: &'a JsonbDatum) -> Result<Option<Batch<'a>>, SqlError> {
        let root = Container::root(arg.bytes()).map_err(jsonb_error)?;
        if !root.is_array() || root.is_scalar() {
            // a document that cannot be held is refused as such (22003, 54001), as in the text path
            arg.node()?;
            return Ok(None);
        }
        let mut rows = Vec::with_capacity(root.len());
        for element in root.elements() {
            let node = element.map_err(jsonb_error)?;
            let mut canonical = String::new();
            if node.write_canonical(&mut canonical).is_err() {
                // SAFETY: a non-null, detoasted jsonb datum (JsonbDatum)
                return Batch::from_array_text(unsafe { jsonb_text(arg.0) }.unwrap_or_default());
            }
            rows.push(BatchRow::Binary { node, canonical });
        }
        Ok(Some(Batch {
            rows,
            payload: Payload::Jsonb(arg.0),
        }))
    }

    /// The payload as a query parameter: cast it with `::jsonb` in the query.
    pub fn payload_arg(&self) -> pgrx::datum::DatumWithOid<'_> {
        match &self.payload {
            // SAFETY: a jsonb datum valid for the call, passed as jsonb
            Payload::Jsonb(d) => unsafe { pgrx::datum::DatumWithOid::new(*d, pg_sys::JSONBOID) },
            Payload::Text(t) => t.as_str().into(),
        }
    }

    /// Reads a JSON array of rows. A row serde_json cannot hold (a number beyond double
    /// precision, nesting past 127 levels) becomes [`BatchRow::Unreadable`] on its own; the
    /// others are read. `Ok(None)` when the document is not an array.
    pub fn from_array_text(text: String) -> Result<Option<Batch<'a>>, SqlError> {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => Ok(Some(Batch {
                rows: items.into_iter().map(BatchRow::Read).collect(),
                payload: Payload::Text(text),
            })),
            Ok(_) => Ok(None),
            Err(whole) => {
                // serde_json's raw values are scanned without recursion or number conversion
                let Ok(raws) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&text)
                else {
                    return match parse(&text) {
                        Err(e) => Err(e),
                        Ok(_) => Err(SqlError::new(
                            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                            format!("a JSON document cannot be read: {whole}"),
                        )),
                    };
                };
                let rows = raws.iter().map(|r| row_of(r.get())).collect();
                Ok(Some(Batch {
                    rows,
                    payload: Payload::Text(text),
                }))
            }
        }
    }

    /// A batch of separately passed rows (`jsonb[]` elements, none NULL).
    pub fn from_texts(texts: Vec<String>) -> Batch<'a> {
        let mut text = String::with_capacity(texts.iter().map(|t| t.len() + 1).sum::<usize>() + 2);
        text.push('[');
        for (i, t) in texts.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(t);
        }
        text.push(']');
        Batch {
            rows: texts.iter().map(|t| row_of(t)).collect(),
            payload: Payload::Text(text),
        }
    }
}

fn row_of(text: &str) -> BatchRow<'static> {
    match parse(text) {
        Ok(v) => BatchRow::Read(v),
        Err(error) => BatchRow::Unreadable {
            text: text.to_owned(),
            error,
        },
    }
}
