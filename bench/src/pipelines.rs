//! Benchmarks of issue 15 (pipelines and KPIs), each beside its plain-Postgres baseline:
//!
//! `kpi`: a daily KPI over an N-row source table
//!   - a one-day change (late rows on one old day), then `kpi_refresh` vs `REFRESH MATERIALIZED
//!     VIEW` of the same GROUP BY (aim: ≥ 100× faster); the source has an index on its date
//!   - a full materialization (`kpi_materialize` over every day) vs `INSERT … SELECT … GROUP BY`
//!     into a plain table (aim: ≤ 1.2× its time)
//!
//! `fiscal`: `barecount.fiscal_period(d, 'nrf')` over 10M dates vs `date_trunc('month', d)`,
//!   both grouped, parallel workers off (aim: ≤ 1.5× its time)
//!
//! `pipeline`: a 20-step pipeline run vs the same 20 KPI materializations called directly in one
//!   transaction; the difference divided by 20 is the orchestrator's cost per step (aim: ≤ 10 ms);
//!   and a pipeline of 20 hook steps (no work of their own), whose time per step is all overhead

use std::time::{Duration, Instant};

use crate::{connect, median, secs};

async fn one_number(pg: &tokio_postgres::Client, sql: &str) -> anyhow::Result<i64> {
    Ok(pg.query_one(sql, &[]).await?.get(0))
}

async fn timed(pg: &tokio_postgres::Client, sql: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    pg.batch_execute(sql).await?;
    Ok(t.elapsed())
}

const KPI_DIFF: &str = "SELECT (SELECT count(*) FROM (SELECT period_start, region, s, n FROM kpi.bench_daily
                                      EXCEPT ALL SELECT d, region, s, n FROM bench_mv) a)
                             + (SELECT count(*) FROM (SELECT d, region, s, n FROM bench_mv
                                      EXCEPT ALL SELECT period_start, region, s, n FROM kpi.bench_daily) b)";

pub async fn kpi(pg_url: String, rows: i64, runs: usize) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.batch_execute(&format!(
        "DROP MATERIALIZED VIEW IF EXISTS bench_mv; DROP TABLE IF EXISTS gdp.bench_sales, bench_plain_kpi, bench_plain_src;
         CREATE TABLE gdp.bench_sales (tenant_id text NOT NULL DEFAULT 'default', id bigint, d date, region text, amount numeric(12,2));
         -- stored in date order, as a fact table loaded day by day is
         INSERT INTO gdp.bench_sales (id, d, region, amount)
           SELECT * FROM (
             SELECT g, DATE '2021-01-01' + ((g * 7919) % 1095)::int AS d, (ARRAY['east','west','north','south','emea','apac','latam','anz'])[1 + g % 8],
                    ((g * 37) % 100000 / 100.0)::numeric(12,2)
               FROM generate_series(1, {rows}::bigint) g) x ORDER BY d;
         CREATE TABLE bench_plain_src (LIKE gdp.bench_sales INCLUDING DEFAULTS);
         INSERT INTO bench_plain_src SELECT * FROM gdp.bench_sales;
         CREATE TABLE bench_plain_kpi (d date, region text, s numeric, n bigint);
         SELECT barecount.kpi_define('bench_daily', '{{\"source\": \"gdp.bench_sales\", \"time\": \"d\", \"grain\": \"day\",
             \"dimensions\": [\"region\"], \"measures\": {{\"s\": \"sum(amount)\", \"n\": \"count(*)\"}}}}');"
    ))
    .await?;
    // a fact table of this size has an index on its date (REFRESH MATERIALIZED VIEW cannot
    // use it; a one-period refresh can)
    pg.batch_execute("CREATE INDEX ON gdp.bench_sales (d); CREATE INDEX ON bench_plain_src (d)")
        .await?;
    pg.batch_execute("VACUUM ANALYZE gdp.bench_sales").await?;
    pg.batch_execute("VACUUM ANALYZE bench_plain_src").await?;

    // full materialization vs INSERT ... SELECT ... GROUP BY, alternating; Postgres 15 runs
    // INSERT ... SELECT without parallel workers while kpi_materialize stages with CREATE
    // TABLE AS, which may use them: so once as configured and once with parallelism off
    for serial in [false, true] {
        if serial {
            pg.batch_execute("SET max_parallel_workers_per_gather = 0")
                .await?;
        }
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            base.push(
                timed(
                    &pg,
                    "TRUNCATE bench_plain_kpi; INSERT INTO bench_plain_kpi
                   SELECT d, region, sum(amount), count(*) FROM gdp.bench_sales GROUP BY 1, 2",
                )
                .await?,
            );
            ours.push(
            timed(
                &pg,
                "SELECT * FROM barecount.kpi_materialize('bench_daily', '2021-01-01', '2023-12-31')",
            )
            .await?,
        );
        }
        let periods = one_number(
            &pg,
            "SELECT count(DISTINCT period_start) FROM kpi.bench_daily",
        )
        .await?;
        anyhow::ensure!(periods == 1095, "the KPI has {periods} days, expected 1095");
        let (o, b) = (median(ours.clone()), median(base.clone()));
        let how = if serial { "_serial" } else { "" };
        if !serial {
            println!("kpi: {rows} source rows (in date order, index on the date), 1095 days x 8 regions, median of {runs}");
        }
        println!(
            "  full materialization{}",
            if serial { ", parallel workers off" } else { "" }
        );
        println!(
            "    baseline  TRUNCATE + INSERT ... SELECT ... GROUP BY   {:>8.3} s  (runs {})",
            secs(b),
            spread(&base)
        );
        println!(
            "    barecount kpi_materialize (all 1095 days)            {:>8.3} s  (runs {})",
            secs(o),
            spread(&ours)
        );
        println!(
            "bench=kpi_full_materialize{how}_{rows} ours={:.3} baseline={:.3} ratio={:.3} unit=s",
            secs(o),
            secs(b),
            secs(o) / secs(b)
        );
    }
    pg.batch_execute("RESET max_parallel_workers_per_gather")
        .await?;

    // one day changes: late rows on one old day, then refresh vs REFRESH MATERIALIZED VIEW
    pg.batch_execute(
        "CREATE MATERIALIZED VIEW bench_mv AS
           SELECT d, region, sum(amount) AS s, count(*) AS n FROM gdp.bench_sales GROUP BY 1, 2;
         SELECT * FROM barecount.kpi_refresh('bench_daily');",
    )
    .await?;
    let (mut ours, mut base, mut ins_trig, mut ins_plain) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs as i64 {
        let late = format!(
            "INSERT INTO {{t}} (id, d, region, amount)
               SELECT 100000000 + {run} * 100 + g, DATE '2021-03-01' + {run} * 41, 'east', 10.00 FROM generate_series(1, 10) g"
        );
        ins_plain.push(timed(&pg, &late.replace("{t}", "bench_plain_src")).await?);
        ins_trig.push(timed(&pg, &late.replace("{t}", "gdp.bench_sales")).await?);
        let t = Instant::now();
        let refreshed = one_number(
            &pg,
            "SELECT periods FROM barecount.kpi_refresh('bench_daily')",
        )
        .await?;
        ours.push(t.elapsed());
        anyhow::ensure!(
            refreshed == 1,
            "kpi_refresh recomputed {refreshed} periods, expected the one day"
        );
        base.push(timed(&pg, "REFRESH MATERIALIZED VIEW bench_mv").await?);
        let diff = one_number(&pg, KPI_DIFF).await?;
        anyhow::ensure!(
            diff == 0,
            "the KPI and the materialized view differ by {diff} rows"
        );
    }
    let (o, b) = (median(ours.clone()), median(base.clone()));
    println!("  one day changed (10 late rows), then refresh; both equal after every run");
    println!(
        "    baseline  REFRESH MATERIALIZED VIEW                  {:>8.4} s  (runs {})",
        secs(b),
        spread(&base)
    );
    println!(
        "    barecount kpi_refresh (the one day)                  {:>8.4} s  (runs {})",
        secs(o),
        spread(&ours)
    );
    println!(
        "    the 10-row insert itself: {:.2} ms into the KPI's source (change capture) vs {:.2} ms into a plain copy",
        secs(median(ins_trig)) * 1e3,
        secs(median(ins_plain)) * 1e3
    );
    println!(
        "bench=kpi_refresh_one_day_{rows} ours={:.4} baseline={:.4} ratio={:.5} unit=s  # {:.0}x faster",
        secs(o),
        secs(b),
        secs(o) / secs(b),
        secs(b) / secs(o)
    );
    Ok(())
}

fn spread(xs: &[Duration]) -> String {
    let lo = xs.iter().min().copied().unwrap_or_default();
    let hi = xs.iter().max().copied().unwrap_or_default();
    format!("{:.4}–{:.4}", secs(lo), secs(hi))
}

pub async fn fiscal(pg_url: String, rows: i64, runs: usize) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.batch_execute(&format!(
        "SELECT barecount.calendar_create('nrf', '{{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}}');
         DROP TABLE IF EXISTS bench_dates;
         CREATE TABLE bench_dates AS SELECT DATE '2000-01-01' + ((g * 7919) % 10958)::int AS d FROM generate_series(1, {rows}::bigint) g;
         SET max_parallel_workers_per_gather = 0;"
    ))
    .await?;
    pg.batch_execute("VACUUM ANALYZE bench_dates").await?;
    let ours_sql = "SELECT count(*), sum(n)::bigint FROM (SELECT barecount.fiscal_period(d, 'nrf') AS p, count(*) AS n FROM bench_dates GROUP BY 1) s";
    let base_sql = "SELECT count(*), sum(n)::bigint FROM (SELECT date_trunc('month', d) AS p, count(*) AS n FROM bench_dates GROUP BY 1) s";
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let r = pg.query_one(base_sql, &[]).await?;
        base.push(t.elapsed());
        let (groups_b, n_b): (i64, i64) = (r.get(0), r.get(1));
        let t = Instant::now();
        let r = pg.query_one(ours_sql, &[]).await?;
        ours.push(t.elapsed());
        let (groups_o, n_o): (i64, i64) = (r.get(0), r.get(1));
        anyhow::ensure!(
            n_o == rows && n_b == rows,
            "row counts differ: {n_o} vs {n_b}"
        );
        anyhow::ensure!(
            groups_o > 300 && groups_b > 300,
            "{groups_o} periods, {groups_b} months"
        );
    }
    let (o, b) = (median(ours.clone()), median(base.clone()));
    println!("fiscal: {rows} dates (2000-2029), grouped by period, parallel workers off, median of {runs}");
    println!(
        "  baseline  date_trunc('month', d)                {:>8.3} s  (runs {})",
        secs(b),
        spread(&base)
    );
    println!(
        "  barecount fiscal_period(d, 'nrf')               {:>8.3} s  (runs {})",
        secs(o),
        spread(&ours)
    );
    println!(
        "bench=fiscal_period_{rows} ours={:.3} baseline={:.3} ratio={:.3} unit=s",
        secs(o),
        secs(b),
        secs(o) / secs(b)
    );
    Ok(())
}

pub async fn pipeline(pg_url: String, steps: usize, runs: usize) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    pg.batch_execute(
        "DROP TABLE IF EXISTS gdp.bench_small;
         CREATE TABLE gdp.bench_small (tenant_id text NOT NULL DEFAULT 'default', id int, d date, region text, amount numeric);
         INSERT INTO gdp.bench_small (id, d, region, amount)
           SELECT g, DATE '2024-01-01' + g % 366, (ARRAY['east','west','north'])[1 + g % 3], g % 97 FROM generate_series(1, 2000) g;",
    )
    .await?;
    let mut kpi_steps = Vec::new();
    let mut hook_steps = Vec::new();
    let mut direct = String::from("BEGIN;");
    for i in 0..steps {
        let k = format!("bench_p{i:02}");
        pg.execute(
            &format!(
                "SELECT barecount.kpi_define('{k}', '{{\"source\": \"gdp.bench_small\", \"time\": \"d\", \"grain\": \"month\",
                   \"dimensions\": [\"region\"], \"measures\": {{\"s\": \"sum(amount)\", \"n\": \"count(*)\"}}}}')"
            ),
            &[],
        )
        .await?;
        let after = if i == 0 {
            serde_json::json!([])
        } else {
            serde_json::json!([format!("s{}", i - 1)])
        };
        kpi_steps.push(
            serde_json::json!({"name": format!("s{i}"), "kind": "kpi", "kpi": k, "after": after}),
        );
        hook_steps.push(serde_json::json!({"name": format!("s{i}"), "kind": "hook", "event": "bench", "after": after}));
        direct.push_str(&format!(
            "SELECT * FROM barecount.kpi_materialize('{k}', '2024-01-01', '2024-12-31');"
        ));
    }
    direct.push_str("COMMIT;");
    for (name, steps) in [("bench_kpis", kpi_steps), ("bench_hooks", hook_steps)] {
        let spec = serde_json::json!({"grain": "month", "steps": steps});
        pg.execute("SELECT barecount.pipeline_define($1, $2)", &[&name, &spec])
            .await?;
    }
    let run = |name: &str, key: String| {
        format!(
            "SELECT * FROM barecount.pipeline_run('{name}', '2024-01-01', '2024-12-31', '{key}')"
        )
    };
    // warm both paths once
    pg.batch_execute(&direct).await?;
    pg.batch_execute(&run("bench_kpis", "warm".into())).await?;
    pg.batch_execute(&run("bench_hooks", "warm".into())).await?;
    let (mut ours, mut base, mut hooks) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        base.push(timed(&pg, &direct).await?);
        let t = Instant::now();
        let status: String = pg
            .query_one(&run("bench_kpis", format!("run{r}")), &[])
            .await?
            .get("status");
        ours.push(t.elapsed());
        anyhow::ensure!(status == "succeeded", "pipeline run {r}: {status}");
        let t = Instant::now();
        let status: String = pg
            .query_one(&run("bench_hooks", format!("run{r}")), &[])
            .await?
            .get("status");
        hooks.push(t.elapsed());
        anyhow::ensure!(status == "succeeded", "hook pipeline run {r}: {status}");
    }
    let (o, b, h) = (
        median(ours.clone()),
        median(base.clone()),
        median(hooks.clone()),
    );
    let per_step_ms = (secs(o) - secs(b)) * 1e3 / steps as f64;
    println!("pipeline: {steps} KPI steps (each 12 months x 3 regions over 2,000 rows), median of {runs}");
    println!(
        "  baseline  the {steps} kpi_materialize calls in one transaction   {:>8.4} s  (runs {})",
        secs(b),
        spread(&base)
    );
    println!(
        "  barecount pipeline_run of the {steps} steps                    {:>8.4} s  (runs {})",
        secs(o),
        spread(&ours)
    );
    println!("  orchestration per step: {per_step_ms:.3} ms");
    println!(
        "  a pipeline of {steps} hook steps (no work of their own): {:.4} s, {:.3} ms per step  (runs {})",
        secs(h),
        secs(h) * 1e3 / steps as f64,
        spread(&hooks)
    );
    println!(
        "bench=pipeline_overhead_{steps}_steps ours={:.4} baseline={:.4} ratio={:.3} unit=s  # {per_step_ms:.3} ms per step",
        secs(o),
        secs(b),
        secs(o) / secs(b)
    );
    Ok(())
}
