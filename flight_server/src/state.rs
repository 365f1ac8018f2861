//! What every request handler shares: the database, the version store and the signer. The
//! tenant comes from each request's credentials (see `auth`).

use crate::auth::{self, Caller};
use crate::catalog::Catalog;
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::metrics::Metrics;
use crate::query;
use crate::store::Store;
use crate::ticket::TicketSigner;
use datafusion::prelude::SessionContext;
use std::sync::Arc;
use tonic::Request;

#[derive(Debug, Clone)]
pub struct State {
    pub db: Arc<Db>,
    pub store: Arc<Store>,
    pub signer: TicketSigner,
    /// Credentials behind sessions, re-checked at most every few seconds.
    pub live: Arc<auth::LiveCredentials>,
    pub metrics: Arc<Metrics>,
    /// Where exports are written (one directory per tenant).
    pub export_dir: std::path::PathBuf,
    /// Store batches per endpoint of a dataset fetched by path.
    pub endpoint_batches: usize,
}

/// The caller the outer service authenticated and attached to the request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| FlightError::Unauthenticated("request was not authenticated".into()))
}

impl State {
    /// Authenticates a request's credentials.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller> {
        let creds = auth::credentials(request.metadata())?;
        auth::authenticate(&self.db, &self.signer, &self.live, &creds).await
    }

    pub async fn catalog(&self, tenant: &str) -> Result<Catalog> {
        Catalog::load(&self.db, tenant).await
    }

    /// Checks the tenant's plan and meters rows served (SQLSTATE 53400 becomes LimitExceeded).
    pub async fn charge_read(&self, tenant: &str, rows: usize, bytes: usize) -> Result<()> {
        let (rows64, bytes64) = (rows as i64, bytes as i64);
        self.db
            .run(|c| async move {
                c.execute(
                    "SELECT barecount.usage_charge($1, 'read', $2, $3)",
                    &[&tenant, &rows64, &bytes64],
                )
                .await
            })
            .await?;
        self.metrics.served(rows, bytes);
        Ok(())
    }

    pub async fn session(&self, tenant: &str) -> Result<SessionContext> {
        Ok(self.session_and_catalog(tenant).await?.0)
    }

    /// A session and the catalog snapshot it was built over.
    pub async fn session_and_catalog(&self, tenant: &str) -> Result<(SessionContext, Catalog)> {
        let catalog = self.catalog(tenant).await?;
        let ctx = query::session(catalog.clone(), self.db.clone(), self.store.clone())?;
        Ok((ctx, catalog))
    }
}
