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
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
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
    /// The request is fine but something it needs is not in the state to serve it (a
    /// suspended tenant): not retryable until someone changes that.
    #[error("{0}")]
    FailedPrecondition(String),
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
            FlightError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            FlightError::NotFound(_) => tonic::Status::not_found(msg),
            FlightError::LimitExceeded(_) => tonic::Status::resource_exhausted(msg),
            FlightError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
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
            // an object the request names does not exist (a dataset without a contract)
            Some(db)
                if db.code() == &tokio_postgres::error::SqlState::UNDEFINED_TABLE
                    || db.code() == &tokio_postgres::error::SqlState::UNDEFINED_OBJECT =>
            {
                FlightError::NotFound(with_hint(db))
            }
            // a suspended tenant, or another object not in the state the call needs
            Some(db)
                if db.code()
                    == &tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE =>
            {
                FlightError::FailedPrecondition(with_hint(db))
            }
            // the request's data is wrong (class 22): the client must change it
            Some(db) if db.code().code().starts_with("22") => {
                FlightError::InvalidRequest(with_hint(db))
            }
            // Only what another attempt may cure is UNAVAILABLE: the connection or the server
            // going away, the server being short of resources. Any other answer Postgres gave
            // is final, so a client must not retry it.
            Some(db) if retryable_sqlstate(db.code().code()) => {
                FlightError::Database(e.to_string())
            }
            Some(db) => FlightError::Internal(format!(
                "the catalog database refused the request ({}): {}",
                db.code().code(),
                db.message()
            )),
            None => FlightError::Database(e.to_string()),
        }
    }
}

/// A Postgres error's message with its hint, if it has one.
fn with_hint(db: &tokio_postgres::error::DbError) -> String {
    match db.hint() {
        Some(h) => format!("{} (hint: {h})", db.message()),
        None => db.message().to_owned(),
    }
}

/// SQLSTATEs worth retrying: connection exceptions (08), insufficient resources (53),
/// operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect
/// now), serialization failure and deadlock (40001, 40P01).
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a task panicked".to_owned())
}

/// Spawns a task that feeds a stream through `tx`. If the task panics, the stream ends with
/// `on_panic(message)` instead of ending early as if it were complete.
pub fn spawn_feeder<T, F>(
    tx: tokio::sync::mpsc::Sender<T>,
    on_panic: impl FnOnce(String) -> T + Send + 'static,
    task: F,
) where
    T: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::FutureExt;
    tokio::spawn(async move {
        if let Err(p) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
            let msg = panic_message(p);
            tracing::error!(panic = %msg, "a stream task panicked");
            let _ = tx.send(on_panic(msg)).await;
        }
    });
}

/// [`spawn_feeder`] for blocking work.
pub fn spawn_blocking_feeder<T>(
    tx: tokio::sync::mpsc::Sender<T>,
    on_panic: impl FnOnce(String) -> T + Send + 'static,
    task: impl FnOnce() + Send + 'static,
) where
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)) {
            let msg = panic_message(p);
            tracing::error!(panic = %msg, "a stream task panicked");
            let _ = tx.blocking_send(on_panic(msg));
        }
    });
}

pub type Result<T, E = FlightError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_feeder_ends_its_stream_with_an_error() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<u32>>(4);
        let feeder = tx.clone();
        spawn_feeder(tx, |m| Err(FlightError::Internal(m)), async move {
            let _ = feeder.send(Ok(1)).await;
            #[allow(clippy::panic)]
            {
                panic!("boom");
            }
        });
        assert!(matches!(rx.recv().await, Some(Ok(1))));
        assert!(
            matches!(rx.recv().await, Some(Err(FlightError::Internal(m))) if m.contains("boom"))
        );
        assert!(rx.recv().await.is_none());

        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<u32>>(4);
        let feeder = tx.clone();
        spawn_blocking_feeder(
            tx,
            |m| Err(FlightError::Internal(m)),
            move || {
                let _ = feeder.blocking_send(Ok(2));
                #[allow(clippy::panic)]
                {
                    panic!("bang");
                }
            },
        );
        assert!(matches!(rx.recv().await, Some(Ok(2))));
        assert!(
            matches!(rx.recv().await, Some(Err(FlightError::Internal(m))) if m.contains("bang"))
        );
    }

    #[test]
    fn only_transient_postgres_errors_are_retryable() {
        for code in ["08006", "53300", "57P01", "40001", "40P01"] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        for code in ["XX000", "42P01", "22023", "42501", "P0001", "23505"] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }
}
