//! One shared Postgres connection for catalog reads and dataset loads, re-opened when it drops.

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

    /// A connection of its own (for long reads such as loading a version).
    pub async fn dedicated(&self) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("postgres connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// A live client; connects (or reconnects) on demand.
    pub async fn client(&self) -> Result<Arc<Client>> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("postgres connection ended: {e}");
            }
        });
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }
}
