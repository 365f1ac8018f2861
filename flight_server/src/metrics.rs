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

    pub fn served(&self, rows: usize, bytes: usize) {
        self.rows_served.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store: &StoreStats) -> String {
        let mut out = String::new();
        let methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP barecount_flight_requests_total Flight calls by method."
        );
        let _ = writeln!(out, "# TYPE barecount_flight_requests_total counter");
        for (name, m) in methods.iter() {
            let _ = writeln!(
                out,
                "barecount_flight_requests_total{{method=\"{name}\"}} {}",
                m.requests
            );
        }
        let _ = writeln!(
            out,
            "# HELP barecount_flight_errors_total Failed Flight calls by method and gRPC code."
        );
        let _ = writeln!(out, "# TYPE barecount_flight_errors_total counter");
        for (name, m) in methods.iter() {
            for (code, n) in &m.errors {
                let _ = writeln!(
                    out,
                    "barecount_flight_errors_total{{method=\"{name}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP barecount_flight_request_duration_seconds Time to answer a Flight call (to the start of streaming).");
        let _ = writeln!(
            out,
            "# TYPE barecount_flight_request_duration_seconds histogram"
        );
        for (name, m) in methods.iter() {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "barecount_flight_request_duration_seconds_bucket{{method=\"{name}\",le=\"{le}\"}} {}",
                    m.buckets[i]
                );
            }
            let _ = writeln!(out, "barecount_flight_request_duration_seconds_bucket{{method=\"{name}\",le=\"+Inf\"}} {}", m.requests);
            let _ = writeln!(
                out,
                "barecount_flight_request_duration_seconds_sum{{method=\"{name}\"}} {}",
                m.seconds
            );
            let _ = writeln!(
                out,
                "barecount_flight_request_duration_seconds_count{{method=\"{name}\"}} {}",
                m.requests
            );
        }
        let counters = [
            (
                "barecount_flight_rows_served_total",
                "Rows served to clients.",
                self.rows_served.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_bytes_served_total",
                "Arrow bytes served to clients.",
                self.bytes_served.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_exports_total",
                "Exports written.",
                self.exports.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_cache_hits_total",
                "Version reads answered from the cache.",
                store.hits.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_cache_misses_total",
                "Version reads that loaded from Postgres.",
                store.misses.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_cache_evictions_total",
                "Versions evicted from the cache.",
                store.evictions.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_cache_memory_hits_total",
                "Version reads answered from the memory tier.",
                store.memory_hits.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_cache_parallel_loads_total",
                "Versions loaded with parallel COPYs over block ranges.",
                store.parallel_loads.load(Ordering::Relaxed),
            ),
            (
                "barecount_flight_cache_loaded_rows_total",
                "Rows loaded from Postgres into the cache.",
                store.loaded_rows.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP barecount_flight_cache_bytes Bytes held by the version cache.\n# TYPE barecount_flight_cache_bytes gauge\nbarecount_flight_cache_bytes {}",
            store.cached_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP barecount_flight_cache_memory_bytes Bytes held by the memory tier.\n# TYPE barecount_flight_cache_memory_bytes gauge\nbarecount_flight_cache_memory_bytes {}",
            store.memory_bytes.load(Ordering::Relaxed)
        );
        out
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
