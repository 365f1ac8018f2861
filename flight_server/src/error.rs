//! Errors of the Flight layer and their one mapping to gRPC status codes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FlightError {
    #[error("dataset \"{0}\" is not published for this tenant")]
    UnknownDataset(String),
    #[error("dataset \"{dataset}\" has no version {version} for this tenant")]
    UnknownVersion { dataset: String, version: i32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid or expired ticket: {0}")]
    BadTicket(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("SQL error: {0}")]
    Sql(String),
    #[error("column \"{column}\" of \"{dataset}\" has type {pg_type}, which could not be read: {message}")]
    Conversion {
        dataset: String,
        column: String,
        pg_type: String,
        message: String,
    },
    #[error("{0}")]
    LimitExceeded(String),
    #[error("catalog database unavailable: {0}")]
    Database(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<FlightError> for tonic::Status {
    fn from(e: FlightError) -> Self {
        let msg = e.to_string();
        match e {
            FlightError::UnknownDataset(_) | FlightError::UnknownVersion { .. } => {
                tonic::Status::not_found(msg)
            }
            FlightError::InvalidRequest(_) | FlightError::Sql(_) => {
                tonic::Status::invalid_argument(msg)
            }
            FlightError::BadTicket(_) | FlightError::Unauthenticated(_) => {
                tonic::Status::unauthenticated(msg)
            }
            FlightError::PermissionDenied(_) => tonic::Status::permission_denied(msg),
            FlightError::LimitExceeded(_) => tonic::Status::resource_exhausted(msg),
            FlightError::Database(_) => tonic::Status::unavailable(msg),
            FlightError::Conversion { .. } | FlightError::Internal(_) => {
                tonic::Status::internal(msg)
            }
        }
    }
}

impl From<datafusion::error::DataFusionError> for FlightError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e {
            D::External(inner) => match inner.downcast::<FlightError>() {
                Ok(ours) => *ours,
                Err(other) => FlightError::Internal(other.to_string()),
            },
            D::Context(_, inner) | D::Diagnostic(_, inner) => FlightError::from(*inner),
            other => {
                let msg = other.to_string();
                match classify(&other) {
                    Blame::Query => FlightError::Sql(msg),
                    Blame::Resources => FlightError::LimitExceeded(msg),
                    Blame::Server => FlightError::Internal(msg),
                }
            }
        }
    }
}

/// Whose fault a DataFusion error is: the query's (bad SQL, types, values), the resources', or
/// the server's.
enum Blame {
    Query,
    Resources,
    Server,
}

fn classify(e: &datafusion::error::DataFusionError) -> Blame {
    use arrow::error::ArrowError as A;
    use datafusion::error::DataFusionError as D;
    match e {
        D::SQL(..)
        | D::Plan(_)
        | D::SchemaError(..)
        | D::NotImplemented(_)
        | D::Configuration(_)
        | D::Execution(_) => Blame::Query,
        D::ArrowError(a, _) => match a.as_ref() {
            A::DivideByZero
            | A::CastError(_)
            | A::ComputeError(_)
            | A::InvalidArgumentError(_)
            | A::ArithmeticOverflow(_)
            | A::ParseError(_) => Blame::Query,
            _ => Blame::Server,
        },
        D::ResourcesExhausted(_) => Blame::Resources,
        D::Context(_, inner) | D::Diagnostic(_, inner) => classify(inner),
        D::Shared(inner) => classify(inner),
        D::Collection(all) => all.first().map_or(Blame::Server, classify),
        _ => Blame::Server,
    }
}

impl From<arrow::error::ArrowError> for FlightError {
    fn from(e: arrow::error::ArrowError) -> Self {
        FlightError::Internal(e.to_string())
    }
}

impl From<arrow_flight::error::FlightError> for FlightError {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        FlightError::Internal(e.to_string())
    }
}

impl From<tokio_postgres::Error> for FlightError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db)
                if db.code() == &tokio_postgres::error::SqlState::CONFIGURATION_LIMIT_EXCEEDED =>
            {
                FlightError::LimitExceeded(db.message().to_owned())
            }
            Some(db)
                if db.code()
                    == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    || db.code() == &tokio_postgres::error::SqlState::INVALID_PASSWORD =>
            {
                FlightError::Unauthenticated(db.message().to_owned())
            }
            Some(db) if db.code() == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
                FlightError::PermissionDenied(db.message().to_owned())
            }
            _ => FlightError::Database(e.to_string()),
        }
    }
}

pub type Result<T, E = FlightError> = std::result::Result<T, E>;
