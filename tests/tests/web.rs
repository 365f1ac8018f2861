//! The web app against a real cluster and a real barecount-flight: sign-in with a token and a
//! role's password, the pages and the JSON API, CSRF, security headers, escaping of hostile
//! names, tenants kept apart (another tenant's objects are 404), revoked credentials and
//! sign-out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_flight::Config;
use barecount_tests::*;
use reqwest::redirect::Policy;
use reqwest::{Client as Http, StatusCode};
use std::time::{Duration, Instant};

/// A browser-like client that never follows redirects (the test looks at them).
fn http() -> Http {
    Http::builder().redirect(Policy::none()).build().unwrap()
}

/// Signs in through the form; returns the session cookie (`bc_session=…`).
async fn sign_in(base: &str, user: &str, secret: &str) -> String {
    let r = http()
        .post(format!("{base}/login"))
        .form(&[("user", user), ("secret", secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in as {user}");
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

/// A form posted with the session cookie, as a browser of this origin would.
async fn post(base: &str, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    http()
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn get(base: &str, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = http()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The CSRF token of the page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 32].to_owned()
}

struct Rig {
    db: TestDb,
    _flight: Flight,
    base: String,
}

/// Tenant `default` with a dataset `sales` (whose contract describes a column), a hostile
/// dataset name's neighbour (a column named like markup) and a KPI with a threshold; tenant
/// `acme` with a dataset of its own.
async fn rig() -> Rig {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "SELECT barecount.publish('sales', $$SELECT g::bigint AS id, 'r' || (g % 3) AS region, (g * 1.5)::numeric(10,2) AS amount
                                             FROM generate_series(1, 40) g$$);
         SELECT barecount.publish('sales', $$SELECT g::bigint AS id, 'r' || (g % 3) AS region, (g * 1.5)::numeric(10,2) AS amount
                                             FROM generate_series(1, 50) g$$);
         SELECT barecount.publish('odd', $$SELECT '<script>alert(1)</script>'::text AS \"<img src=x onerror=alert(2)>\"$$);
         CREATE TABLE gdp.orders (tenant_id text NOT NULL DEFAULT 'default', order_date date, region text, amount numeric);
         INSERT INTO gdp.orders (order_date, region, amount)
              SELECT make_date(2022 + (i / 12), i % 12 + 1, 10), r,
                     100 + i % 5 + (CASE WHEN r = 'west' THEN 60 + 3 * i ELSE 0 END) + (CASE WHEN i = 20 AND r = 'east' THEN 900 ELSE 0 END)
                FROM generate_series(0, 23) i, unnest(ARRAY['east', 'west']) r;
         SELECT barecount.kpi_define('net', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"month\",
             \"dimensions\": [\"region\"], \"measures\": {\"net\": \"sum(amount)\"},
             \"thresholds\": [{\"measure\": \"net\", \"direction\": \"above\", \"warn\": 300, \"critical\": 500}],
             \"anomaly\": {\"method\": \"mad\", \"threshold\": 3.5}}');
         SELECT * FROM barecount.kpi_materialize('net', '2022-01-01', '2023-12-31');
         SELECT barecount.publish('net_monthly', 'kpi.net');
         SELECT barecount.tenant_create('acme', 'Acme');
         SELECT barecount.act_as_tenant('acme');
         SELECT barecount.publish('acme_secret', 'SELECT 42 AS answer');
         SELECT barecount.act_as_tenant('default');",
    )
    .await
    .unwrap();
    // a batch of orders with one row the contract refuses (region "central")
    // (with a warning-level quality rule: amounts up to 1000)
    let contract = ORDERS_CONTRACT.replace(
        "    description: One row per order.\n",
        "    description: One row per order.\n    quality:\n      - rule: range\n        property: amount\n        max: 1000\n",
    )
    .replace("status: active\n", "status: active\ntags: [finance, pii]\n")
    .replace(
        "      - name: order_id\n",
        "      - name: order_id\n        description: The <b>till's</b> order number\n",
    );
    assert_ne!(contract, ORDERS_CONTRACT);
    c.query("SELECT barecount.contract_register($1)", &[&contract])
        .await
        .unwrap();
    let batch = serde_json::json!([order("W1", "east", 5.0), order("W2", "central", 7.0)]);
    c.query("SELECT * FROM barecount.ingest('orders', $1)", &[&batch])
        .await
        .unwrap();
    // a second batch whose amount breaks the quality rule (a warning: the rows land)
    let big = serde_json::json!([order("W3", "west", 5000.0)]);
    c.query("SELECT * FROM barecount.ingest('orders', $1)", &[&big])
        .await
        .unwrap();
    // the accepted orders published under the contract's dataset name (its schema carries the
    // contract's descriptions); a weekly KPI on the NRF retail calendar; a pipeline run that fails
    c.batch_execute(
        "SELECT barecount.publish('orders', $$SELECT payload->>'order_id' AS order_id, (payload->>'amount')::numeric AS amount FROM raw.orders__accepted$$);
         SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         SELECT barecount.kpi_define('weekly', '{\"source\": \"gdp.orders\", \"time\": \"order_date\", \"grain\": \"week\",
             \"calendar\": \"nrf\", \"measures\": {\"net\": \"sum(amount)\"}}');
         SELECT * FROM barecount.kpi_materialize('weekly', '2022-01-01', '2023-12-31');
         SELECT barecount.pipeline_define('broken', '{\"steps\": [{\"name\": \"pub\", \"kind\": \"publish\", \"dataset\": \"nope\", \"source\": \"gdp.nope\"}]}');
         SELECT * FROM barecount.pipeline_run('broken', '2024-01-01', '2024-01-31', 'k1');
         SELECT barecount._pipeline_tick('broken', false);
         SELECT barecount.model_define('region_totals', 'SELECT region, sum(amount) AS total FROM gdp.orders GROUP BY region');
         SELECT barecount.publish('zz_page_' || lpad(i::text, 2, '0'), 'SELECT 1 AS one') FROM generate_series(1, 52) i;",
    )
    .await
    .unwrap();
    let mut config = Config::local(&db.url);
    config.web_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let flight = Flight::start_with(config).await;
    let base = format!("http://{}", flight.web_addr.unwrap());
    Rig {
        db,
        _flight: flight,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_of_one_tenant_behind_a_session() {
    let r = rig().await;
    let base = &r.base;
    let c = &r.db.client;
    // no session: the sign-in page; bad credentials: refused on the form
    let anon = http().get(format!("{base}/catalog")).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::SEE_OTHER);
    assert_eq!(anon.headers()["location"], "/login");
    let bad = http()
        .post(format!("{base}/login"))
        .form(&[("user", ""), ("secret", "bct_nonsense")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.text().await.unwrap().contains("not accepted"));
    let token = api_token(c, "default", &["read"]).await;
    let cookie = sign_in(base, "", &token).await;

    // the catalog, with the security headers on every answer
    let page = http()
        .get(format!("{base}/catalog"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    let body = page.text().await.unwrap();
    for name in ["sales", "odd"] {
        assert!(body.contains(&format!(">{name}<")), "{name} in {body}");
    }
    assert!(!body.contains("acme_secret"));
    // full text over column names, a kind filter, a name fragment
    let (_, found) = get(base, &cookie, "/catalog?q=amount").await;
    assert!(
        found.contains(">sales<") && !found.contains(">odd<"),
        "{found}"
    );
    let (_, kpis) = get(base, &cookie, "/catalog?kind=kpi").await;
    assert!(kpis.contains(">net<") && !kpis.contains(">sales<"));
    // contract tags, models, calendars, pipelines are in the catalog too
    let (_, tagged) = get(base, &cookie, "/catalog?q=pii").await;
    assert!(
        tagged.contains(">orders<") && tagged.contains(">contract<"),
        "{tagged}"
    );
    let (_, models) = get(base, &cookie, "/catalog?kind=model").await;
    assert!(models.contains(">region_totals<"), "{models}");
    let (_, others) = get(base, &cookie, "/catalog?q=nrf+OR+broken").await;
    assert!(
        others.contains(">nrf<") && others.contains(">broken<"),
        "{others}"
    );
    // keyset pages of 50: the next page starts after the last item, nothing twice or lost
    let (_, first) = get(base, &cookie, "/catalog?kind=dataset").await;
    let at = first.find("rel=\"next\" href=\"").expect("a next page") + 17;
    let next = first[at..first[at..].find('"').unwrap() + at].replace("&amp;", "&");
    let (_, second) = get(base, &cookie, &next).await;
    let names = |page: &str| -> Vec<String> {
        page.split("<a href=\"/datasets/")
            .skip(1)
            .map(|x| x[..x.find('"').unwrap()].to_owned())
            .collect()
    };
    let (a, b) = (names(&first), names(&second));
    assert_eq!(a.len(), 50);
    let all: std::collections::BTreeSet<String> = a.iter().chain(&b).cloned().collect();
    assert_eq!(all.len(), a.len() + b.len(), "no item on both pages");
    assert_eq!(
        all.len() as i64,
        count(
            c,
            "SELECT count(*) FROM barecount.datasets WHERE tenant_id = 'default'"
        )
        .await
    );
    assert!(!second.contains("rel=\"next\""));
    let (_, team) = get(base, &cookie, "/catalog?q=retail-data").await;
    assert!(team.contains(">orders<"), "the contract's team: {team}");
    // the contract's column descriptions on the schema, escaped (checked before a later
    // contract version without them is registered)
    let (_, od) = get(base, &cookie, "/datasets/orders").await;
    assert!(
        od.contains("order number") && !od.contains("<b>till"),
        "{od}"
    );
    assert!(
        od.contains("&lt;b&gt;till") || od.contains("&#60;b&#62;till"),
        "{od}"
    );
    let (_, frag) = get(base, &cookie, "/catalog?q=ale").await;
    assert!(frag.contains(">sales<"));
    let (status, _) = get(base, &cookie, "/catalog?kind=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // a dataset: versions with hashes, schema, first rows, lineage
    let (status, ds) = get(base, &cookie, "/datasets/sales").await;
    assert_eq!(status, StatusCode::OK);
    let hashes = strings(c, "SELECT content_hash FROM barecount.dataset_versions WHERE dataset = 'sales' ORDER BY version").await;
    for h in &hashes {
        assert!(ds.contains(h.as_str()), "{h}");
    }
    assert!(ds.contains("latest") && ds.contains(">region<") && ds.contains(">r1<"));
    assert!(
        !ds.contains(">tenant_id<"),
        "tenant_id is implied, as over Flight"
    );
    // verify needs the form's CSRF token
    let no_csrf = post(
        base,
        &cookie,
        "/datasets/sales/verify",
        &[("csrf", "0".repeat(32).as_str())],
    )
    .await;
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let ok = post(
        base,
        &cookie,
        "/datasets/sales/verify",
        &[("csrf", csrf(&ds).as_str())],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let verified = ok.text().await.unwrap();
    assert!(verified.contains("Version 2: verified"), "{verified}");

    // export buttons: refused without the export scope; with it, the export runs in the
    // background, its page follows it, and the file downloads with the receipt's SHA-256
    let refused = post(
        base,
        &cookie,
        "/datasets/sales/export",
        &[("csrf", csrf(&ds).as_str()), ("format", "parquet")],
    )
    .await;
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "{}",
        refused.text().await.unwrap()
    );
    let exporter = api_token(c, "default", &["read", "export"]).await;
    let ex = sign_in(base, "", &exporter).await;
    let (_, ds_ex) = get(base, &ex, "/datasets/sales").await;
    let started = post(
        base,
        &ex,
        "/datasets/sales/export",
        &[
            ("csrf", csrf(&ds_ex).as_str()),
            ("format", "csv"),
            ("version", "1"),
        ],
    )
    .await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let job = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(job.starts_with("/exports/"), "{job}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let receipt = loop {
        let (_, j) = get(base, &ex, &format!("/api/v1{job}")).await;
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert!(j["error"].is_null(), "{j}");
        if !j["receipt"].is_null() {
            break j["receipt"].clone();
        }
        assert!(Instant::now() < deadline, "the export never finished: {j}");
        tokio::task::yield_now().await;
    };
    assert_eq!(receipt["rows"], 40);
    let (status, done) = get(base, &ex, &job).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        done.contains("Done: 40 rows") && !done.contains("http-equiv=\"refresh\""),
        "{done}"
    );
    let file = http()
        .get(format!("{base}{job}/file"))
        .header("cookie", &ex)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    let bytes = file.bytes().await.unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(receipt["content_hash"], sha.as_str());
    assert!(String::from_utf8_lossy(&bytes).starts_with("id,region,amount"));
    let (status, _) = get(base, &ex, "/exports/00000000000000000000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // the export's JSON answers like the rest of the API: 401 in JSON without credentials
    let anon = http()
        .get(format!("{base}/api/v1{job}"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let e: serde_json::Value = serde_json::from_str(&anon.text().await.unwrap()).unwrap();
    assert_eq!(e["error"]["code"], "unauthenticated");
    let bad_format = post(
        base,
        &ex,
        "/datasets/sales/export",
        &[("csrf", csrf(&ds_ex).as_str()), ("format", "xlsx")],
    )
    .await;
    assert_eq!(bad_format.status(), StatusCode::BAD_REQUEST);

    // lineage drawn as a graph: the published KPI comes from its KPI table
    let (_, lin) = get(base, &cookie, "/datasets/net_monthly").await;
    let graph = &lin[lin
        .find("class=\"lineage-graph\"")
        .expect("a lineage graph")..];
    assert!(graph.contains(">kpi.net<"), "{graph}");
    assert!(
        graph.contains("1 upstream") && graph.contains("class=\"edge\""),
        "{graph}"
    );

    // hostile names are text, never markup
    let (_, odd) = get(base, &cookie, "/datasets/odd").await;
    assert!(
        !odd.contains("<img src=x") && !odd.contains("<script>alert"),
        "{odd}"
    );
    assert!(
        odd.contains("&lt;img src=x onerror=alert(2)&gt;") || odd.contains("&#60;img"),
        "{odd}"
    );
    let (_, echoed) = get(
        base,
        &cookie,
        "/catalog?q=%3Cscript%3Ealert(3)%3C/script%3E",
    )
    .await;
    assert!(!echoed.contains("<script>alert(3)"), "{echoed}");

    // the KPI: an SVG chart with bands, one line per region, the anomaly ringed
    let (status, kpi) = get(base, &cookie, "/kpis/net").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        kpi.contains("<svg") && kpi.contains("class=\"band-critical\""),
        "{kpi}"
    );
    assert_eq!(kpi.matches("class=\"series\"").count(), 2);
    assert!(
        kpi.contains("class=\"anomaly\""),
        "the spike of 2023-09 is ringed"
    );
    assert!(kpi.contains(">2022-01<") || kpi.contains("2022-01"));

    // evidence: the chain verifies, the latest digest is shown
    let (status, ev) = get(base, &cookie, "/evidence").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ev.contains("The chain verifies"), "{ev}");
    let digest: String = c
        .query_one("SELECT entry_hash FROM barecount.ledger_digest()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ev.contains(&digest));
    assert!(ev.contains("publish"));
    let (_, only) = get(base, &cookie, "/evidence?event=kpi_define").await;
    let rows: Vec<&str> = only.split("<tr><td>").skip(1).collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.contains("<td>kpi_define</td>")),
        "{only}"
    );

    // the JSON API, with the token as a bearer, and its OpenAPI document
    let api = http()
        .get(format!("{base}/api/v1/datasets/sales"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&api.text().await.unwrap()).unwrap();
    assert_eq!(v["versions"][0]["content_hash"], hashes[1].as_str());
    assert_eq!(v["columns"][1]["name"], "region");
    let series = http()
        .get(format!("{base}/api/v1/kpis/net/series"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&series.text().await.unwrap()).unwrap();
    assert_eq!(s["points"].as_array().unwrap().len(), 48);
    let anon_api = http()
        .get(format!("{base}/api/v1/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon_api.status(), StatusCode::UNAUTHORIZED);
    let e: serde_json::Value = serde_json::from_str(&anon_api.text().await.unwrap()).unwrap();
    assert_eq!(e["error"]["code"], "unauthenticated");
    let doc: serde_json::Value = serde_json::from_str(
        &http()
            .get(format!("{base}/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/datasets/{name}"]["get"].is_object());
    assert!(doc["paths"]["/exports/{id}"]["get"].is_object());

    // quality: the batch, its held row with the error, replay refused without the ingest scope,
    // then (contract fixed) replayed by an engineer's token
    let batch_id: i64 = c
        .query_one(
            "SELECT min(batch_id) FROM barecount.batches WHERE dataset = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (status, q) = get(base, &cookie, "/quality").await;
    assert_eq!(status, StatusCode::OK);
    assert!(q.contains(&format!("/quality/batches/{batch_id}")), "{q}");
    // the rule's results over time: passed in the first batch, 1 failing in the second
    let timeline = &q[q.find("class=\"timeline\"").expect("a timeline")..];
    assert!(
        timeline.contains("orders: range")
            && timeline.contains(">pass<")
            && timeline.contains(">1 failing<"),
        "{timeline}"
    );
    let (status, held) = get(base, &cookie, &format!("/quality/batches/{batch_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        held.contains("/region") && held.contains("enum") && held.contains("central"),
        "{held}"
    );
    let read_only = post(
        base,
        &cookie,
        &format!("/quality/batches/{batch_id}/replay"),
        &[("csrf", csrf(&held).as_str())],
    )
    .await;
    assert_eq!(
        read_only.status(),
        StatusCode::FORBIDDEN,
        "replay needs the ingest scope"
    );
    let v2 = ORDERS_CONTRACT
        .replace("version: 1.0.0", "version: 1.1.0")
        .replace(
            "enum: [east, west, north, south]",
            "enum: [east, west, north, south, central]",
        );
    c.query("SELECT barecount.contract_register($1)", &[&v2])
        .await
        .unwrap();
    let engineer = api_token(c, "default", &["read", "ingest"]).await;
    let eng = sign_in(base, "", &engineer).await;
    let (_, held) = get(base, &eng, &format!("/quality/batches/{batch_id}")).await;
    let replayed = post(
        base,
        &eng,
        &format!("/quality/batches/{batch_id}/replay"),
        &[("csrf", csrf(&held).as_str())],
    )
    .await;
    assert_eq!(replayed.status(), StatusCode::OK);
    let after = replayed.text().await.unwrap();
    assert!(
        after.contains("1 row(s) released, 0 still quarantined"),
        "{after}"
    );
    assert!(after.contains("released under 1.1.0"), "{after}");

    // operations: the failed run with its step and error, today's usage against the plan
    let (status, ops) = get(base, &cookie, "/operations?failed=true").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ops.contains(">broken<") && ops.contains(">failed<"),
        "{ops}"
    );
    assert!(ops.contains("pub: 42P01: source "), "{ops}");
    assert!(
        ops.contains("<td>schedule</td>") && ops.contains("<td>manual</td>"),
        "a scheduled and a manual run: {ops}"
    );
    assert!(ops.contains(">publish<"), "{ops}");

    // the retail calendar's labels
    let (_, wk) = get(base, &cookie, "/kpis/weekly").await;
    let svg = &wk[wk.find("<svg").unwrap()..];
    assert!(
        svg.contains(">FY2022-W") || svg.contains(">FY2021-W"),
        "NRF week labels: {svg}"
    );
    assert!(wk.contains("on the nrf calendar"));
    let runs = http()
        .get(format!("{base}/api/v1/runs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let o: serde_json::Value = serde_json::from_str(&runs.text().await.unwrap()).unwrap();
    let published = count(c, "SELECT coalesce(sum(events), 0)::bigint FROM barecount.usage WHERE kind = 'publish' AND tenant_id = 'default'").await;
    let shown = o["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["kind"] == "publish")
        .unwrap()["events"]
        .as_i64()
        .unwrap();
    assert_eq!(shown, published);
    assert!(published >= 3);

    // signing out ends the session; the old cookie is refused
    let (_, catalog) = get(base, &cookie, "/catalog").await;
    let out = post(
        base,
        &cookie,
        "/logout",
        &[("csrf", csrf(&catalog).as_str())],
    )
    .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = get(base, &cookie, "/catalog").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_meet_and_revoked_credentials_end_sessions() {
    let r = rig().await;
    let base = &r.base;
    let c = &r.db.client;
    // a role of tenant acme signs in with its password
    let reader = login_role(c, "web_reader", &["barecount_reader"], Some("acme")).await;
    r.db.superuser
        .batch_execute(&format!("ALTER ROLE {reader} PASSWORD 'pw-acme-1'"))
        .await
        .unwrap();
    let wrong = http()
        .post(format!("{base}/login"))
        .form(&[("user", reader.as_str()), ("secret", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let acme = sign_in(base, &reader, "pw-acme-1").await;
    let (_, own) = get(base, &acme, "/catalog").await;
    assert!(
        own.contains(">acme_secret<") && !own.contains(">sales<"),
        "{own}"
    );
    // default's dataset, KPI and API URLs are not found for acme, and the reverse
    let batch_id: i64 = c
        .query_one(
            "SELECT min(batch_id) FROM barecount.batches WHERE dataset = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let batch_page = format!("/quality/batches/{batch_id}");
    let batch_api = format!("/api/v1/quality/batches/{batch_id}");
    for path in [
        "/datasets/sales",
        "/kpis/net",
        batch_page.as_str(),
        batch_api.as_str(),
        "/api/v1/datasets/sales",
        "/api/v1/kpis/net/series",
    ] {
        let (status, body) = get(base, &acme, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(!body.contains("r1"), "{path}");
    }
    // tenant A's pipeline runs are not in B's operations page or runs API
    let (_, ops) = get(base, &acme, "/operations").await;
    assert!(!ops.contains("broken") && ops.contains("No runs."), "{ops}");
    let (_, runs) = get(base, &acme, "/api/v1/runs").await;
    assert!(!runs.contains("broken"), "{runs}");
    let (_, ledger) = get(base, &acme, "/api/v1/ledger").await;
    let l: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    assert!(
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["subject"].as_str().unwrap().contains("sales")),
        "{ledger}"
    );
    let token = api_token(c, "default", &["read"]).await;
    let default = sign_in(base, "", &token).await;
    let (status, _) = get(base, &default, "/datasets/acme_secret").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // a verify of another tenant's dataset with a valid CSRF token: not found, nothing run
    let (_, page) = get(base, &acme, "/catalog").await;
    let cross = post(
        base,
        &acme,
        "/datasets/sales/verify",
        &[("csrf", csrf(&page).as_str())],
    )
    .await;
    assert_eq!(cross.status(), StatusCode::NOT_FOUND);
    let acme_export = post(
        base,
        &acme,
        "/datasets/sales/export",
        &[("csrf", csrf(&page).as_str()), ("format", "csv")],
    )
    .await;
    assert!(
        [StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&acme_export.status()),
        "{}",
        acme_export.status()
    );
    let (_, q) = get(base, &acme, "/quality").await;
    assert!(q.contains("No batch has quarantined rows"), "{q}");
    // a sign-in posted from another site is refused
    let forged = http()
        .post(format!("{base}/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("user", ""), ("secret", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // a token without the read scope cannot sign in
    let export_only = api_token(c, "default", &["export"]).await;
    let no_read = http()
        .post(format!("{base}/login"))
        .form(&[("user", ""), ("secret", export_only.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(no_read.status(), StatusCode::FORBIDDEN);

    // revoking the token and removing the member end their sessions (re-checked every 2 s)
    let id = token.split('_').nth(1).unwrap().to_owned();
    c.execute("SELECT barecount.token_revoke($1)", &[&id])
        .await
        .unwrap();
    c.execute(
        "SELECT barecount.tenant_remove_member($1::text::regrole)",
        &[&reader],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ended = (false, false);
    while Instant::now() < deadline && !(ended.0 && ended.1) {
        ended.0 = get(base, &default, "/catalog").await.0 == StatusCode::SEE_OTHER;
        ended.1 = get(base, &acme, "/catalog").await.0 == StatusCode::SEE_OTHER;
        tokio::task::yield_now().await;
    }
    assert_eq!(ended, (true, true), "revoked token, removed member");
}

/// Where a test's screenshots go: `$BARECOUNT_ARTIFACTS` (scripts/e2e.sh sets it under the
/// state directory), and with `BARECOUNT_UPDATE_SCREENSHOTS=1` also docs/screenshots/.
fn shot_paths(name: &str) -> Vec<std::path::PathBuf> {
    let mut out = vec![std::path::PathBuf::from(
        std::env::var("BARECOUNT_ARTIFACTS")
            .unwrap_or_else(|_| temp_dir("bc-artifacts").display().to_string()),
    )
    .join("screenshots")
    .join(format!("{name}.png"))];
    if std::env::var("BARECOUNT_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        out.push(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs/screenshots")
                .join(format!("{name}.png")),
        );
    }
    out
}

/// Headless Chromium (Debian's, through chromedriver) signs in, searches, opens a dataset,
/// verifies it, opens the KPI chart and the evidence, moving by keyboard where a user would;
/// a screenshot of each page is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_walks_the_app() {
    use barecount_tests::webdriver::Driver;
    let r = rig().await;
    let base = &r.base;
    let token = api_token(&r.db.client, "default", &["read", "ingest"]).await;
    let driver = Driver::start().await;
    let profile = temp_dir("bc-chromium");
    let b = driver.browser(&profile).await;
    let shot = |name: &'static str| shot_paths(name);

    b.goto(&format!("{base}/catalog")).await;
    b.wait_for_url("/login").await;
    // keyboard: the first Tab reaches the skip link, the form's fields have labels
    b.press("\u{E004}").await;
    assert_eq!(
        b.script("return document.activeElement.className").await,
        "skip"
    );
    let unlabelled = b
        .script("return [...document.querySelectorAll('input:not([type=hidden]), select')].filter(e => !e.labels || e.labels.length === 0).length")
        .await;
    assert_eq!(unlabelled, 0);
    for p in shot("login") {
        b.screenshot(&p).await;
    }
    b.type_into("#secret", &token).await;
    b.press("\u{E007}").await;
    b.wait_for_url("/catalog").await;
    assert!(b.source().await.contains(">sales<"));
    for p in shot("catalog") {
        b.screenshot(&p).await;
    }

    b.type_into("#q", "amount").await;
    b.press("\u{E007}").await;
    b.wait_for_url("q=amount").await;
    let found = b.source().await;
    assert!(found.contains(">sales<") && !found.contains(">odd<"));
    b.click("a[href='/datasets/sales']").await;
    b.wait_for_url("/datasets/sales").await;
    for p in shot("dataset") {
        b.screenshot(&p).await;
    }
    b.click("form[action$='/verify'] button").await;
    b.wait_for_url("/verify").await;
    let verified = b.source().await;
    assert!(verified.contains("Version 2: verified"), "{verified}");
    for p in shot("dataset-verified") {
        b.screenshot(&p).await;
    }

    b.goto(&format!("{base}/kpis/net")).await;
    let svg = b
        .script("const s = document.querySelector('svg.chart'); return s ? s.querySelectorAll('polyline.series').length : -1")
        .await;
    assert_eq!(svg, 2, "two regions drawn");
    let ringed = b
        .script("return document.querySelectorAll('svg.chart circle.anomaly').length")
        .await;
    assert!(ringed.as_i64().unwrap() >= 1);
    for p in shot("kpi") {
        b.screenshot(&p).await;
    }

    // quality: open the batch, fix the contract, replay the held row with the button
    b.goto(&format!("{base}/quality")).await;
    for p in shot("quality") {
        b.screenshot(&p).await;
    }
    let held: i64 =
        r.db.client
            .query_one(
                "SELECT min(batch_id) FROM barecount.batches WHERE dataset = 'orders'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    b.click(&format!("a[href='/quality/batches/{held}']")).await;
    b.wait_for_url("/quality/batches/").await;
    assert!(b.source().await.contains("central"));
    for p in shot("quality-batch") {
        b.screenshot(&p).await;
    }
    let v2 = ORDERS_CONTRACT
        .replace("version: 1.0.0", "version: 1.1.0")
        .replace(
            "enum: [east, west, north, south]",
            "enum: [east, west, north, south, central]",
        );
    r.db.client
        .query("SELECT barecount.contract_register($1)", &[&v2])
        .await
        .unwrap();
    b.click("form[action$='/replay'] button").await;
    b.wait_for_url("/replay").await;
    assert!(b.source().await.contains("1 row(s) released"));
    b.goto(&format!("{base}/operations")).await;
    assert!(b.source().await.contains("Usage today"));
    for p in shot("operations") {
        b.screenshot(&p).await;
    }

    b.goto(&format!("{base}/evidence")).await;
    assert!(b.source().await.contains("The chain verifies"));
    for p in shot("evidence") {
        b.screenshot(&p).await;
    }
    // the page ran no script of its own and the CSP let none in: nothing was blocked
    let scripts = b.script("return document.scripts.length").await;
    assert_eq!(scripts, 0);
    // sign out with the keyboard-reachable button
    b.click("form[action='/logout'] button").await;
    b.wait_for_url("/login").await;
    b.goto(&format!("{base}/catalog")).await;
    b.wait_for_url("/login").await;
    b.quit().await;
    let _ = std::fs::remove_dir_all(&profile);
}

/// With --tls-cert and --tls-key the web app speaks HTTPS with the server's certificate, its
/// cookie is Secure, and plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_speaks_https_with_the_servers_certificate() {
    let db = fresh_db().await;
    let ca = std::path::PathBuf::from(std::env::var("BARECOUNT_TEST_PG_CA").unwrap());
    let dir = ca.parent().unwrap();
    let mut config = Config::local(&db.url);
    config.tls_cert = Some(dir.join("server.pem"));
    config.tls_key = Some(dir.join("server.key"));
    config.web_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let flight = Flight::start_with(config).await;
    let port = flight.web_addr.unwrap().port();
    let https = Http::builder()
        .redirect(Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let login = https.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let token = api_token(&db.client, "default", &["read"]).await;
    let signed = https
        .post(format!("{base}/login"))
        .form(&[("user", ""), ("secret", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let catalog = https
        .get(format!("{base}/catalog"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(catalog.status(), StatusCode::OK);
    // plain HTTP on the same port gets no page
    let plain = http()
        .get(format!("http://127.0.0.1:{port}/login"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
