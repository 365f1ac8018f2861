//! The SQL boundary for errors: every core error becomes a specific SQLSTATE with a message
//! that names the object, a detail and, where one helps, a hint.

use barecount_core::contract::ContractError;
use barecount_core::ident::IdentError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// A BareCount error ready to be raised as a Postgres ERROR.
#[derive(Debug)]
pub struct SqlError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        SqlError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Raises the error; Postgres unwinds the transaction, so nothing is half-written.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "barecount");
        if let Some(d) = self.detail {
            report = report.set_detail(d);
        }
        if let Some(h) = self.hint {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

/// A required argument of a function that is not STRICT (because it has optional arguments):
/// NULL is a clear 22004 naming the argument, not an internal error.
pub fn required<T>(v: Option<T>, function: &str, arg: &str) -> T {
    v.unwrap_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("barecount.{function}: argument {arg} must not be NULL"),
        )
        .raise()
    })
}

/// Unwraps a result or raises its error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T, E: Into<SqlError>> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.into().raise(),
        }
    }
}

impl From<pgrx::spi::Error> for SqlError {
    fn from(e: pgrx::spi::Error) -> Self {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("barecount: SPI call failed: {e}"),
        )
    }
}

impl From<IdentError> for SqlError {
    fn from(e: IdentError) -> Self {
        SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_NAME, e.to_string())
            .hint("Use a lower-case name of letters, digits and single underscores, e.g. sales_by_region.")
    }
}

impl From<ContractError> for SqlError {
    fn from(e: ContractError) -> Self {
        use PgSqlErrorCode::*;
        let message = format!("invalid data contract: {e}");
        match e {
            ContractError::Syntax(_) => SqlError::new(ERRCODE_INVALID_TEXT_REPRESENTATION, message)
                .hint("Pass the contract's YAML or JSON text, e.g. pg_read_file('contracts/orders.yaml')."),
            ContractError::NotAnObject
            | ContractError::MissingField(_)
            | ContractError::WrongType { .. }
            | ContractError::WrongKind(_)
            | ContractError::DuplicateSchema(_)
            | ContractError::DuplicateProperty { .. } => {
                SqlError::new(ERRCODE_INVALID_PARAMETER_VALUE, message)
                    .hint("Contracts follow the Open Data Contract Standard v3: apiVersion, kind: DataContract, id, version, schema.")
            }
            ContractError::Version(_) => SqlError::new(ERRCODE_INVALID_PARAMETER_VALUE, message)
                .hint("Use semantic versions such as 1.0.0."),
            ContractError::Name(_) => SqlError::new(ERRCODE_INVALID_NAME, message)
                .hint("Use a lower-case name of letters, digits and single underscores."),
            ContractError::UnsupportedLogicalType { .. } => {
                SqlError::new(ERRCODE_FEATURE_NOT_SUPPORTED, message)
            }
            ContractError::Quality(_) => SqlError::new(ERRCODE_INVALID_PARAMETER_VALUE, message)
                .hint("Quality rules are notNull, unique, range, allowedValues, pattern, references, rowCount and freshness; see README."),
            ContractError::InvalidRowSchema { .. } => {
                SqlError::new(ERRCODE_INVALID_PARAMETER_VALUE, message)
            }
        }
    }
}

impl From<barecount_core::quality::RuleError> for SqlError {
    fn from(e: barecount_core::quality::RuleError) -> Self {
        SqlError::from(ContractError::Quality(e))
    }
}
