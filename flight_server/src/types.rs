//! How Postgres column types of published datasets become Arrow types.
//!
//! Exact where Arrow can be exact, and never lossy: `numeric(p,s)` becomes `Decimal128(p,s)` up
//! to 38 digits, `Decimal256(p,s)` up to 76 and its exact text (`Utf8`) beyond. Unconstrained
//! `numeric` gets the precision and scale publishing measured on the (immutable) version's
//! values, and the same mapping. Types without an Arrow counterpart (interval, uuid, json,
//! jsonb, arrays, bytea, …) are served as their Postgres text output (`Utf8`). Every field
//! says in its metadata which Postgres type it holds (`barecount.pg_type`) and, for numerics,
//! how it is carried (`barecount.numeric`: decimal128, decimal256, text or float64).

use crate::catalog::PgColumn;
use arrow::datatypes::{DataType, TimeUnit};

/// Field metadata key: the column's Postgres type (`format_type` output).
pub const PG_TYPE_KEY: &str = "barecount.pg_type";
/// Field metadata key: how a numeric column is carried.
pub const NUMERIC_KEY: &str = "barecount.numeric";

/// How a column is read from Postgres and which Arrow type it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Read in binary, decoded into Decimal128 with this precision and scale.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// Read in binary, decoded into Decimal256 (39 to 76 digits).
    Decimal256 {
        precision: u8,
        scale: i8,
    },
    /// A numeric wider than Decimal256 holds: its exact text.
    NumericText,
    /// Unconstrained numeric of a version published before measured precisions: float8.
    NumericFloat,
    Text,
    /// Read as days since 1970-01-01.
    Date,
    /// Read as microseconds since the epoch.
    Timestamp,
    TimestampTz,
    /// Anything else: the text output.
    OtherAsText,
}

impl ColumnKind {
    /// `pg_type` is `format_type()` output, e.g. `numeric(12,2)` or `timestamp with time zone`.
    pub fn from_pg(pg_type: &str) -> Self {
        let t = pg_type.trim();
        match t {
            "boolean" => ColumnKind::Bool,
            "smallint" => ColumnKind::Int16,
            "integer" => ColumnKind::Int32,
            "bigint" => ColumnKind::Int64,
            "real" => ColumnKind::Float32,
            "double precision" => ColumnKind::Float64,
            "numeric" => ColumnKind::NumericFloat,
            "text" | "name" => ColumnKind::Text,
            "date" => ColumnKind::Date,
            "timestamp without time zone" => ColumnKind::Timestamp,
            "timestamp with time zone" => ColumnKind::TimestampTz,
            _ if t.starts_with("character varying")
                || t.starts_with("character(")
                || t == "character" =>
            {
                ColumnKind::Text
            }
            _ if t.starts_with("numeric(") => parse_numeric(t).unwrap_or(ColumnKind::NumericText),
            _ => ColumnKind::OtherAsText,
        }
    }

    /// The kind of a published column: its type, and for an unconstrained numeric the
    /// precision and scale measured when it was published.
    pub fn of(c: &PgColumn) -> Self {
        match (
            ColumnKind::from_pg(&c.pg_type),
            c.numeric_precision,
            c.numeric_scale,
        ) {
            (ColumnKind::NumericFloat, Some(p), Some(s)) => decimal_for(p, s),
            (kind, _, _) => kind,
        }
    }

    /// `barecount.numeric` metadata: how a numeric column is carried, if it is one.
    pub fn numeric_carrier(&self) -> Option<&'static str> {
        match self {
            ColumnKind::Decimal { .. } => Some("decimal128"),
            ColumnKind::Decimal256 { .. } => Some("decimal256"),
            ColumnKind::NumericText => Some("text"),
            ColumnKind::NumericFloat => Some("float64"),
            _ => None,
        }
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnKind::Bool => DataType::Boolean,
            ColumnKind::Int16 => DataType::Int16,
            ColumnKind::Int32 => DataType::Int32,
            ColumnKind::Int64 => DataType::Int64,
            ColumnKind::Float32 => DataType::Float32,
            ColumnKind::Float64 | ColumnKind::NumericFloat => DataType::Float64,
            ColumnKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnKind::Decimal256 { precision, scale } => DataType::Decimal256(*precision, *scale),
            ColumnKind::Text | ColumnKind::OtherAsText | ColumnKind::NumericText => DataType::Utf8,
            ColumnKind::Date => DataType::Date32,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnKind::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
        }
    }

    /// The SQL expression that reads a quoted column for binary COPY in the form the decoder
    /// (`pgcopy`) takes: the column itself, or its text or float8 form.
    pub fn copy_expr(&self, quoted: &str) -> String {
        match self {
            ColumnKind::OtherAsText | ColumnKind::NumericText => format!("{quoted}::text"),
            ColumnKind::NumericFloat => format!("{quoted}::float8"),
            _ => quoted.to_owned(),
        }
    }
}

/// `numeric(p,s)`: Decimal128 or Decimal256 where they hold it, `None` (text) otherwise.
fn parse_numeric(t: &str) -> Option<ColumnKind> {
    let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    let precision: u32 = p.trim().parse().ok()?;
    let scale: i32 = s.trim().parse().ok()?;
    // Postgres allows a scale above the precision (numeric(3,5) holds 0.00123: Decimal(5,5))
    // and a negative one (numeric(3,-2) holds 12300: served as text)
    if scale < 0 {
        return None;
    }
    match decimal_for(precision, scale as u32) {
        ColumnKind::NumericText => None,
        k => Some(k),
    }
}

/// The narrowest exact Arrow decimal for `precision` digits, `scale` of them after the point.
fn decimal_for(precision: u32, scale: u32) -> ColumnKind {
    let (p, s) = (precision.max(scale).max(1), scale);
    match (u8::try_from(p), i8::try_from(s)) {
        (Ok(precision @ 1..=38), Ok(scale)) => ColumnKind::Decimal { precision, scale },
        (Ok(precision @ 39..=76), Ok(scale)) => ColumnKind::Decimal256 { precision, scale },
        _ => ColumnKind::NumericText,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_common_types() {
        assert_eq!(
            ColumnKind::from_pg("numeric(12,2)"),
            ColumnKind::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(5)"),
            ColumnKind::Decimal {
                precision: 5,
                scale: 0
            }
        );
        assert_eq!(ColumnKind::from_pg("numeric"), ColumnKind::NumericFloat);
        assert_eq!(
            ColumnKind::from_pg("numeric(60,10)"),
            ColumnKind::Decimal256 {
                precision: 60,
                scale: 10
            }
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(60,10)").arrow_type(),
            DataType::Decimal256(60, 10)
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(100,2)"),
            ColumnKind::NumericText
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(3,-2)"),
            ColumnKind::NumericText
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(3,5)"),
            ColumnKind::Decimal {
                precision: 5,
                scale: 5
            }
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(100,2)").copy_expr("\"x\""),
            "\"x\"::text"
        );
        // unconstrained: what publishing measured decides
        let measured = |p: Option<u32>, s: Option<u32>| {
            ColumnKind::of(&PgColumn {
                name: "v".into(),
                pg_type: "numeric".into(),
                nullable: true,
                numeric_precision: p,
                numeric_scale: s,
            })
        };
        assert_eq!(
            measured(Some(12), Some(4)),
            ColumnKind::Decimal {
                precision: 12,
                scale: 4
            }
        );
        assert_eq!(
            measured(Some(50), Some(30)),
            ColumnKind::Decimal256 {
                precision: 50,
                scale: 30
            }
        );
        assert_eq!(measured(Some(200), Some(0)), ColumnKind::NumericText);
        assert_eq!(measured(None, None), ColumnKind::NumericFloat);
        assert_eq!(
            measured(Some(0), Some(0)),
            ColumnKind::Decimal {
                precision: 1,
                scale: 0
            }
        );
        assert_eq!(
            ColumnKind::from_pg("character varying(20)"),
            ColumnKind::Text
        );
        assert_eq!(
            ColumnKind::from_pg("timestamp with time zone"),
            ColumnKind::TimestampTz
        );
        assert_eq!(ColumnKind::from_pg("jsonb"), ColumnKind::OtherAsText);
        assert_eq!(ColumnKind::from_pg("integer").arrow_type(), DataType::Int32);
    }
}
