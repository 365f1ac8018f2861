//! Server configuration: flags, then environment variables, then a YAML configuration file
//! (`--config FILE` or `BARECOUNT_FLIGHT_CONFIG`) whose keys are the flags' long names, then
//! defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// YAML file of settings (keys are the long flag names, e.g. `database-url`); flags and
    /// environment variables override it.
    #[arg(long, env = "BARECOUNT_FLIGHT_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain for TLS; with --tls-key the server speaks only TLS.
    #[arg(long, env = "BARECOUNT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "BARECOUNT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(
        long,
        env = "BARECOUNT_FLIGHT_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Postgres connection string of the database with the barecount extension.
    #[arg(long, env = "BARECOUNT_DATABASE_URL", hide_env_values = true)]
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
    /// Memory budget of the in-memory tier in front of the cache files, in bytes: recently
    /// read versions stay in memory as Arrow batches; least recently used ones leave first.
    #[arg(long, env = "BARECOUNT_MEMORY_CACHE_BYTES", default_value_t = 2 << 30)]
    pub memory_cache_bytes: u64,
    /// Versions whose table is at least this large (and fits the memory budget) load with
    /// parallel COPYs over block ranges; smaller ones with one streamed COPY. On the 10M-row
    /// benchmark (bench/README.md, 5 interleaved runs) the parallel first read took 5.14 s
    /// against 6.09 s for one COPY; the later reads are the same either way.
    #[arg(long, env = "BARECOUNT_PARALLEL_LOAD_MIN_BYTES", default_value_t = 64 << 20)]
    pub parallel_load_min_bytes: u64,
    /// How long a tenant's feature flags (`barecount.gateway_flags`) are cached, in seconds:
    /// the bound on how stale a flag can be here (e.g. `flight.parallel_load`).
    #[arg(long, env = "BARECOUNT_FLAG_MAX_AGE_SECS", default_value_t = 5)]
    pub flag_max_age_secs: u64,
    /// Directory exports are written to, one subdirectory per tenant.
    #[arg(long, env = "BARECOUNT_EXPORT_DIR", default_value_os_t = default_export_dir())]
    pub export_dir: PathBuf,
    /// Directory the evidence ledger's digests are kept in (`ledger-digests.jsonl`, mode 0700):
    /// outside the database, where its superuser cannot rewrite them. Default: the cache
    /// directory's `ledger-digests`.
    #[arg(long, env = "BARECOUNT_DIGEST_DIR")]
    pub digest_dir: Option<PathBuf>,
    /// Seconds between ledger digests (each one first verifies the chain against the last);
    /// 0 turns the schedule off. Entries newer than the latest digest are the window in which
    /// a forged tail goes unnoticed.
    #[arg(long, env = "BARECOUNT_DIGEST_INTERVAL_SECS", default_value_t = 60)]
    pub digest_interval_secs: u64,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); off if unset.
    #[arg(long, env = "BARECOUNT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the web app (pages and the JSON API under /api/v1/, same credentials as
    /// Flight); off if unset. With --tls-cert and --tls-key it speaks HTTPS with the same
    /// certificate and its session cookie is Secure; without, plain HTTP (keep it on loopback
    /// or behind a proxy that terminates TLS).
    #[arg(long, env = "BARECOUNT_WEB_LISTEN")]
    pub web_listen: Option<SocketAddr>,
    /// Write the web app's bound port to this file once it accepts connections (for scripts).
    #[arg(long)]
    pub web_port_file: Option<PathBuf>,
    /// Write the bound port to this file once the server accepts connections (for scripts).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
}

impl Config {
    /// Where ledger digests are kept.
    pub fn digest_dir(&self) -> PathBuf {
        self.digest_dir
            .clone()
            .unwrap_or_else(|| self.cache_dir.join("ledger-digests"))
    }

    /// A configuration for tests and embedding: an ephemeral loopback port.
    /// Its cache and export directories are its own, under the system temporary directory, so
    /// nothing is shared with another server on the machine.
    pub fn local(database_url: impl Into<String>) -> Self {
        let scratch = std::env::temp_dir().join(format!(
            "barecount-flight-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        Config {
            config: None,
            tls_cert: None,
            tls_key: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            ticket_secret: None,
            ticket_ttl_secs: 300,
            session_ttl_secs: 3600,
            endpoint_rows: 1_048_576,
            cache_dir: scratch.join("cache"),
            cache_max_bytes: 8 << 30,
            memory_cache_bytes: 2 << 30,
            parallel_load_min_bytes: 64 << 20,
            flag_max_age_secs: 5,
            metrics_listen: None,
            web_listen: None,
            web_port_file: None,
            digest_dir: Some(scratch.join("ledger-digests")),
            digest_interval_secs: 0,
            export_dir: scratch.join("exports"),
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

/// Splices the settings of a configuration file into the command line of `serve`: each key
/// becomes `--key value` placed before the user's own flags (the command parses with
/// `args_override_self`, so later flags win), and a key whose environment variable is set is
/// left out (so the environment wins over the file). Unknown keys are refused by name.
pub fn with_config_file(
    args: Vec<std::ffi::OsString>,
    serve: &clap::Command,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let Some(at) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    let mut path: Option<PathBuf> = None;
    let mut i = at + 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--config" {
            path = args.get(i + 1).map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        }
        i += 1;
    }
    let path = match path.or_else(|| std::env::var_os("BARECOUNT_FLIGHT_CONFIG").map(PathBuf::from))
    {
        Some(p) => p,
        None => return Ok(args),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read configuration file {}: {e}", path.display()))?;
    let map: std::collections::BTreeMap<String, serde_norway::Value> =
        serde_norway::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "configuration file {} is not a YAML mapping: {e}",
                path.display()
            )
        })?;
    let mut injected = Vec::new();
    for (key, value) in map {
        let long = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "configuration file {}: unknown setting \"{key}\"",
                    path.display()
                )
            })?;
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let value = match value {
            serde_norway::Value::String(s) => s,
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Bool(b) => b.to_string(),
            other => anyhow::bail!(
                "configuration file {}: setting \"{key}\" must be a string, number or boolean, not {other:?}",
                path.display()
            ),
        };
        injected.push(std::ffi::OsString::from(format!("--{long}")));
        injected.push(std::ffi::OsString::from(value));
    }
    let mut out = args[..=at].to_vec();
    out.extend(injected);
    out.extend_from_slice(&args[at + 1..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command, FromArgMatches};

    fn serve() -> Command {
        Config::augment_args(Command::new("serve"))
    }

    #[test]
    fn a_file_fills_in_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("bc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("flight.yaml");
        std::fs::write(
            &file,
            "database_url: postgres://x/y\nticket-ttl-secs: 60\nlisten: 127.0.0.1:7000\n",
        )
        .unwrap();
        let args: Vec<std::ffi::OsString> = [
            "bin",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7001",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let out = with_config_file(args, &serve()).unwrap();
        let parsed = serve()
            .args_override_self(true)
            .try_get_matches_from(out[1..].to_vec())
            .unwrap();
        let c = Config::from_arg_matches(&parsed).unwrap();
        assert_eq!(c.database_url, "postgres://x/y");
        assert_eq!(c.ticket_ttl_secs, 60);
        assert_eq!(c.listen.port(), 7001, "the flag beats the file");

        std::fs::write(&file, "no_such_setting: 1\n").unwrap();
        let args: Vec<std::ffi::OsString> = ["bin", "serve", "--config", file.to_str().unwrap()]
            .iter()
            .map(Into::into)
            .collect();
        let e = with_config_file(args, &serve()).unwrap_err();
        assert!(e.to_string().contains("no_such_setting"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
