//! The one guarded entry for user SQL. Every piece of SQL text a caller hands BareCount — a
//! publish source, a model, the query a KPI definition expands to, a restatement's statement —
//! is parsed here with Postgres's own parser (`raw_parser`, the grammar the server will run it
//! with, so no dialect can disagree) and accepted only in the shape expected:
//!
//! - [`one_query`]: exactly one plain `SELECT`/`VALUES`/`TABLE`/`WITH … SELECT`, with no
//!   `INTO`, no row locks and no data-modifying `WITH`. A second statement riding along after a
//!   `;`, DDL, DML, utility and transaction commands are refused with 42601 (or 0A000 for the
//!   forms a query may not take) naming the object the SQL belongs to.
//! - [`one_change`]: exactly one `INSERT`, `UPDATE`, `DELETE`, `MERGE` or query (a
//!   restatement's statement, which may be a `SELECT` of `barecount.kpi_materialize(...)`);
//!   never DDL, utility or transaction control.
//!
//! Accepted SQL still runs as the caller, never elevated; this only stops text from doing more
//! than the one thing it was given for.
#![allow(unsafe_code)]

use crate::errors::SqlError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::CString;

/// What one parsed statement is, as far as BareCount cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A read-only query.
    Query,
    /// A query that is not read-only: SELECT INTO, FOR UPDATE, a data-modifying WITH.
    WritingQuery(&'static str),
    /// INSERT, UPDATE, DELETE or MERGE.
    Dml,
    /// Anything else: DDL, utility, transaction control.
    Other,
}

/// Parses `sql` into its raw statements. A syntax error is raised by the parser (42601).
fn shapes(sql: &str) -> Result<Vec<Shape>, SqlError> {
    let text = CString::new(sql).map_err(|_| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "SQL text contains a NUL character",
        )
    })?;
    let mut out = Vec::new();
    // SAFETY: raw_parser reads a NUL-terminated string and returns a palloc'd List of RawStmt
    // in the current memory context (or raises an ERROR, which pgrx turns into a panic that
    // unwinds to the function boundary). The nodes are only read.
    unsafe {
        let list = pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(list);
        for raw in stmts.iter_ptr() {
            if raw.is_null() {
                continue;
            }
            out.push(shape((*raw).stmt));
        }
    }
    Ok(out)
}

/// SAFETY: `node` is a parse-tree node from `raw_parser` (or null).
unsafe fn shape(node: *mut pg_sys::Node) -> Shape {
    use pg_sys::NodeTag::*;
    if node.is_null() {
        return Shape::Other;
    }
    if pgrx::is_a(node, T_SelectStmt) {
        let s = node.cast::<pg_sys::SelectStmt>();
        if !(*s).intoClause.is_null() {
            return Shape::WritingQuery("SELECT INTO creates a table");
        }
        if !(*s).lockingClause.is_null() {
            return Shape::WritingQuery("FOR UPDATE/SHARE locks rows");
        }
        if !(*s).withClause.is_null() {
            let ctes = PgList::<pg_sys::Node>::from_pg((*(*s).withClause).ctes);
            for cte in ctes.iter_ptr() {
                if !pgrx::is_a(cte, T_CommonTableExpr) {
                    continue;
                }
                let q = (*cte.cast::<pg_sys::CommonTableExpr>()).ctequery;
                if !q.is_null() && !pgrx::is_a(q, T_SelectStmt) {
                    return Shape::WritingQuery("a WITH clause holds a data-modifying statement");
                }
                if !q.is_null() && shape(q) != Shape::Query {
                    return Shape::WritingQuery("a WITH clause holds a query that writes");
                }
            }
        }
        return Shape::Query;
    }
    if pgrx::is_a(node, T_InsertStmt)
        || pgrx::is_a(node, T_UpdateStmt)
        || pgrx::is_a(node, T_DeleteStmt)
        || pgrx::is_a(node, T_MergeStmt)
    {
        return Shape::Dml;
    }
    Shape::Other
}

fn exactly_one(what: &str, shapes: &[Shape], expected: &str) -> Result<Shape, SqlError> {
    match shapes {
        [one] => Ok(*one),
        [] => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!("{what} holds no SQL statement"),
        )
        .hint(format!("Pass {expected}."))),
        many => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!(
                "{what} holds {} SQL statements; exactly one is accepted",
                many.len()
            ),
        )
        .hint(format!(
            "Pass {expected}, without a second statement after a semicolon."
        ))),
    }
}

/// Accepts `sql` only as exactly one read-only query; `what` names its owner in messages
/// (e.g. `model "orders"`).
pub fn one_query(what: &str, sql: &str) -> Result<(), SqlError> {
    let expected = "one SELECT query";
    match exactly_one(what, &shapes(sql)?, expected)? {
        Shape::Query => Ok(()),
        Shape::WritingQuery(why) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{what} must be a read-only query: {why}"),
        )
        .hint(format!("Pass {expected}."))),
        Shape::Dml | Shape::Other => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!("{what} must be a SELECT query"),
        )
        .hint(format!("Pass {expected}; other statements are refused."))),
    }
}

/// Accepts `sql` only as exactly one INSERT, UPDATE, DELETE, MERGE or query.
pub fn one_change(what: &str, sql: &str) -> Result<(), SqlError> {
    let expected = "one INSERT, UPDATE, DELETE, MERGE or SELECT statement";
    match exactly_one(what, &shapes(sql)?, expected)? {
        Shape::Dml | Shape::Query | Shape::WritingQuery(_) => Ok(()),
        Shape::Other => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!(
                "{what} must be an INSERT, UPDATE, DELETE, MERGE or SELECT statement, not DDL, a utility or transaction command"
            ),
        )
        .hint(format!("Pass {expected}."))),
    }
}

/// The result columns of a query (accepted by [`one_query`]) that come straight from a table
/// column declared `NOT NULL`: Postgres's own parse analysis records each result column's
/// origin (what libpq reports as `PQftable`/`PQftablecol`). A column read through an outer
/// join keeps its origin yet may be NULL, so callers check the rows too. Analysis only looks
/// names up; it runs nothing.
pub fn not_null_origins(
    client: &pgrx::spi::SpiClient<'_>,
    what: &str,
    sql: &str,
) -> Result<Vec<String>, SqlError> {
    one_query(what, sql)?;
    let text = CString::new(sql).map_err(|_| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "SQL text contains a NUL character",
        )
    })?;
    let mut origins: Vec<(String, pg_sys::Oid, i16)> = Vec::new();
    // SAFETY: as in `shapes`; parse_analyze_fixedparams takes the RawStmt raw_parser made and
    // the same source text, with no parameters, and returns a palloc'd Query (or raises an
    // ERROR, unwound to the function boundary). The Query is only read.
    unsafe {
        let list = pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(list);
        if let Some(raw) = stmts.get_ptr(0) {
            let query = pg_sys::parse_analyze_fixedparams(
                raw,
                text.as_ptr(),
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
            );
            let targets = PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
            for te in targets.iter_ptr() {
                if te.is_null()
                    || (*te).resjunk
                    || (*te).resname.is_null()
                    || (*te).resorigtbl == pg_sys::InvalidOid
                {
                    continue;
                }
                let name = std::ffi::CStr::from_ptr((*te).resname)
                    .to_string_lossy()
                    .into_owned();
                origins.push((name, (*te).resorigtbl, (*te).resorigcol));
            }
        }
    }
    let mut out = Vec::new();
    for (name, rel, col) in origins {
        let declared = client
            .select(
                "SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum = $2",
                Some(1),
                &[rel.into(), col.into()],
            )?
            .first()
            .get::<bool>(1)?
            .unwrap_or(false);
        if declared {
            out.push(name);
        }
    }
    Ok(out)
}
