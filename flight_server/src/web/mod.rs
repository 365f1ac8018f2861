//! The web app: server-rendered pages and a JSON API (`/api/v1/`) over the same credentials as
//! Flight, served by barecount-flight on `--web-listen`.
//!
//! Sign-in takes a role's password or an API token and answers with a session cookie
//! (HttpOnly, SameSite=Strict, Secure behind TLS) holding a Flight session token, so a page is
//! checked exactly as a Flight call is: the token's signature, then its credential
//! (`barecount.credential_check`), so a revoked token or a removed member is refused within
//! seconds. Every form that changes state carries a CSRF token derived from the session.
//! Every query names the caller's tenant (`data`): another tenant's objects are "not found".
//! Pages escape all output (askama templates), load no script, and answer with a CSP that
//! allows none.

mod api;
mod chart;
mod data;
mod exports;
mod pages;
mod session;

use crate::state::State;
use axum::http::{header, HeaderValue, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the web handlers share.
#[derive(Debug, Clone)]
pub struct Web {
    pub state: State,
    /// Whether the pages are served over TLS (the cookie is then Secure).
    pub tls: bool,
    pub sessions: Arc<session::SignedOut>,
    pub exports: Arc<exports::Jobs>,
}

impl Web {
    pub fn new(state: State, tls: bool) -> Web {
        Web {
            state,
            tls,
            sessions: Arc::default(),
            exports: Arc::default(),
        }
    }
}

/// The routes.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/catalog", get(pages::catalog))
        .route("/datasets/{name}", get(pages::dataset))
        .route("/datasets/{name}/verify", post(pages::verify))
        .route("/datasets/{name}/export", post(exports::start))
        .route("/exports/{id}", get(exports::page))
        .route("/exports/{id}/file", get(exports::file))
        .route("/api/v1/exports/{id}", get(exports::json))
        .route("/kpis/{name}", get(pages::kpi))
        .route("/evidence", get(pages::evidence))
        .route("/quality", get(pages::quality))
        .route("/quality/batches/{id}", get(pages::batch))
        .route("/quality/batches/{id}/replay", post(pages::replay))
        .route("/operations", get(pages::operations))
        .route("/static/app.css", get(pages::stylesheet))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/catalog", get(api::catalog))
        .route("/api/v1/datasets/{name}", get(api::dataset))
        .route("/api/v1/kpis/{name}/series", get(api::kpi_series))
        .route("/api/v1/ledger", get(api::ledger))
        .route("/api/v1/quality", get(api::quality))
        .route("/api/v1/quality/batches/{id}", get(api::batch))
        .route("/api/v1/runs", get(api::runs))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(Arc::new(web))
}

/// Headers on every answer: no script, no framing, no sniffing, no referrer, no caching of
/// tenant data.
async fn security_headers(request: Request<axum::body::Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// The TLS settings of the web app: the server's certificate chain and key (PEM), HTTP/1.1.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the certificates in {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the private key in {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the web app on `listener` until `shutdown` completes; over TLS when `tls` is given
/// (the server's own certificate, as Flight's).
pub async fn serve(
    listener: TcpListener,
    web: Web,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(web);
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("web: accept: {e}");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            // a client that does not finish its handshake is dropped after 10 s
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("web: TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("web: connection: {e}");
            }
        });
    }
}
