//! `web`: the web app's two speed aims, over HTTP on loopback against a real barecount-flight.
//!   - catalog search over 10,000 datasets: p95 of `/api/v1/catalog?q=…` (aim < 100 ms),
//!     beside a plain `ILIKE` over the datasets table from tokio-postgres (the least a search
//!     costs)
//!   - a KPI chart of 5 years of daily data: `/kpis/<name>` rendered (series, thresholds,
//!     anomalies, the forecast, the SVG; aim < 300 ms), beside fetching the same rows with
//!     tokio-postgres

use crate::{connect, read_token, report};
use barecount_flight::{Application, Config};
use std::time::{Duration, Instant};

fn pct(xs: &mut [Duration], p: f64) -> f64 {
    xs.sort();
    let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
    xs[i].as_secs_f64() * 1000.0
}

pub async fn web(pg_url: String, datasets: usize, runs: usize) -> anyhow::Result<()> {
    let pg = connect(&pg_url).await?;
    // 10,000 small datasets with varied names and columns, published 250 per statement (each
    // publish takes locks on its new table: one transaction for all would run out of them)
    let t = Instant::now();
    for from in (1..=datasets).step_by(250) {
        let to = (from + 249).min(datasets);
        pg.batch_execute(&format!(
            "SELECT barecount.publish(
                  (ARRAY['sales', 'stock', 'returns', 'footfall', 'margin'])[1 + i % 5] || '_' || (ARRAY['east', 'west', 'north', 'south'])[1 + i / 5 % 4] || '_' || i,
                  format('SELECT 1::int AS %I, 2.5::numeric AS %I, %L::text AS region',
                         (ARRAY['store_id', 'sku', 'week', 'day'])[1 + i % 4] || '_' || i % 50,
                         (ARRAY['amount', 'units', 'cost'])[1 + i % 3], 'r' || i))
               FROM generate_series({from}, {to}) i"
        ))
        .await?;
    }
    println!(
        "web: {datasets} datasets published in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // 5 years of daily sales in 1 region, a KPI with a threshold and an anomaly detector
    pg.batch_execute(
        "CREATE TABLE gdp.daily (tenant_id text NOT NULL DEFAULT 'default', d date, region text, amount numeric);
         INSERT INTO gdp.daily (d, region, amount)
              SELECT date '2020-01-01' + i, 'east', 1000 + 200 * sin(i * 2 * pi() / 7) + i * 0.3 + (i % 13) * 7
                FROM generate_series(0, 1826) i;
         SELECT barecount.kpi_define('daily_net', '{\"source\": \"gdp.daily\", \"time\": \"d\", \"grain\": \"day\",
             \"dimensions\": [\"region\"], \"measures\": {\"net\": \"sum(amount)\"},
             \"thresholds\": [{\"measure\": \"net\", \"direction\": \"above\", \"warn\": 1900, \"critical\": 2100}],
             \"anomaly\": {\"method\": \"mad\", \"threshold\": 3.5}}');
         SELECT * FROM barecount.kpi_materialize('daily_net', '2020-01-01', '2024-12-31');
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_web') THEN
             CREATE ROLE bench_web LOGIN BYPASSRLS; GRANT barecount_admin TO bench_web; END IF; END $$;",
    )
    .await?;
    let token = read_token(&pg).await?;
    let mut config =
        Config::local(pg_url.replacen("postgresql://postgres@", "postgresql://bench_web@", 1));
    config.web_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = Application::build(config).await?;
    let base = format!(
        "http://{}",
        app.web_addr()
            .ok_or_else(|| anyhow::anyhow!("no web address"))?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let (base, token) = (base.clone(), token.clone());
        async move {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await?;
            let status = r.status();
            let body = r.text().await?;
            anyhow::ensure!(status.is_success(), "{path}: {status}: {body}");
            Ok::<(Duration, String), anyhow::Error>((t.elapsed(), body))
        }
    };
    let searches = [
        "sales",
        "east",
        "amount",
        "sku_7",
        "footfall west",
        "units",
        "returns_north",
        "store_id_42",
        "margin",
        "cost",
        "week",
        "nothing_like_this",
    ];
    // warm-up: one of each
    for q in searches {
        get(format!("/api/v1/catalog?q={q}")).await?;
    }
    let (mut ours, mut plain) = (vec![], vec![]);
    for i in 0..runs {
        let q = searches[i % searches.len()];
        let (d, body) = get(format!("/api/v1/catalog?q={}", q.replace(' ', "+"))).await?;
        anyhow::ensure!(body.contains("\"items\""), "{body}");
        ours.push(d);
        let t = Instant::now();
        pg.query(
            "SELECT dataset FROM barecount.datasets WHERE tenant_id = 'default' AND dataset ILIKE '%' || $1 || '%' ORDER BY dataset LIMIT 51",
            &[&q],
        )
        .await?;
        plain.push(t.elapsed());
    }
    let (p50, p95, p99) = (
        pct(&mut ours, 0.5),
        pct(&mut ours, 0.95),
        pct(&mut ours, 0.99),
    );
    let base95 = pct(&mut plain, 0.95);
    println!(
        "web: catalog search over {datasets} datasets, {runs} searches: p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms (aim p95 < 100 ms); plain ILIKE over the datasets table p95 {base95:.2} ms"
    );
    report(
        "web_catalog_search_p95",
        p95,
        100.0,
        p95 / 100.0,
        "ms_vs_aim",
    );
    report(
        "web_catalog_search_vs_ilike_p95",
        p95,
        base95,
        p95 / base95,
        "ms",
    );

    // the KPI page: 1,827 days, its chart, its forecast
    get("/kpis/daily_net".into()).await?;
    let (mut page, mut rows) = (vec![], vec![]);
    let kpi_runs = (runs / 10).max(10);
    for _ in 0..kpi_runs {
        let (d, body) = get("/kpis/daily_net".into()).await?;
        anyhow::ensure!(body.contains("class=\"series\""), "no chart");
        page.push(d);
        let t = Instant::now();
        let n = pg
            .query(
                "SELECT * FROM kpi.daily_net WHERE tenant_id = 'default' ORDER BY period_start",
                &[],
            )
            .await?
            .len();
        anyhow::ensure!(n >= 1826, "{n} rows");
        rows.push(t.elapsed());
    }
    let (k50, k95) = (pct(&mut page, 0.5), pct(&mut page, 0.95));
    let r95 = pct(&mut rows, 0.95);
    println!(
        "web: KPI chart of 1,827 daily values with its forecast, {kpi_runs} renders: p50 {k50:.1} ms, p95 {k95:.1} ms (aim < 300 ms); the rows alone from tokio-postgres p95 {r95:.1} ms"
    );
    report(
        "web_kpi_chart_5y_daily_p95",
        k95,
        300.0,
        k95 / 300.0,
        "ms_vs_aim",
    );
    report("web_kpi_chart_vs_rows_p95", k95, r95, k95 / r95, "ms");
    let _ = stop.send(());
    server.await??;
    Ok(())
}
