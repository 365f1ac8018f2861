//! Side-by-side benchmarks. Each runs BareCount and its named baseline in one process, on the
//! same data, and prints both timings and their ratio. Results go into bench/README.md.
//!
//! `read`: fetch every row of one published dataset
//!   - baseline: tokio-postgres, `SELECT * FROM published.<dataset>` over the text protocol
//!     (what psql and most drivers do by default), every value materialized
//!   - BareCount: Flight SQL `SELECT * FROM <dataset>` (GetFlightInfo + DoGet) into Arrow
//!     batches, first call (loads the version from Postgres) and warm calls (served from the
//!     server's cache of immutable versions)
//!
//! `ingest`: load N order rows in batches
//!   - baseline: the same rows, batch by batch, `INSERT ... SELECT FROM jsonb_array_elements`
//!     into a plain table: no validation, no receipt
//!   - BareCount: `barecount.ingest` (contract validation, quarantine, batch row, ledger receipt)
//!
//! `validate`: check 1M realistic order rows (about 1 % invalid) in one SQL statement
//!   - baseline: the same checks hand-written as SQL predicates over jsonb (jsonb_typeof, key
//!     presence, ranges, IN lists, regex, no extra keys), the way a Postgres user checks rows
//!   - BareCount: `barecount.validate('orders', row)`
//!   - both with parallel workers off and on
//!
//! `rls`: a tenant role's full scan of a raw store (row-level security) vs the superuser's
//!
//! `ingest-invalid`: one batch of invalid rows vs one of valid rows, at two sizes (linearity)
//!
//! Every benchmark ends with machine-readable lines:
//! `bench=<name> ours=<value> baseline=<value> ratio=<value> unit=<unit>`.
//!
//! `web`: the web app's catalog search over 10,000 datasets and a 5-year daily KPI chart
//!   (see web.rs)
//!
//! `ledger`: evidence ledger throughput
//!   - appends per second with 1, 4 and 16 concurrent writers (one-row ingests, one receipt each)
//!   - `ledger_verify()` MB/s of canonical encoding hashed, beside this machine's raw SHA-256
//!     throughput measured in the same run

mod actions;
mod pipelines;
mod web;

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
    /// Webhook deliveries per second through the delivery worker vs plain POSTs.
    Deliver {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 20_000)]
        deliveries: i64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Time from a committed KPI threshold breach to the signed webhook received (p50, p99).
    BreachLatency {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 300)]
        breaches: usize,
    },
    /// The web app: catalog search over 10,000 datasets and a 5-year daily KPI chart.
    Web {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 10_000)]
        datasets: usize,
        #[arg(long, default_value_t = 300)]
        runs: usize,
    },
    /// Auto ETS over 10,000 series vs statsforecast's AutoETS; accuracy on held-out data.
    Forecast {
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// The seed of the 300 retail-like accuracy series (7 is the set the tests hold; 99 and
        /// 123 are the other draws bench/README.md reports).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// A Python with statsforecast 2.1.1 (scripts/bench.sh makes one).
        #[arg(long, env = "BARECOUNT_STATS_PYTHON")]
        python: String,
    },
    /// Ingest with validation and receipts vs a plain INSERT of the same rows.
    Ingest {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// validate() over 1M rows vs hand-written SQL predicates, parallel off and on.
    Validate {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
    },
    /// Ledger appends with concurrent writers, and ledger_verify vs raw SHA-256.
    Ledger {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        /// Seconds each writer count runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// A tenant role's full scan of a raw store under row-level security vs the superuser's.
    Rls {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 3_000_000)]
        rows: i64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Ingest of invalid rows vs valid rows, one batch each, at two batch sizes (linearity).
    IngestInvalid {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_values_t = vec![40_000, 100_000])]
        rows: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A daily KPI: one-day kpi_refresh vs REFRESH MATERIALIZED VIEW, full kpi_materialize vs
    /// INSERT ... SELECT ... GROUP BY.
    Kpi {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 5_000_000)]
        rows: i64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// fiscal_period(d, 'nrf') over 10M dates vs date_trunc('month', d).
    Fiscal {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 10_000_000)]
        rows: i64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A 20-step pipeline run vs its 20 KPI materializations called directly.
    Pipeline {
        #[arg(long, env = "BARECOUNT_BENCH_PG_URL")]
        pg_url: String,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
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

async fn flight_read(url: &str, auth: &client::Auth, dataset: &str) -> anyhow::Result<usize> {
    let (_, batches): (_, Vec<RecordBatch>) =
        client::query(url, auth, &format!("SELECT * FROM {dataset}")).await?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

/// An API token of the default tenant with the read scope, valid for a day.
async fn read_token(pg: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(pg
        .query_one(
            "SELECT token FROM barecount.token_create('default', ARRAY['read'], now() + interval '1 day')",
            &[],
        )
        .await?
        .get(0))
}

async fn read(pg_url: String, rows: i64, iterations: usize) -> anyhow::Result<()> {
    let (pg, conn) = tokio_postgres::connect(&pg_url, NoTls).await?;
    tokio::spawn(conn);
    let dataset = publish_dataset(&pg, rows).await?;

    let app = Application::build(Config::local(pg_url.clone())).await?;
    let url = format!("http://{}", app.addr());
    let server = tokio::spawn(app.run_until_stopped());
    let auth = client::Auth::Token(read_token(&pg).await?);

    let t = Instant::now();
    let first = flight_read(&url, &auth, &dataset).await?;
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
        let n = flight_read(&url, &auth, &dataset).await?;
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

const ORDERS_CONTRACT: &str = include_str!("../../contracts/orders.yaml");

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

fn orders(from: usize, n: usize) -> serde_json::Value {
    let regions = ["east", "west", "north", "south"];
    serde_json::Value::Array(
        (from..from + n)
            .map(|i| {
                serde_json::json!({
                    "order_id": format!("A{i}"),
                    "order_date": format!("2024-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
                    "store_id": format!("S{}", i % 25),
                    "region": regions[i % 4],
                    "amount": (i % 10_000) as f64 / 100.0,
                    "quantity": 1 + i % 5,
                })
            })
            .collect(),
    )
}

async fn ingest(pg_url: String, rows: usize, batch: usize) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await?;
    pg.batch_execute(
        "DROP TABLE IF EXISTS bench_plain;
         CREATE TABLE bench_plain (tenant_id text NOT NULL, batch_id bigint NOT NULL, row_no integer NOT NULL,
                                   payload jsonb NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now(),
                                   PRIMARY KEY (batch_id, row_no));",
    )
    .await?;
    let batches: Vec<serde_json::Value> = (0..rows)
        .step_by(batch)
        .map(|i| orders(i, batch.min(rows - i)))
        .collect();
    // alternate the two sides batch by batch so both see the same machine state
    let (mut plain, mut governed) = (Duration::ZERO, Duration::ZERO);
    for (b, rows_json) in batches.iter().enumerate() {
        let t = Instant::now();
        pg.execute(
            "INSERT INTO bench_plain (tenant_id, batch_id, row_no, payload)
             SELECT 'default', $2, e.n, e.p FROM jsonb_array_elements($1) WITH ORDINALITY AS e(p, n)",
            &[rows_json, &(b as i64)],
        )
        .await?;
        plain += t.elapsed();
        let t = Instant::now();
        pg.query("SELECT * FROM barecount.ingest('orders', $1)", &[rows_json])
            .await?;
        governed += t.elapsed();
    }
    let n_plain: i64 = pg
        .query_one("SELECT count(*) FROM bench_plain", &[])
        .await?
        .get(0);
    let n_raw: i64 = pg
        .query_one("SELECT count(*) FROM raw.orders", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        n_plain as usize == rows && n_raw as usize == rows,
        "row counts differ: {n_plain} plain, {n_raw} raw"
    );
    println!(
        "ingest {rows} rows in batches of {batch} ({} batches)",
        batches.len()
    );
    println!(
        "  baseline  INSERT from jsonb, no validation, no receipt  {:>8.3} s  {:>10.0} rows/s",
        secs(plain),
        rows as f64 / secs(plain)
    );
    println!(
        "  barecount ingest (validate, receipt, batch catalog)    {:>8.3} s  {:>10.0} rows/s",
        secs(governed),
        rows as f64 / secs(governed)
    );
    println!(
        "  ratio barecount/baseline: {:.2}x",
        secs(governed) / secs(plain)
    );
    report(
        "ingest",
        secs(governed),
        secs(plain),
        secs(governed) / secs(plain),
        "s",
    );
    Ok(())
}

async fn ledger(pg_url: String, seconds: u64) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await?;
    println!("ledger appends: one-row ingests, one receipt each, {seconds} s per writer count");
    let mut next_id = 10_000_000usize;
    for writers in [1usize, 4, 16] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let url = pg_url.clone();
            let base = next_id + w * 1_000_000;
            tasks.push(tokio::spawn(async move {
                let c = connect(&url).await?;
                let mut n = 0usize;
                while Instant::now() < deadline {
                    c.query(
                        "SELECT * FROM barecount.ingest('orders', $1)",
                        &[&orders(base + n, 1)],
                    )
                    .await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        next_id += writers * 1_000_000;
        println!(
            "  {writers:>2} writer(s): {:>8.0} appends/s",
            total as f64 / seconds as f64
        );
    }
    let (ok, broken): (bool, Option<i64>) = {
        let r = pg
            .query_one(
                "SELECT ok, first_broken_seq FROM barecount.ledger_verify()",
                &[],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    anyhow::ensure!(ok, "ledger broken at {broken:?} after concurrent appends");

    let mut times = Vec::new();
    let mut bytes = 0i64;
    let mut entries = 0i64;
    for _ in 0..5 {
        let t = Instant::now();
        let r = pg
            .query_one(
                "SELECT checked, bytes_hashed FROM barecount.ledger_verify()",
                &[],
            )
            .await?;
        times.push(t.elapsed());
        entries = r.get(0);
        bytes = r.get(1);
    }
    let verify = median(times);
    let mb = bytes as f64 / 1e6;
    // raw SHA-256 on this machine: the same number of bytes, contiguous and in entry-sized pieces
    let avg = (bytes / entries.max(1)).max(1) as usize;
    let buf = vec![0x5au8; 64 << 20];
    let t = Instant::now();
    let _ = std::hint::black_box(sha256(&buf));
    let contiguous = 64.0 * 1.048_576 / secs(t.elapsed());
    let t = Instant::now();
    for chunk in buf.chunks(avg) {
        std::hint::black_box(sha256(chunk));
    }
    let pieces = 64.0 * 1.048_576 / secs(t.elapsed());
    println!("ledger_verify over {entries} entries ({mb:.1} MB canonical encoding, {avg} B/entry), median of 5");
    println!(
        "  barecount ledger_verify         {:>8.3} s  {:>8.1} MB/s",
        secs(verify),
        mb / secs(verify)
    );
    println!(
        "  raw SHA-256, contiguous         {:>8} {:>10.1} MB/s",
        "", contiguous
    );
    println!(
        "  raw SHA-256, {avg:>4} B pieces      {:>8} {:>10.1} MB/s",
        "", pieces
    );
    println!(
        "  ratio verify/raw: {:.2} (contiguous), {:.2} (entry-sized pieces)",
        mb / secs(verify) / contiguous,
        mb / secs(verify) / pieces
    );
    report(
        "ledger_verify",
        mb / secs(verify),
        pieces,
        mb / secs(verify) / pieces,
        "MB/s",
    );
    Ok(())
}

/// The orders contract's checks written by hand over jsonb.
const HAND_WRITTEN: &str = "jsonb_typeof(row) = 'object'
  AND row ?& ARRAY['order_id', 'order_date', 'store_id', 'region', 'amount', 'quantity']
  AND jsonb_typeof(row->'order_id') = 'string' AND (row->>'order_id') ~ '^[A-Z][0-9]+$'
  AND jsonb_typeof(row->'order_date') = 'string' AND (row->>'order_date') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
  AND jsonb_typeof(row->'store_id') = 'string'
  AND jsonb_typeof(row->'region') = 'string' AND (row->>'region') IN ('east', 'west', 'north', 'south')
  AND jsonb_typeof(row->'amount') = 'number' AND (row->>'amount')::numeric >= 0
  AND jsonb_typeof(row->'quantity') = 'number' AND (row->>'quantity')::numeric >= 1
  AND (row->>'quantity')::numeric % 1 = 0
  AND (NOT row ? 'customer_id' OR jsonb_typeof(row->'customer_id') IN ('string', 'null'))
  AND NOT EXISTS (SELECT 1 FROM jsonb_object_keys(row) AS k
                   WHERE k NOT IN ('order_id', 'order_date', 'store_id', 'region', 'amount', 'quantity', 'customer_id'))";

async fn validate(pg_url: String, rows: i64) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await?;
    pg.batch_execute(&format!(
        "DROP TABLE IF EXISTS bench_rows;
         CREATE TABLE bench_rows AS
         SELECT CASE g % 500
                  WHEN 0 THEN jsonb_build_object('order_id', 'A' || g, 'order_date', '05/01/2024', 'store_id', 'S1',
                                                 'region', 'east', 'amount', 10, 'quantity', 1)
                  WHEN 100 THEN jsonb_build_object('order_id', 'A' || g, 'order_date', '2024-05-01', 'store_id', 'S1',
                                                   'region', 'central', 'amount', 10, 'quantity', 1)
                  WHEN 200 THEN jsonb_build_object('order_id', 'A' || g, 'order_date', '2024-05-01',
                                                   'region', 'east', 'amount', 10, 'quantity', 1)
                  WHEN 300 THEN jsonb_build_object('order_id', 'A' || g, 'order_date', '2024-05-01', 'store_id', 'S1',
                                                   'region', 'east', 'amount', -3, 'quantity', 1, 'coupon', 'X')
                  WHEN 400 THEN jsonb_build_object('order_id', 'a-' || g, 'order_date', '2024-05-01', 'store_id', 'S1',
                                                   'region', 'east', 'amount', 10, 'quantity', 1.5)
                  ELSE jsonb_build_object('order_id', 'A' || g,
                                          'order_date', to_char(DATE '2023-01-01' + (g % 730), 'YYYY-MM-DD'),
                                          'store_id', 'S' || (g % 25), 'region', (ARRAY['east','west','north','south'])[1 + g % 4],
                                          'amount', round(((g * 37) % 100000) / 100.0, 2), 'quantity', 1 + g % 5,
                                          'customer_id', CASE WHEN g % 3 = 0 THEN 'C' || (g % 500) END)
                END AS row
           FROM generate_series(1, {rows}) g;
         ANALYZE bench_rows;"
    ))
    .await?;
    println!("validate {rows} order rows (1 % invalid) in one statement, median of 5");
    for (label, setup) in [
        ("parallel off", "SET max_parallel_workers_per_gather = 0"),
        (
            "parallel on (2 workers)",
            "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
             SET min_parallel_table_scan_size = 0",
        ),
    ] {
        pg.batch_execute(setup).await?;
        let (mut hand, mut ours) = (Vec::new(), Vec::new());
        let mut counts = (0i64, 0i64);
        for _ in 0..5 {
            let t = Instant::now();
            counts.0 = pg.query_one(&format!("SELECT count(*) FILTER (WHERE {HAND_WRITTEN}) FROM bench_rows"), &[]).await?.get(0);
            hand.push(t.elapsed());
            let t = Instant::now();
            counts.1 = pg
                .query_one("SELECT count(*) FILTER (WHERE barecount.validate('orders', row)) FROM bench_rows", &[])
                .await?
                .get(0);
            ours.push(t.elapsed());
        }
        let spread = |xs: &[Duration]| {
            let lo = xs.iter().min().copied().unwrap_or_default();
            let hi = xs.iter().max().copied().unwrap_or_default();
            format!("{:.0}–{:.0} rows/s", rows as f64 / secs(hi), rows as f64 / secs(lo))
        };
        println!("    spread: baseline {}, barecount {}", spread(&hand), spread(&ours));
        let best = (median(hand), median(ours));
        anyhow::ensure!(counts.0 == counts.1, "the two sides disagree: {} vs {} valid rows", counts.0, counts.1);
        println!("  {label}: {} valid", counts.1);
        println!("    baseline  hand-written SQL predicates  {:>8.3} s  {:>10.0} rows/s", secs(best.0), rows as f64 / secs(best.0));
        println!("    barecount validate()                   {:>8.3} s  {:>10.0} rows/s", secs(best.1), rows as f64 / secs(best.1));
        println!("    ratio barecount/baseline rows/s: {:.2}x", secs(best.0) / secs(best.1));
        let name = if label.starts_with("parallel off") { "validate" } else { "validate_parallel" };
        let (ours, base) = (rows as f64 / secs(best.1), rows as f64 / secs(best.0));
        report(name, ours, base, ours / base, "rows/s");
    }
    Ok(())
}

/// The machine-readable line of a benchmark: `ratio` is ours/baseline for throughputs and
/// our time/baseline time for timings.
fn report(name: &str, ours: f64, baseline: f64, ratio: f64, unit: &str) {
    println!("bench={name} ours={ours:.3} baseline={baseline:.3} ratio={ratio:.3} unit={unit}");
}

/// Runs `sql` `runs` times on `c` and returns the median time and the first column of the
/// last run's single row.
async fn timed_count(
    c: &tokio_postgres::Client,
    sql: &str,
    runs: usize,
) -> anyhow::Result<(Duration, i64)> {
    let mut times = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = c.query_one(sql, &[]).await?.get(0);
        times.push(t.elapsed());
    }
    Ok((median(times), n))
}

async fn rls(pg_url: String, rows: i64, runs: usize) -> anyhow::Result<()> {
    let su = connect(&pg_url).await?;
    su.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await?;
    su.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM barecount.tenants WHERE tenant_id = 'acme') THEN
             PERFORM barecount.tenant_create('acme', 'Acme');
           END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_tenant') THEN
             CREATE ROLE bench_tenant LOGIN;
             GRANT barecount_engineer TO bench_tenant;
           END IF;
           IF NOT EXISTS (SELECT 1 FROM barecount.tenant_members WHERE role_name = 'bench_tenant') THEN
             PERFORM barecount.tenant_add_member('acme', 'bench_tenant');
           END IF;
         END $$;",
    )
    .await?;
    let mut cfg: tokio_postgres::Config = pg_url.parse()?;
    cfg.user("bench_tenant");
    let (tenant, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    tenant
        .query(
            "SELECT barecount.contract_register($1)",
            &[&ORDERS_CONTRACT],
        )
        .await?;
    // one real batch as the tenant, then its rows multiplied straight into the raw store (as
    // the superuser, which row-level security does not filter), plus as many of another tenant
    let batch: i64 = tenant
        .query_one(
            "SELECT batch_id FROM barecount.ingest('orders', $1)",
            &[&orders(0, 1)],
        )
        .await?
        .get(0);
    let other: i64 = su
        .query_one(
            "SELECT batch_id FROM barecount.ingest('orders', $1)",
            &[&orders(1, 1)],
        )
        .await?
        .get(0);
    su.batch_execute(&format!(
        "INSERT INTO raw.orders (tenant_id, batch_id, row_no, payload, contract, contract_version, valid)
         SELECT t, CASE t WHEN 'acme' THEN {batch} ELSE {other} END, g * 2 + (t = 'acme')::int + 10,
                r.payload, r.contract, r.contract_version, true
           FROM raw.orders r, generate_series(1, {rows} / 2) g, unnest(ARRAY['acme', 'default']) t
          WHERE r.batch_id = {batch} AND r.row_no = 1"
    ))
    .await?;
    su.batch_execute("VACUUM ANALYZE raw.orders").await?;
    // count(*) (the measure), and a scan that must read every row's payload
    // the same rows both ways: the superuser names the tenant, the tenant's role gets it from
    // the policy
    for (name, sql) in [
        ("rls_scan", "SELECT count(*) FROM raw.orders"),
        (
            "rls_scan_payload",
            "SELECT count(*) FILTER (WHERE payload->>'region' = 'east') FROM raw.orders",
        ),
    ] {
        let su_sql = format!("{sql} WHERE tenant_id = 'acme'");
        // warm both once, then the median of `runs`
        timed_count(&su, &su_sql, 1).await?;
        timed_count(&tenant, sql, 1).await?;
        let (t_su, n_su) = timed_count(&su, &su_sql, runs).await?;
        let (t_tenant, n_tenant) = timed_count(&tenant, sql, runs).await?;
        anyhow::ensure!(
            n_tenant == n_su,
            "the tenant sees {n_tenant} rows, the superuser {n_su}"
        );
        println!("{sql} over {rows} raw rows, half the tenant's ({n_tenant}), median of {runs}");
        println!(
            "  baseline  superuser, WHERE tenant_id = 'acme'  {:>8.3} s",
            secs(t_su)
        );
        println!(
            "  barecount tenant role under the policy          {:>8.3} s",
            secs(t_tenant)
        );
        report(
            name,
            secs(t_tenant),
            secs(t_su),
            secs(t_tenant) / secs(t_su),
            "s",
        );
    }
    Ok(())
}

/// `n` order rows that each fail the contract (a negative amount and an unknown region).
fn invalid_orders(from: usize, n: usize) -> serde_json::Value {
    let mut rows = orders(from, n);
    if let Some(items) = rows.as_array_mut() {
        for r in items {
            r["amount"] = serde_json::json!(-1);
            r["region"] = serde_json::json!("mars");
        }
    }
    rows
}

async fn ingest_invalid(pg_url: String, sizes: Vec<usize>, runs: usize) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.query(
        "SELECT barecount.contract_register($1)",
        &[&ORDERS_CONTRACT],
    )
    .await?;
    println!("one batch of valid vs invalid rows, median of {runs}");
    let mut from = 0;
    for n in sizes {
        let (mut valid, mut invalid) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let rows = orders(from, n);
            let t = Instant::now();
            pg.query("SELECT * FROM barecount.ingest('orders', $1)", &[&rows])
                .await?;
            valid.push(t.elapsed());
            let rows = invalid_orders(from + n, n);
            let t = Instant::now();
            let r = pg
                .query_one(
                    "SELECT quarantined FROM barecount.ingest('orders', $1)",
                    &[&rows],
                )
                .await?;
            invalid.push(t.elapsed());
            anyhow::ensure!(
                r.get::<_, i64>(0) as usize == n,
                "not every invalid row was quarantined"
            );
            from += 2 * n;
        }
        let (v, i) = (median(valid), median(invalid));
        println!(
            "  {n:>7} rows  valid {:>7.3} s ({:>8.0} rows/s)  invalid {:>7.3} s ({:>8.0} rows/s)  invalid/valid {:.2}x",
            secs(v),
            n as f64 / secs(v),
            secs(i),
            n as f64 / secs(i),
            secs(i) / secs(v)
        );
        report(
            &format!("ingest_invalid_{n}"),
            secs(i),
            secs(v),
            secs(i) / secs(v),
            "s",
        );
    }
    Ok(())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Read {
            pg_url,
            rows,
            iterations,
        } => read(pg_url, rows, iterations.max(1)).await,
        Bench::Ingest {
            pg_url,
            rows,
            batch,
        } => ingest(pg_url, rows, batch.max(1)).await,
        Bench::Deliver {
            pg_url,
            deliveries,
            concurrency,
        } => actions::deliver(pg_url, deliveries.max(1), concurrency.max(1)).await,
        Bench::BreachLatency { pg_url, breaches } => {
            actions::breach_latency(pg_url, breaches.max(1)).await
        }
        Bench::Web {
            pg_url,
            datasets,
            runs,
        } => web::web(pg_url, datasets.max(1), runs.max(1)).await,
        Bench::Forecast {
            series,
            seed,
            python,
        } => actions::forecast_bench(series.max(1), seed, python).await,
        Bench::Ledger { pg_url, seconds } => ledger(pg_url, seconds.max(1)).await,
        Bench::Validate { pg_url, rows } => validate(pg_url, rows.max(1)).await,
        Bench::Rls { pg_url, rows, runs } => rls(pg_url, rows.max(1), runs.max(1)).await,
        Bench::Kpi { pg_url, rows, runs } => pipelines::kpi(pg_url, rows.max(1), runs.max(1)).await,
        Bench::Fiscal { pg_url, rows, runs } => {
            pipelines::fiscal(pg_url, rows.max(1), runs.max(1)).await
        }
        Bench::Pipeline {
            pg_url,
            steps,
            runs,
        } => pipelines::pipeline(pg_url, steps.max(1), runs.max(1)).await,
        Bench::IngestInvalid { pg_url, rows, runs } => {
            ingest_invalid(pg_url, rows, runs.max(1)).await
        }
    }
}
