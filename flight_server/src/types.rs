//! How Postgres column types of published datasets become Arrow types.
//!
//! Exact where Arrow can be exact: `numeric(p,s)` becomes `Decimal128(p,s)`; unconstrained
//! `numeric` becomes `Float64` (Arrow needs a fixed scale); types without an Arrow
//! counterpart are served as their Postgres text output (`Utf8`).

use arrow::datatypes::{DataType, TimeUnit};

/// How a column is read from Postgres and which Arrow type it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Read as text, parsed into Decimal128 with this precision and scale.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// Unconstrained numeric, read as float8.
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
            _ if t.starts_with("numeric(") => parse_numeric(t).unwrap_or(ColumnKind::NumericFloat),
            _ => ColumnKind::OtherAsText,
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
            ColumnKind::Text | ColumnKind::OtherAsText => DataType::Utf8,
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
            ColumnKind::OtherAsText => format!("{quoted}::text"),
            ColumnKind::NumericFloat => format!("{quoted}::float8"),
            _ => quoted.to_owned(),
        }
    }
}

fn parse_numeric(t: &str) -> Option<ColumnKind> {
    let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    let precision: u8 = p.trim().parse().ok()?;
    let scale: i8 = s.trim().parse().ok()?;
    if precision == 0 || precision > 38 || scale < 0 || scale as u8 > precision {
        return None;
    }
    Some(ColumnKind::Decimal { precision, scale })
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
