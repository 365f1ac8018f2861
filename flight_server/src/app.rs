//! Building and running the server: `Application::build(config)` binds the socket, so the port
//! is known (and connectable) before `run_until_stopped()` serves.

use crate::config::Config;
use crate::db::Db;
use crate::flight_service::BareCountFlight;
use crate::metrics::Metrics;
use crate::sql_service::SqlService;
use crate::state::State;
use crate::store::Store;
use crate::ticket::TicketSigner;
use arrow_flight::flight_service_server::FlightServiceServer;
use rand::RngCore;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub struct Application {
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    web_listener: Option<TcpListener>,
    /// The web app's TLS settings (from --tls-cert and --tls-key).
    web_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Where ledger digests are kept, and how often one is taken (None: never).
    digests: (std::path::PathBuf, Option<std::time::Duration>),
    service: BareCountFlight,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &std::path::PathBuf| {
                    std::fs::read(p)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
                };
                let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
                Some(tonic::transport::ServerTlsConfig::new().identity(identity))
            }
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
        };
        Db::check(&config.database_url)?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let key = match &config.ticket_secret {
            Some(s) if !s.is_empty() => s.as_bytes().to_vec(),
            _ => {
                let mut k = vec![0u8; 32];
                rand::rng().fill_bytes(&mut k);
                k
            }
        };
        let metrics_listener = match config.metrics_listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let web_listener = match config.web_listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let web_tls = match (&config.tls_cert, &config.tls_key, &web_listener) {
            (Some(cert), Some(key), Some(_)) => Some(crate::web::tls_config(cert, key)?),
            _ => None,
        };
        let state = State {
            metrics: Arc::new(Metrics::default()),
            export_dir: config.export_dir.clone(),
            db: Arc::new(Db::new(config.database_url.clone())),
            store: Arc::new(Store::open(
                &config.cache_dir,
                config.cache_max_bytes,
                config.memory_cache_bytes,
                config.parallel_load_min_bytes,
                std::time::Duration::from_secs(config.flag_max_age_secs),
            )?),
            signer: TicketSigner::new(key, config.ticket_ttl_secs, config.session_ttl_secs),
            live: Arc::default(),
            endpoint_batches: config
                .endpoint_rows
                .div_ceil(crate::store::BATCH_ROWS)
                .max(1),
        };
        if let (Some(path), Some(l)) = (&config.web_port_file, &web_listener) {
            tokio::fs::write(path, l.local_addr()?.port().to_string()).await?;
        }
        if let Some(path) = &config.port_file {
            tokio::fs::write(path, addr.port().to_string()).await?;
        }
        Ok(Application {
            listener,
            tls,
            addr,
            metrics_listener,
            web_listener,
            web_tls,
            digests: (
                config.digest_dir(),
                (config.digest_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(config.digest_interval_secs)),
            ),
            service: BareCountFlight {
                sql: SqlService { state },
            },
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the metrics endpoint listens, if it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the web app listens, if it is on.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes; calls in flight finish first.
    pub async fn run_until<F: Future<Output = ()> + Send>(self, shutdown: F) -> anyhow::Result<()> {
        let metrics_task = self.metrics_listener.map(|l| {
            let state = &self.service.sql.state;
            tokio::spawn(crate::metrics::serve(
                l,
                state.metrics.clone(),
                state.store.clone(),
            ))
        });
        let web_task = self.web_listener.map(|l| {
            let web = crate::web::Web::new(self.service.sql.state.clone(), self.web_tls.is_some());
            tokio::spawn(crate::web::serve(
                l,
                web,
                self.web_tls.clone(),
                std::future::pending(),
            ))
        });
        let digest_task = self.digests.1.map(|every| {
            let state = &self.service.sql.state;
            crate::digest::schedule(
                state.db.clone(),
                self.digests.0.clone(),
                every,
                state.metrics.clone(),
            )
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let result = builder
            .add_service(FlightServiceServer::new(self.service))
            .serve_with_incoming_shutdown(nodelay(TcpListenerStream::new(self.listener)), shutdown)
            .await;
        if let Some(t) = metrics_task {
            t.abort();
        }
        if let Some(t) = digest_task {
            t.abort();
        }
        if let Some(t) = web_task {
            t.abort();
        }
        Ok(result?)
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// Accepted connections with TCP_NODELAY, which tonic sets only on listeners it binds itself:
/// without it a small response waits for the client's delayed ACK (Nagle), some 40 ms per
/// exchange on Linux.
fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(|conn| {
        conn.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY on an accepted connection: {e}");
            }
        })
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio_stream::StreamExt;

    /// Accepted connections carry TCP_NODELAY (an accepted socket does not inherit it).
    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut plain = TcpListenerStream::new(listener);
        let raw = plain.next().await.unwrap().unwrap();
        assert!(!raw.nodelay().unwrap(), "the default this fixes");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut incoming = Box::pin(nodelay(TcpListenerStream::new(listener)));
        let conn = incoming.next().await.unwrap().unwrap();
        assert!(conn.nodelay().unwrap());
    }
}
