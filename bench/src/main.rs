//! Side-by-side benchmarks. Each runs BareCount and its named baseline in one process, on the
//! same data, and prints both timings and their ratio. Results go into bench/README.md.
//!
//! `read`: fetch every row of one published dataset
//!   - baseline: tokio-postgres, `SELECT * FROM published.<dataset>` over the text protocol
//!     (what psql and most drivers do by default), every value materialized
//!   - BareCount: Flight SQL `SELECT * FROM <dataset>` (GetFlightInfo + DoGet) into Arrow
//!     batches, first call (loads the version from Postgres) and warm calls (served from the
//!     server's cache of immutable versions)

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use barecount_flight::{client, Application, Config};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};
use tokio_postgres::{NoTls, SimpleQueryMessage};

#[derive(Parser)]
#[command(name = "barecount-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Read a whole published dataset: Postgres driver vs barecount-flight.
    Read {
        /// Database with the barecount extension installed.
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        /// Rows in the benchmark dataset.
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
        /// Timed repetitions of each side (the median is reported).
        #[arg(long, default_value_t = 5)]
        iterations: usize,
    },
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn publish_dataset(pg: &tokio_postgres::Client, rows: i64) -> anyhow::Result<String> {
    let name = format!("bench_orders_{rows}");
    let exists: i64 = pg
        .query_one(
            "SELECT count(*) FROM barecount.datasets WHERE dataset = $1",
            &[&name],
        )
        .await?
        .get(0);
    if exists == 0 {
        pg.query(
            "SELECT * FROM barecount.publish($1, format(
               'SELECT g::bigint AS order_id, DATE ''2023-01-01'' + (g %% 730) AS order_date,
                       (ARRAY[''east'',''west'',''north'',''south''])[1 + g %% 4] AS region,
                       ((g * 37) %% 100000 / 100.0)::numeric(12,2) AS amount,
                       (1 + g %% 6)::int AS quantity
                  FROM generate_series(1, %s) g', $2::bigint))",
            &[&name, &rows],
        )
        .await
        .context("publishing the benchmark dataset")?;
    }
    Ok(name)
}

async fn pg_read(pg: &tokio_postgres::Client, dataset: &str) -> anyhow::Result<(usize, usize)> {
    let mut rows = 0;
    let mut bytes = 0;
    for m in pg
        .simple_query(&format!("SELECT * FROM published.{dataset}"))
        .await?
    {
        if let SimpleQueryMessage::Row(r) = m {
            rows += 1;
            for i in 0..r.len() {
                bytes += r.get(i).map_or(0, str::len);
            }
        }
    }
    Ok((rows, bytes))
}

async fn flight_read(url: &str, dataset: &str) -> anyhow::Result<usize> {
    let (_, batches): (_, Vec<RecordBatch>) =
        client::query(url, &format!("SELECT * FROM {dataset}")).await?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

async fn read(pg_url: String, rows: i64, iterations: usize) -> anyhow::Result<()> {
    let (pg, conn) = tokio_postgres::connect(&pg_url, NoTls).await?;
    tokio::spawn(conn);
    let dataset = publish_dataset(&pg, rows).await?;

    let app = Application::build(Config::local(pg_url.clone())).await?;
    let url = format!("http://{}", app.addr());
    let server = tokio::spawn(app.run_until_stopped());

    let t = Instant::now();
    let first = flight_read(&url, &dataset).await?;
    let flight_first = t.elapsed();
    anyhow::ensure!(
        first as i64 == rows,
        "flight returned {first} rows, expected {rows}"
    );

    let mut pg_times = Vec::new();
    let mut flight_times = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        let (n, _) = pg_read(&pg, &dataset).await?;
        pg_times.push(t.elapsed());
        anyhow::ensure!(
            n as i64 == rows,
            "postgres returned {n} rows, expected {rows}"
        );
        let t = Instant::now();
        let n = flight_read(&url, &dataset).await?;
        flight_times.push(t.elapsed());
        anyhow::ensure!(
            n as i64 == rows,
            "flight returned {n} rows, expected {rows}"
        );
    }
    let (pg_med, fl_med) = (median(pg_times), median(flight_times));
    println!("read {rows} rows x 5 columns of published.{dataset}, median of {iterations}");
    println!(
        "  baseline  tokio-postgres simple_query      {:>8.3} s  {:>12.0} rows/s",
        secs(pg_med),
        rows as f64 / secs(pg_med)
    );
    println!(
        "  barecount Flight SQL DoGet (first call)    {:>8.3} s  {:>12.0} rows/s",
        secs(flight_first),
        rows as f64 / secs(flight_first)
    );
    println!(
        "  barecount Flight SQL DoGet (warm)          {:>8.3} s  {:>12.0} rows/s",
        secs(fl_med),
        rows as f64 / secs(fl_med)
    );
    println!(
        "  ratio postgres/flight (warm): {:.2}x   (first call: {:.2}x)",
        secs(pg_med) / secs(fl_med),
        secs(pg_med) / secs(flight_first)
    );
    server.abort();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Read {
            pg_url,
            rows,
            iterations,
        } => read(pg_url, rows, iterations.max(1)).await,
    }
}
