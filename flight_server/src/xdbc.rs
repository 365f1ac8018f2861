//! GetXdbcTypeInfo: the SQL types barecount-flight serves, as JDBC/ODBC drivers want them.

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};
use std::sync::LazyLock;

fn info(
    name: &str,
    t: XdbcDataType,
    size: Option<i32>,
    scale: Option<(i32, i32)>,
    sub: Option<XdbcDatetimeSubcode>,
) -> XdbcTypeInfo {
    let quoted = matches!(
        t,
        XdbcDataType::XdbcVarchar | XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp
    );
    XdbcTypeInfo {
        type_name: name.into(),
        data_type: t,
        column_size: size,
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(t, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: Some(false),
        fixed_prec_scale: matches!(t, XdbcDataType::XdbcDecimal),
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: scale.map(|s| s.0),
        maximum_scale: scale.map(|s| s.1),
        sql_data_type: t,
        datetime_subcode: sub,
        num_prec_radix: matches!(
            t,
            XdbcDataType::XdbcSmallint
                | XdbcDataType::XdbcInteger
                | XdbcDataType::XdbcBigint
                | XdbcDataType::XdbcDecimal
                | XdbcDataType::XdbcReal
                | XdbcDataType::XdbcDouble
        )
        .then_some(10),
        interval_precision: None,
    }
}

/// The types Arrow columns of published datasets map to (see types.rs).
pub static TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    use XdbcDataType::*;
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(info("BOOLEAN", XdbcBit, Some(1), None, None));
    b.append(info("SMALLINT", XdbcSmallint, Some(5), None, None));
    b.append(info("INTEGER", XdbcInteger, Some(10), None, None));
    b.append(info("BIGINT", XdbcBigint, Some(19), None, None));
    b.append(info("REAL", XdbcReal, Some(7), None, None));
    b.append(info("DOUBLE", XdbcDouble, Some(15), None, None));
    b.append(info("DECIMAL", XdbcDecimal, Some(38), Some((0, 38)), None));
    b.append(info("VARCHAR", XdbcVarchar, None, None, None));
    b.append(info("DATE", XdbcDate, Some(10), None, None));
    b.append(info(
        "TIMESTAMP",
        XdbcTimestamp,
        Some(26),
        Some((6, 6)),
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ));
    b.build().map_err(|e| e.to_string())
});
