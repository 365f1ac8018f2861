//! Server configuration, from flags or environment.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(
        long,
        env = "BARECOUNT_FLIGHT_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Postgres connection string of the database with the barecount extension.
    #[arg(long, env = "BARECOUNT_DATABASE_URL")]
    pub database_url: String,
    /// Secret that signs tickets; replicas behind one load balancer share it. Random if unset.
    #[arg(long, env = "BARECOUNT_TICKET_SECRET", hide_env_values = true)]
    pub ticket_secret: Option<String>,
    /// How long a ticket stays valid, in seconds.
    #[arg(long, env = "BARECOUNT_TICKET_TTL_SECS", default_value_t = 300)]
    pub ticket_ttl_secs: u64,
    /// How long a session token from the handshake stays valid, in seconds.
    #[arg(long, env = "BARECOUNT_SESSION_TTL_SECS", default_value_t = 3600)]
    pub session_ttl_secs: u64,
    /// Rows per endpoint when a dataset is fetched by path: larger versions are split over
    /// several endpoints (rounded to whole batches of 65,536 rows) that clients may fetch in
    /// parallel.
    #[arg(long, env = "BARECOUNT_ENDPOINT_ROWS", default_value_t = 1_048_576)]
    pub endpoint_rows: usize,
    /// Directory of the version cache (Arrow IPC files keyed by dataset, version and content
    /// hash). Kept across restarts.
    #[arg(long, env = "BARECOUNT_CACHE_DIR", default_value_os_t = default_cache_dir())]
    pub cache_dir: PathBuf,
    /// Size limit of the version cache in bytes; least recently used versions are evicted.
    #[arg(long, env = "BARECOUNT_CACHE_MAX_BYTES", default_value_t = 8 << 30)]
    pub cache_max_bytes: u64,
    /// Directory exports are written to, one subdirectory per tenant.
    #[arg(long, env = "BARECOUNT_EXPORT_DIR", default_value_os_t = default_export_dir())]
    pub export_dir: PathBuf,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); off if unset.
    #[arg(long, env = "BARECOUNT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Write the bound port to this file once the server accepts connections (for scripts).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
}

impl Config {
    /// A configuration for tests and embedding: an ephemeral loopback port.
    pub fn local(database_url: impl Into<String>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            ticket_secret: None,
            ticket_ttl_secs: 300,
            session_ttl_secs: 3600,
            endpoint_rows: 1_048_576,
            cache_dir: default_cache_dir(),
            cache_max_bytes: 8 << 30,
            metrics_listen: None,
            export_dir: default_export_dir(),
            port_file: None,
        }
    }
}

/// `$XDG_CACHE_HOME/barecount-flight`, else `~/.cache/barecount-flight`, else under the
/// system temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("barecount-flight");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache").join("barecount-flight");
    }
    std::env::temp_dir().join("barecount-flight-cache")
}

/// `$XDG_DATA_HOME/barecount-flight/exports`, else `~/.local/share/barecount-flight/exports`,
/// else under the system temporary directory.
pub fn default_export_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("barecount-flight").join("exports");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/barecount-flight/exports");
    }
    std::env::temp_dir().join("barecount-flight-exports")
}
