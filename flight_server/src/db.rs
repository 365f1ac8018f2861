//! One shared Postgres connection for catalog reads, authentication and metering, re-opened
//! when it drops (a Postgres restart, a terminated backend); loads get connections of their own.

use crate::error::Result;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

#[derive(Debug)]
pub struct Db {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl Db {
    pub fn new(url: impl Into<String>) -> Self {
        Db {
            url: url.into(),
            client: Mutex::new(None),
        }
    }

    /// Checks the connection string (and its TLS settings) without connecting.
    pub fn check(url: &str) -> Result<()> {
        crate::pgtls::prepare(url).map(|_| ())
    }

    /// A new connection, over TLS when the URL's sslmode asks for it (see `pgtls`).
    async fn connect(&self) -> Result<Client> {
        let (config, tls) = crate::pgtls::prepare(&self.url)?;
        let client = match tls {
            Some(tls) => {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!("postgres connection ended: {e}");
                    }
                });
                client
            }
            None => {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!("postgres connection ended: {e}");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    /// A connection of its own (for long reads such as loading a version).
    pub async fn dedicated(&self) -> Result<Client> {
        self.connect().await
    }

    /// Runs `f` on the shared client; if the connection turns out to be gone, reconnects and
    /// runs it once more. Only reads, authentication and read metering run this way (a reply
    /// lost after a commit could meter a read twice; export receipts are never retried).
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        match f(client.clone()).await {
            Err(e) if connection_lost(&e) => {
                tracing::warn!("postgres connection lost ({e}); reconnecting");
                self.discard(&client).await;
                Ok(f(self.client().await?).await?)
            }
            other => Ok(other?),
        }
    }

    async fn discard(&self, broken: &Arc<Client>) {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            *guard = None;
        }
    }

    /// A live client; connects (or reconnects) on demand.
    pub async fn client(&self) -> Result<Arc<Client>> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let client = Arc::new(self.connect().await?);
        *guard = Some(client.clone());
        Ok(client)
    }
}

/// Whether an error means the connection is gone rather than the statement failed.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.is_closed()
        || e.code().is_some_and(|c| {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        })
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}
