//! The delivery worker (`barecount-flight deliver`): leases due webhook (and export) deliveries from Postgres
//! (`barecount.gateway_deliveries_claim`, FOR UPDATE SKIP LOCKED, so several workers never take
//! the same one while its lease lasts), signs each per Standard Webhooks with the action's
//! secrets (opened with the operator's keyring), POSTs it, and reports every attempt
//! (`barecount.gateway_delivery_report`), which decides retry, delivery or dead letter.
//!
//! At least once: a worker killed mid-flight leaves its deliveries leased; when the lease
//! passes another worker sends them again with the same `webhook-id`. Woken by NOTIFY
//! `barecount_deliveries` and, for retries coming due, by a poll.

use anyhow::Context;
use barecount_core::secrets::{self, Keyring};
use barecount_core::webhook::signature_header;
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, Semaphore};
use tokio_postgres::{AsyncMessage, Client};

/// How the worker runs.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverConfig {
    /// Postgres, as a member of barecount_admin.
    #[arg(long, env = "BARECOUNT_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The operator's keyring file (the one barecount.secrets_keyring names).
    #[arg(long, env = "BARECOUNT_SECRETS_KEYRING")]
    pub keyring: PathBuf,
    /// This worker's name in the attempts it records (default: deliver-<pid>).
    #[arg(long)]
    pub worker: Option<String>,
    /// Webhooks in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long a claimed delivery is this worker's; past it another worker may send it.
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// How often to look for retries coming due when no NOTIFY wakes the worker.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

struct Claimed {
    delivery_id: i64,
    tenant_id: String,
    kind: String,
    config: String,
    webhook_id: String,
    url: String,
    body: String,
    attempt: i32,
    timeout_ms: i32,
    kek_id: Option<String>,
    wrapped_dek: Option<Vec<u8>>,
    secret_ids: Option<Vec<i64>>,
    sealed: Option<Vec<Vec<u8>>>,
    auth: Option<(i64, Vec<u8>)>,
}

async fn connect(url: &str, wake: Arc<Notify>) -> anyhow::Result<Client> {
    let (config, tls) = crate::pgtls::prepare(url)?;
    fn listen<S, T>(mut connection: tokio_postgres::Connection<S, T>, wake: Arc<Notify>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("postgres connection ended: {e}");
                        break;
                    }
                }
            }
            wake.notify_one();
        });
    }
    let client = match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls).await?;
            listen(connection, wake);
            client
        }
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            listen(connection, wake);
            client
        }
    };
    client.batch_execute("LISTEN barecount_deliveries").await?;
    Ok(client)
}

async fn claim(
    db: &Client,
    worker: &str,
    max: usize,
    lease: Duration,
) -> anyhow::Result<Vec<Claimed>> {
    let rows = db
        .query(
            "SELECT delivery_id, tenant_id, webhook_id, url, body, attempt, timeout_ms, kek_id, wrapped_dek, secret_ids, sealed,
                    auth_secret_id, auth_sealed, kind, config
               FROM barecount.gateway_deliveries_claim($1, $2, make_interval(secs => $3))",
            &[&worker, &(max as i32), &(lease.as_secs_f64())],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            delivery_id: r.get(0),
            tenant_id: r.get(1),
            kind: r.get(13),
            config: r.get(14),
            webhook_id: r.get(2),
            url: r.get::<_, Option<String>>(3).unwrap_or_default(),
            body: r.get(4),
            attempt: r.get(5),
            timeout_ms: r.get(6),
            kek_id: r.get(7),
            wrapped_dek: r.get(8),
            secret_ids: r.get(9),
            sealed: r.get(10),
            auth: match (r.get::<_, Option<i64>>(11), r.get::<_, Option<Vec<u8>>>(12)) {
                (Some(id), Some(s)) => Some((id, s)),
                _ => None,
            },
        })
        .collect())
}

/// What an attempt came to, as gateway_delivery_report takes it.
struct Report {
    outcome: &'static str,
    status: Option<i32>,
    error: Option<String>,
    retry_after: Option<f64>,
}

fn error(e: impl std::fmt::Display) -> Report {
    Report {
        outcome: "error",
        status: None,
        error: Some(e.to_string()),
        retry_after: None,
    }
}

/// Opens one of the delivery's sealed secrets with the tenant's key.
fn open(ring: &Keyring, d: &Claimed, id: i64, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let (Some(kek), Some(wrapped)) = (&d.kek_id, &d.wrapped_dek) else {
        return Err(format!("secret {id}: the tenant has no key"));
    };
    secrets::open_secret(ring, &d.tenant_id, kek, wrapped, id, sealed)
        .map_err(|e| format!("secret {id}: {e}"))
}

/// The action's credential (a webhook's Authorization value, an export's API token), as text.
fn credential(ring: &Keyring, d: &Claimed) -> Result<Option<String>, String> {
    match &d.auth {
        Some((id, s)) => Ok(Some(
            String::from_utf8(open(ring, d, *id, s)?)
                .map_err(|_| format!("secret {id} is not text"))?,
        )),
        None => Ok(None),
    }
}

/// Opens the delivery's signing keys, newest first.
fn signing_keys(ring: &Keyring, d: &Claimed) -> Result<Vec<Vec<u8>>, String> {
    let ids = d.secret_ids.as_deref().unwrap_or_default();
    if ids.is_empty() {
        return Err(
            "the action has no signing secret: run barecount.webhook_secret_rotate for it".into(),
        );
    }
    let sealed = d.sealed.as_deref().unwrap_or_default();
    ids.iter()
        .zip(sealed)
        .map(|(id, s)| open(ring, d, *id, s))
        .collect()
}

/// An export action: barecount-flight's export of the dataset, with the API token the tenant
/// keeps as the action's secret (so the export has that token's tenant, scope and limits, and
/// its own receipt). The file is named after the delivery's id: a redelivery after an export
/// that was written but not reported finds it there and counts it as done.
async fn export(ring: &Keyring, d: &Claimed) -> Report {
    use crate::export::{ExportRequest, Format};
    let config: serde_json::Value = serde_json::from_str(&d.config).unwrap_or_default();
    let token =
        match credential(ring, d) {
            Ok(Some(t)) => t,
            Ok(None) => return error(
                "the export action's token_secret is not set: barecount.secret_set(name, token)",
            ),
            Err(e) => return error(e),
        };
    let format = match config["format"].as_str().unwrap_or("parquet") {
        "csv" => Format::Csv,
        "arrow" => Format::Arrow,
        _ => Format::Parquet,
    };
    let request = ExportRequest {
        dataset: config["dataset"].as_str().map(str::to_owned),
        version: None,
        query: None,
        format,
        name: Some(d.webhook_id.clone()),
    };
    let url = config["flight_url"].as_str().unwrap_or_default();
    match crate::client::export(url, &crate::client::Auth::Token(token), &request, |_, _| {}).await
    {
        // a file of this delivery's name exists: an earlier attempt wrote it
        Err(e) if !e.to_string().contains("exists already") => {
            error(format!("the export failed: {e:#}"))
        }
        _ => Report {
            outcome: "status",
            status: Some(200),
            error: None,
            retry_after: None,
        },
    }
}

async fn send(http: &reqwest::Client, ring: &Keyring, d: &Claimed) -> Report {
    if d.kind == "export" {
        return export(ring, d).await;
    }
    let (keys, auth) = match signing_keys(ring, d).and_then(|k| Ok((k, credential(ring, d)?))) {
        Ok(k) => k,
        Err(e) => return error(e),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.as_secs() as i64)
        .unwrap_or(0);
    let mut req = http
        .post(&d.url)
        .timeout(Duration::from_millis(d.timeout_ms.max(1) as u64))
        .header("content-type", "application/json")
        .header("webhook-id", &d.webhook_id)
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            signature_header(&keys, &d.webhook_id, now, d.body.as_bytes()),
        )
        .body(d.body.clone());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| barecount_core::webhook::retry_after(v, SystemTime::now()));
            // read (and drop) the body so the connection can be reused
            let _ = resp.bytes().await;
            Report {
                outcome: "status",
                status: Some(i32::from(status)),
                error: None,
                retry_after,
            }
        }
        Err(e) if e.is_timeout() => Report {
            outcome: "timeout",
            status: None,
            error: Some(format!("no answer within {} ms", d.timeout_ms)),
            retry_after: None,
        },
        Err(e) => {
            // the source chain says what failed (refused, reset, DNS)
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            Report {
                outcome: "connection",
                status: None,
                error: Some(msg),
                retry_after: None,
            }
        }
    }
}

/// A Postgres error with its message (tokio-postgres says only "db error").
fn pg(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(d) => anyhow::anyhow!("{} ({})", d.message(), d.code().code()),
        None => anyhow::anyhow!(e),
    }
}

async fn report(
    db: &Client,
    worker: &str,
    d: &Claimed,
    started: SystemTime,
    r: &Report,
) -> anyhow::Result<String> {
    let started = started
        .duration_since(UNIX_EPOCH)
        .map(|t| t.as_secs_f64())
        .unwrap_or(0.0);
    let row = db
        .query_one(
            "SELECT barecount.gateway_delivery_report($1, $2, $3, to_timestamp($4::float8), $5, $6, $7, $8)",
            &[&d.delivery_id, &d.attempt, &worker, &started, &r.outcome, &r.status, &r.error, &r.retry_after],
        )
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

/// Runs the worker until `stop` resolves; then claims nothing more and waits for the
/// deliveries in flight to be reported.
pub async fn run(
    cfg: DeliverConfig,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&cfg.keyring)
        .with_context(|| format!("reading the keyring {}", cfg.keyring.display()))?;
    let ring = Arc::new(
        Keyring::parse(&text).with_context(|| format!("the keyring {}", cfg.keyring.display()))?,
    );
    let worker = Arc::new(
        cfg.worker
            .clone()
            .unwrap_or_else(|| format!("deliver-{}", std::process::id())),
    );
    let wake = Arc::new(Notify::new());
    let db = Arc::new(
        connect(&cfg.database_url, wake.clone())
            .await
            .context("connecting to Postgres")?,
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("barecount-delivery/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(cfg.concurrency)
        .build()?;
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let lease = Duration::from_secs(cfg.lease_secs.clamp(1, 3600));
    let poll = Duration::from_millis(cfg.poll_ms.max(10));
    tracing::info!(worker = %worker, concurrency = cfg.concurrency, "delivery worker started");
    println!("barecount-flight deliver: worker {worker} ready");
    tokio::pin!(stop);
    loop {
        if db.is_closed() {
            anyhow::bail!("the Postgres connection was lost; the leases of deliveries in flight will pass and another worker will send them");
        }
        let free = slots.available_permits();
        let mut got = 0;
        if free > 0 {
            let batch = claim(&db, &worker, free, lease).await?;
            got = batch.len();
            for d in batch {
                let permit = slots.clone().acquire_owned().await?;
                let (db, http, ring, worker) =
                    (db.clone(), http.clone(), ring.clone(), worker.clone());
                tokio::spawn(async move {
                    let started = SystemTime::now();
                    let t = Instant::now();
                    let r = send(&http, &ring, &d).await;
                    match report(&db, &worker, &d, started, &r).await {
                        Ok(state) => tracing::debug!(delivery = d.delivery_id, attempt = d.attempt, state = %state, ms = t.elapsed().as_millis() as u64, "reported"),
                        Err(e) => tracing::warn!(delivery = d.delivery_id, "report failed ({e:#}); the lease will pass and the delivery be sent again"),
                    }
                    drop(permit);
                });
            }
        }
        if got > 0 && got == free {
            // a full batch: more may be due; wait for a free slot first
            tokio::select! {
                _ = &mut stop => break,
                p = slots.clone().acquire_owned() => drop(p?),
            }
            continue;
        }
        if got > 0 {
            continue;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    tracing::info!("delivery worker stopping: waiting for deliveries in flight");
    let _all = slots.acquire_many(cfg.concurrency.max(1) as u32).await?;
    Ok(())
}
