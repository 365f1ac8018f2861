//! What every request handler shares: the tenant served, the database, the version cache and
//! the ticket signer.

use crate::catalog::Catalog;
use crate::db::Db;
use crate::error::Result;
use crate::query;
use crate::store::Store;
use crate::ticket::TicketSigner;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct State {
    pub tenant: String,
    pub db: Arc<Db>,
    pub store: Arc<Store>,
    pub signer: TicketSigner,
}

impl State {
    /// The tenant the caller acts for. Until token authentication lands every caller is the
    /// server's configured tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub async fn catalog(&self) -> Result<Catalog> {
        Catalog::load(&self.db, self.tenant()).await
    }

    /// Checks the tenant's plan and meters rows served (SQLSTATE 53400 becomes LimitExceeded).
    pub async fn charge_read(&self, rows: usize, bytes: usize) -> Result<()> {
        let client = self.db.client().await?;
        client
            .execute(
                "SELECT barecount.usage_charge($1, 'read', $2, $3)",
                &[&self.tenant(), &(rows as i64), &(bytes as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn session(&self) -> Result<SessionContext> {
        let catalog = self.catalog().await?;
        query::session(catalog, self.db.clone(), self.store.clone())
    }
}
