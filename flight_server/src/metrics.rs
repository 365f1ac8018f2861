//! Prometheus text metrics: requests, errors, rows and bytes served, latency, cache activity;
//! served over plain HTTP on their own port (`GET /metrics`).

use crate::store::StoreStats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

#[derive(Debug, Default)]
struct Method {
    requests: u64,
    errors: BTreeMap<String, u64>,
    buckets: [u64; BUCKETS.len()],
    seconds: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    methods: Mutex<BTreeMap<&'static str, Method>>,
    pub rows_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub exports: AtomicU64,
    pub ledger_checks_ok: AtomicU64,
    pub ledger_checks_broken: AtomicU64,
}

impl Metrics {
    /// Records one finished call.
    pub fn observe(&self, method: &'static str, seconds: f64, error: Option<tonic::Code>) {
        let mut methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        let m = methods.entry(method).or_default();
        m.requests += 1;
        m.seconds += seconds;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                m.buckets[i] += 1;
            }
        }
        if let Some(code) = error {
            *m.errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    /// Records one scheduled check of the ledger against its latest kept digest.
    pub fn ledger_check(&self, ok: bool) {
        let c = if ok {
            &self.ledger_checks_ok
        } else {
            &self.ledger_checks_broken
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn served(&self, rows: usize, bytes: usize) {
        self.rows_served.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store: &StoreStats) -> String {
        let mut out = String::new();
        let methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        family(
            &mut out,
            "requests_total",
            "counter",
            "Flight calls by method.",
        );
        for (name, m) in methods.iter() {
            sample(
                &mut out,
                "requests_total",
                &format!("method=\"{name}\""),
                m.requests as f64,
            );
        }
        family(
            &mut out,
            "errors_total",
            "counter",
            "Failed Flight calls by method and gRPC code.",
        );
        for (name, m) in methods.iter() {
            for (code, n) in &m.errors {
                let labels = format!("method=\"{name}\",code=\"{code}\"");
                sample(&mut out, "errors_total", &labels, *n as f64);
            }
        }
        let latency = "request_duration_seconds";
        family(
            &mut out,
            latency,
            "histogram",
            "Time to answer a Flight call (to the start of streaming).",
        );
        for (name, m) in methods.iter() {
            for (i, le) in BUCKETS.iter().enumerate() {
                let labels = format!("method=\"{name}\",le=\"{le}\"");
                sample(
                    &mut out,
                    &format!("{latency}_bucket"),
                    &labels,
                    m.buckets[i] as f64,
                );
            }
            let labels = format!("method=\"{name}\",le=\"+Inf\"");
            sample(
                &mut out,
                &format!("{latency}_bucket"),
                &labels,
                m.requests as f64,
            );
            let labels = format!("method=\"{name}\"");
            sample(&mut out, &format!("{latency}_sum"), &labels, m.seconds);
            sample(
                &mut out,
                &format!("{latency}_count"),
                &labels,
                m.requests as f64,
            );
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let singles = [
            (
                "rows_served_total",
                "counter",
                "Rows served to clients.",
                load(&self.rows_served),
            ),
            (
                "bytes_served_total",
                "counter",
                "Arrow bytes served to clients.",
                load(&self.bytes_served),
            ),
            (
                "exports_total",
                "counter",
                "Exports written.",
                load(&self.exports),
            ),
            (
                "ledger_digest_checks_total",
                "counter",
                "Scheduled checks of the evidence ledger that matched its latest kept digest.",
                load(&self.ledger_checks_ok),
            ),
            (
                "ledger_digest_mismatches_total",
                "counter",
                "Scheduled checks that found the ledger no longer matches its latest kept digest.",
                load(&self.ledger_checks_broken),
            ),
            (
                "cache_hits_total",
                "counter",
                "Version reads answered from the cache files.",
                load(&store.hits),
            ),
            (
                "cache_memory_hits_total",
                "counter",
                "Version reads answered from the memory tier.",
                load(&store.memory_hits),
            ),
            (
                "cache_misses_total",
                "counter",
                "Version reads that loaded from Postgres.",
                load(&store.misses),
            ),
            (
                "cache_parallel_loads_total",
                "counter",
                "Versions loaded with parallel COPYs over block ranges.",
                load(&store.parallel_loads),
            ),
            (
                "cache_evictions_total",
                "counter",
                "Versions evicted from the cache files.",
                load(&store.evictions),
            ),
            (
                "cache_loaded_rows_total",
                "counter",
                "Rows loaded from Postgres into the cache.",
                load(&store.loaded_rows),
            ),
            (
                "cache_bytes",
                "gauge",
                "Bytes held by the cache files.",
                load(&store.cached_bytes),
            ),
            (
                "cache_memory_bytes",
                "gauge",
                "Bytes held by the memory tier.",
                load(&store.memory_bytes),
            ),
        ];
        for (name, kind, help, value) in singles {
            family(&mut out, name, kind, help);
            sample(&mut out, name, "", value);
        }
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family (names get the `barecount_flight_` prefix).
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP barecount_flight_{name} {help}");
    let _ = writeln!(out, "# TYPE barecount_flight_{name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "barecount_flight_{name} {value}");
    } else {
        let _ = writeln!(out, "barecount_flight_{name}{{{labels}}} {value}");
    }
}

/// Serves `GET /metrics` until the listener's task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, store: Arc<crate::store::Store>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while read < buf.len() {
                match socket.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
                if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..read]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                ("200 OK", metrics.render(&store.stats))
            } else {
                (
                    "404 Not Found",
                    "not found; metrics are at /metrics\n".to_owned(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
