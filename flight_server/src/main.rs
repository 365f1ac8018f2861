//! `barecount-flight serve | list | query`: a thin shell over the library.

use arrow::util::pretty::pretty_format_batches;
use barecount_flight::client::{self, Auth};
use barecount_flight::{Application, Config};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "barecount-flight",
    version,
    about = "Arrow Flight SQL server for BareCount published datasets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve published datasets over Flight and Flight SQL.
    Serve(Box<Config>),
    /// List published datasets with their versions and ledger receipts.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a SQL query over Flight SQL and print the result as a table.
    Query {
        #[command(flatten)]
        conn: Conn,
        sql: String,
    },
    /// Export a dataset version or a query result as Parquet, CSV or Arrow IPC into the
    /// server's export directory, with a ledger receipt; shows progress on a terminal.
    Export {
        #[command(flatten)]
        conn: Conn,
        /// Dataset to export (its latest version unless --version).
        #[arg(long, conflicts_with = "query", required_unless_present = "query")]
        dataset: Option<String>,
        #[arg(long, requires = "dataset")]
        version: Option<i32>,
        /// SQL whose result to export.
        #[arg(long)]
        query: Option<String>,
        #[arg(long, value_enum, default_value = "parquet")]
        format: ExportFormat,
        /// File name without extension.
        #[arg(long)]
        name: Option<String>,
    },
    /// Deliver webhooks: lease due deliveries from Postgres, sign them (Standard Webhooks),
    /// send them, and report each attempt (retries, dead letters) until stopped (SIGTERM or
    /// Ctrl-C lets deliveries in flight finish).
    Deliver(barecount_flight::deliver::DeliverConfig),
    /// Offboard a suspended tenant: export all its data and evidence (Parquet of every
    /// published version, its catalog and raw rows as JSON lines, its ledger slice and the
    /// chain's digest, a manifest of SHA-256s) into a new directory under --out, then delete it
    /// everywhere with a final receipt. Refused (nothing written) for an active tenant, the
    /// default tenant or one with pinned versions.
    Offboard {
        /// Postgres, as a member of barecount_admin.
        #[arg(long, env = "BARECOUNT_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long)]
        tenant: String,
        /// Directory the export directory is made in.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Verify the evidence ledger against the latest digest kept in the digest directory and,
    /// unless --verify-only, keep a new digest (what `serve` does on its schedule). Exits with
    /// status 1 if the ledger no longer matches.
    Digest {
        #[arg(long, env = "BARECOUNT_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// The server's digest directory (`serve --digest-dir`).
        #[arg(long, env = "BARECOUNT_DIGEST_DIR")]
        digest_dir: std::path::PathBuf,
        #[arg(long)]
        verify_only: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Parquet,
    Csv,
    Arrow,
}

/// Where the server is and how to authenticate.
#[derive(clap::Args)]
struct Conn {
    #[arg(
        long,
        env = "BARECOUNT_FLIGHT_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    url: String,
    /// A BareCount API token (barecount.token_create).
    #[arg(
        long,
        env = "BARECOUNT_TOKEN",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    token: Option<String>,
    /// A login role; its password comes from --password or BARECOUNT_PASSWORD.
    #[arg(long, env = "BARECOUNT_USER")]
    user: Option<String>,
    #[arg(long, env = "BARECOUNT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl Conn {
    fn auth(&self) -> anyhow::Result<Auth> {
        match (&self.token, &self.user, &self.password) {
            (Some(t), _, _) => Ok(Auth::Token(t.clone())),
            (None, Some(u), Some(p)) => Ok(Auth::Password {
                user: u.clone(),
                password: p.clone(),
            }),
            (None, Some(u), None) => {
                anyhow::bail!("--user {u} needs a password: --password or BARECOUNT_PASSWORD")
            }
            (None, None, _) => anyhow::bail!(
                "no credentials: pass --token (or BARECOUNT_TOKEN), or --user and --password"
            ),
        }
    }
}

fn main() -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("serve subcommand missing"))?;
    let args = barecount_flight::config::with_config_file(std::env::args_os().collect(), &serve)?;
    let matches = Cli::command()
        .mut_subcommand("serve", |s| s.args_override_self(true))
        .get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut Cli::command()))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(config) => {
            let app = Application::build(*config).await?;
            tracing::info!("barecount-flight listening on {}", app.addr());
            app.run_until_stopped().await
        }
        Command::List { conn } => {
            let url = &conn.url;
            let listings = client::list(url, &conn.auth()?).await?;
            println!("{} published dataset(s) at {url}", listings.len());
            for l in listings {
                println!(
                    "  {} v{}: {} rows, content hash {}, ledger receipt #{} {}",
                    l.dataset, l.version, l.row_count, l.content_hash, l.ledger_seq, l.ledger_hash
                );
            }
            Ok(())
        }
        Command::Export {
            conn,
            dataset,
            version,
            query,
            format,
            name,
        } => {
            use barecount_flight::export::{draw, progress_line, ExportRequest, Format};
            use std::io::IsTerminal;
            let request = ExportRequest {
                dataset,
                version,
                query,
                format: match format {
                    ExportFormat::Parquet => Format::Parquet,
                    ExportFormat::Csv => Format::Csv,
                    ExportFormat::Arrow => Format::Arrow,
                },
                name,
            };
            let tty = std::io::stderr().is_terminal();
            let mut last = std::time::Instant::now();
            let receipt = client::export(&conn.url, &conn.auth()?, &request, |rows, total| {
                if tty && last.elapsed().as_millis() >= 100 {
                    draw(&mut std::io::stderr(), &progress_line(rows, total));
                    last = std::time::Instant::now();
                }
            })
            .await?;
            if tty {
                draw(
                    &mut std::io::stderr(),
                    &progress_line(receipt.rows, Some(receipt.rows)),
                );
                eprintln!();
            }
            println!(
                "exported {} ({} rows, {} bytes, {}) to {}\n  sha256 {}\n  ledger receipt #{} {}",
                receipt.source,
                receipt.rows,
                receipt.bytes,
                receipt.format.name(),
                receipt.path,
                receipt.content_hash,
                receipt.ledger_seq,
                receipt.ledger_hash
            );
            Ok(())
        }
        Command::Offboard {
            database_url,
            tenant,
            out,
        } => {
            let done = barecount_flight::offboard::run(&database_url, &tenant, &out).await?;
            println!(
                "tenant {tenant} offboarded: {} files and the manifest in {}, {} ledger entries exported and redacted, final receipt #{}",
                done.files - 1,
                done.dir.display(),
                done.ledger_entries,
                done.receipt_seq
            );
            if !done.roles.is_empty() {
                println!(
                    "its login roles stay, mapped to no tenant (roles are yours: DROP ROLE them when nothing else uses them): {}",
                    done.roles.join(", ")
                );
            }
            Ok(())
        }
        Command::Deliver(cfg) => {
            barecount_flight::deliver::run(cfg, barecount_flight::app::shutdown_signal()).await
        }
        Command::Digest {
            database_url,
            digest_dir,
            verify_only,
        } => {
            use barecount_flight::digest;
            let db = barecount_flight::db::Db::new(database_url);
            let (v, taken) = if verify_only {
                (digest::verify_latest(&db, &digest_dir).await?, None)
            } else {
                digest::publish(&db, &digest_dir).await?
            };
            match &v.digest {
                Some(d) => println!(
                    "ledger: {} entries up to #{}, checked against the digest #{} {} kept at {}",
                    v.checked, v.last_seq, d.seq, d.entry_hash, d.taken_at
                ),
                None => println!(
                    "ledger: {} entries up to #{}, no digest kept before",
                    v.checked, v.last_seq
                ),
            }
            if !v.ok {
                eprintln!(
                    "the ledger does NOT match: first broken entry {:?}: {}",
                    v.first_broken_seq,
                    v.reason.as_deref().unwrap_or("unknown")
                );
                std::process::exit(1);
            }
            if let Some(d) = taken {
                println!("kept digest #{} {}", d.seq, d.entry_hash);
            }
            Ok(())
        }
        Command::Query { conn, sql } => {
            let (_schema, batches) = client::query(&conn.url, &conn.auth()?, &sql).await?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{}", pretty_format_batches(&batches)?);
            println!("({rows} row{})", if rows == 1 { "" } else { "s" });
            Ok(())
        }
    }
}
