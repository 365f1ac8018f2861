//! `barecount-flight serve | list | query`: a thin shell over the library.

use arrow::util::pretty::pretty_format_batches;
use barecount_flight::{client, Application, Config};
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
    Serve(Config),
    /// List published datasets with their versions and ledger receipts.
    List {
        #[arg(
            long,
            env = "BARECOUNT_FLIGHT_URL",
            default_value = "http://127.0.0.1:50051"
        )]
        url: String,
    },
    /// Run a SQL query over Flight SQL and print the result as a table.
    Query {
        #[arg(
            long,
            env = "BARECOUNT_FLIGHT_URL",
            default_value = "http://127.0.0.1:50051"
        )]
        url: String,
        sql: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(config) => {
            let app = Application::build(config).await?;
            tracing::info!("barecount-flight listening on {}", app.addr());
            app.run_until_stopped().await
        }
        Command::List { url } => {
            let listings = client::list(&url).await?;
            println!("{} published dataset(s) at {url}", listings.len());
            for l in listings {
                println!(
                    "  {} v{}: {} rows, content hash {}, ledger receipt #{} {}",
                    l.dataset, l.version, l.row_count, l.content_hash, l.ledger_seq, l.ledger_hash
                );
            }
            Ok(())
        }
        Command::Query { url, sql } => {
            let (_schema, batches) = client::query(&url, &sql).await?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{}", pretty_format_batches(&batches)?);
            println!("({rows} row{})", if rows == 1 { "" } else { "s" });
            Ok(())
        }
    }
}
