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

    /// The SQL expression that reads a quoted column in the form this kind parses.
    pub fn select_expr(&self, quoted: &str) -> String {
        match self {
            ColumnKind::Bool
            | ColumnKind::Int16
            | ColumnKind::Int32
            | ColumnKind::Int64
            | ColumnKind::Float32
            | ColumnKind::Float64
            | ColumnKind::Text => quoted.to_owned(),
            ColumnKind::Decimal { .. } | ColumnKind::OtherAsText => format!("{quoted}::text"),
            ColumnKind::NumericFloat => format!("{quoted}::float8"),
            ColumnKind::Date => format!("({quoted} - DATE '1970-01-01')"),
            ColumnKind::Timestamp | ColumnKind::TimestampTz => {
                format!("(extract(epoch FROM {quoted}) * 1000000)::int8")
            }
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

/// Parses Postgres numeric text (`-12.5`, `3`, `NaN`) into an i128 at `scale`, rounding half
/// away from zero beyond it. `None` for NaN, infinities or overflow.
pub fn parse_decimal(text: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = scale as usize;
    let mut value: i128 = 0;
    for b in int_part.bytes() {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let frac = frac_part.as_bytes();
    for i in 0..scale {
        let d = frac.get(i).map_or(0, |b| b - b'0');
        value = value.checked_mul(10)?.checked_add(i128::from(d))?;
    }
    if frac.get(scale).is_some_and(|b| *b >= b'5') {
        value = value.checked_add(1)?;
    }
    Some(if neg { -value } else { value })
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

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(parse_decimal("12.34", 2), Some(1234));
        assert_eq!(parse_decimal("-0.5", 2), Some(-50));
        assert_eq!(parse_decimal("7", 3), Some(7000));
        assert_eq!(parse_decimal("1.235", 2), Some(124));
        assert_eq!(parse_decimal("NaN", 2), None);
        assert_eq!(parse_decimal("", 2), None);
    }
}
