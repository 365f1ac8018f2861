//! The published store's fast path: versions are read once from Postgres with binary COPY into
//! an Arrow IPC cache keyed by (dataset, version, content hash) — every type decoded exactly,
//! later reads served from the cache (also after a restart), a size limit that evicts, and
//! nothing stale when a new version is published.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType,
};
use barecount_flight::client;
use barecount_flight::Config;
use barecount_tests::{fresh_db, metric, temp_dir, Flight};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_through_binary_copy_exactly() {
    let db = fresh_db().await;
    let pg = &db.client;
    // VALUES drops type modifiers, so the outer SELECT states each column's type.
    let source = "SELECT b::boolean, i2::int2, i4::int4, i8::int8, f4::float4, f8::float8, d::numeric(12,3),
                         n::numeric, t::text, vc::varchar(5), ch::char(3), dt::date, ts::timestamp,
                         tz::timestamptz, j::jsonb, neg::numeric(14,3), far::date FROM (VALUES
        (true, 1::int2, 2::int4, 3::int8, 1.5::float4, 2.25::float8, 12.345::numeric(12,3), 1.5::numeric,
         'héllo ☃'::text, 'v'::varchar(5), 'c'::char(3), DATE '1999-12-31', TIMESTAMP '2024-02-29 12:34:56.789012',
         TIMESTAMPTZ '2024-01-01 00:00:00+00', '{\"a\": 1}'::jsonb, -98765432109.876::numeric(14,3), DATE '2150-06-01'),
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
      ) AS t(b, i2, i4, i8, f4, f8, d, n, t, vc, ch, dt, ts, tz, j, neg, far)";
    pg.execute("SELECT barecount.publish('types', $1)", &[&source])
        .await
        .unwrap();
    let expected = pg
        .query_one(
            "SELECT (ts - TIMESTAMP '1970-01-01') = interval '0' OR true,
                    (extract(epoch FROM ts) * 1000000)::int8, (extract(epoch FROM tz) * 1000000)::int8,
                    dt - DATE '1970-01-01', far - DATE '1970-01-01'
               FROM published.types WHERE b",
            &[],
        )
        .await
        .unwrap();
    let flight = Flight::start(&db.url).await;
    let (_, batches) = client::query(
        &flight.url,
        &flight.auth,
        "SELECT * FROM types ORDER BY i2 NULLS LAST",
    )
    .await
    .unwrap();
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2);
    let c = |name: &str| b.column_by_name(name).unwrap().clone();
    assert!(c("b").as_boolean().value(0));
    assert_eq!(c("i2").as_primitive::<Int16Type>().value(0), 1);
    assert_eq!(c("i4").as_primitive::<Int32Type>().value(0), 2);
    assert_eq!(c("i8").as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(c("f4").as_primitive::<Float32Type>().value(0), 1.5);
    assert_eq!(c("f8").as_primitive::<Float64Type>().value(0), 2.25);
    assert_eq!(c("d").as_primitive::<Decimal128Type>().value(0), 12_345);
    // unconstrained numeric: the exact decimal publishing measured (1.5: precision 2, scale 1)
    assert_eq!(
        c("n").data_type(),
        &arrow::datatypes::DataType::Decimal128(2, 1)
    );
    assert_eq!(c("n").as_primitive::<Decimal128Type>().value(0), 15);
    assert_eq!(c("t").as_string::<i32>().value(0), "héllo ☃");
    assert_eq!(c("vc").as_string::<i32>().value(0), "v");
    assert_eq!(c("ch").as_string::<i32>().value(0), "c  ");
    assert_eq!(
        c("dt").as_primitive::<Date32Type>().value(0),
        expected.get::<_, i32>(3)
    );
    assert_eq!(
        c("far").as_primitive::<Date32Type>().value(0),
        expected.get::<_, i32>(4)
    );
    assert_eq!(
        c("ts").as_primitive::<TimestampMicrosecondType>().value(0),
        expected.get::<_, i64>(1)
    );
    assert_eq!(
        c("tz").as_primitive::<TimestampMicrosecondType>().value(0),
        expected.get::<_, i64>(2)
    );
    assert_eq!(c("j").as_string::<i32>().value(0), "{\"a\": 1}");
    assert_eq!(
        c("neg").as_primitive::<Decimal128Type>().value(0),
        -98_765_432_109_876
    );
    for col in b.columns() {
        assert!(col.is_null(1), "NULLs stay NULL");
    }
    flight.stop().await;
}

async fn sum_of(flight: &Flight, dataset: &str) -> i64 {
    let (_, b) = client::query(
        &flight.url,
        &flight.auth,
        &format!("SELECT sum(n) FROM {dataset}"),
    )
    .await
    .unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "arrow")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_survives_restarts_evicts_and_is_never_stale() {
    let db = fresh_db().await;
    let pg = &db.client;
    pg.batch_execute(
        "SELECT barecount.publish('a', 'SELECT g::bigint AS n, md5(g::text) AS pad FROM generate_series(1, 50000) g');
         SELECT barecount.publish('b', 'SELECT (g * 2)::bigint AS n, md5(g::text) AS pad FROM generate_series(1, 50000) g');",
    )
    .await
    .unwrap();
    let dir = temp_dir("bc-cache");
    let config = |max: u64, memory: u64| {
        let mut c = Config::local(&db.url);
        c.cache_dir = dir.clone();
        c.cache_max_bytes = max;
        c.memory_cache_bytes = memory;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c
    };

    // First read loads from Postgres; the second is a cache hit.
    let flight = Flight::start_with(config(u64::MAX, u64::MAX)).await;
    let m = flight.metrics_addr.unwrap();
    assert_eq!(sum_of(&flight, "a").await, 50_000 * 50_001 / 2);
    assert_eq!(metric(m, "barecount_flight_cache_misses_total").await, 1.0);
    assert_eq!(sum_of(&flight, "a").await, 50_000 * 50_001 / 2);
    // The load kept the version in memory too: the second read copies nothing from disk.
    assert!(metric(m, "barecount_flight_cache_memory_hits_total").await >= 1.0);
    assert!(metric(m, "barecount_flight_cache_memory_bytes").await > 0.0);
    assert_eq!(
        metric(m, "barecount_flight_cache_loaded_rows_total").await,
        50_000.0
    );
    let one = metric(m, "barecount_flight_cache_bytes").await;
    assert!(one > 0.0);
    assert!(
        metric(
            m,
            "barecount_flight_requests_total{method=\"get_flight_info\"}"
        )
        .await
            >= 2.0
    );
    assert!(metric(m, "barecount_flight_rows_served_total").await >= 2.0);
    flight.stop().await;
    assert_eq!(files(&dir), 1);

    // A restarted server finds the cached version on disk (the memory tier is off here, so
    // every read goes to the files); a limit of one and a half versions makes the next load
    // evict the least recently used one.
    let flight = Flight::start_with(config((one * 1.5) as u64, 0)).await;
    let m = flight.metrics_addr.unwrap();
    assert_eq!(sum_of(&flight, "a").await, 50_000 * 50_001 / 2);
    assert!(metric(m, "barecount_flight_cache_hits_total").await >= 1.0);
    assert_eq!(metric(m, "barecount_flight_cache_misses_total").await, 0.0);
    assert_eq!(sum_of(&flight, "b").await, 50_000 * 50_001);
    assert_eq!(
        metric(m, "barecount_flight_cache_evictions_total").await,
        1.0
    );
    assert_eq!(files(&dir), 1, "the limit holds");
    assert!(metric(m, "barecount_flight_cache_bytes").await <= one * 1.5);
    // The evicted version loads again, correctly.
    assert_eq!(sum_of(&flight, "a").await, 50_000 * 50_001 / 2);
    assert_eq!(metric(m, "barecount_flight_cache_misses_total").await, 2.0);

    // A new version is a new key: never the old rows.
    pg.batch_execute("SELECT barecount.publish('a', 'SELECT 7::bigint AS n, ''x'' AS pad')")
        .await
        .unwrap();
    assert_eq!(sum_of(&flight, "a").await, 7);
    assert_eq!(sum_of(&flight, "a__v1").await, 50_000 * 50_001 / 2);
    flight.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_loads_keep_every_row_in_table_order() {
    let db = fresh_db().await;
    let pg = &db.client;
    pg.batch_execute(
        "SELECT barecount.publish('p', 'SELECT g::bigint AS n, md5(g::text) AS pad FROM generate_series(1, 150000) g')",
    )
    .await
    .unwrap();
    let mut config = Config::local(&db.url);
    config.cache_dir = temp_dir("bc-parallel");
    config.parallel_load_min_bytes = 0; // every version loads in parallel block ranges
    config.endpoint_rows = 65_536;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let dir = config.cache_dir.clone();
    let flight = Flight::start_with(config).await;

    // By path, over every endpoint: each part ends in a short batch, so the version holds more
    // batches than 150,000 / 65,536 suggests; the open-ended last endpoint still serves them.
    let mut plain = client::plain_client(&flight.url, &flight.token)
        .await
        .unwrap();
    let info = plain
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["p".into()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.endpoint.len(), 3);
    let mut sql_client = client::sql_client(&flight.url, &flight.auth).await.unwrap();
    let mut served = Vec::new();
    for e in info.endpoint {
        let batches: Vec<arrow::record_batch::RecordBatch> =
            futures::TryStreamExt::try_collect(sql_client.do_get(e.ticket.unwrap()).await.unwrap())
                .await
                .unwrap();
        for b in batches {
            served.extend(
                b.column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
    }
    let expected: Vec<i64> = pg
        .query("SELECT n FROM published.p__v1 ORDER BY ctid", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(served.len(), 150_000);
    assert_eq!(served, expected, "table order, nothing lost or doubled");
    assert_eq!(sum_of(&flight, "p").await, 150_000 * 150_001 / 2);
    let m = flight.metrics_addr.unwrap();
    assert_eq!(
        metric(m, "barecount_flight_cache_parallel_loads_total").await,
        1.0
    );
    flight.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_readers_share_one_load() {
    let db = fresh_db().await;
    db.client
        .batch_execute("SELECT barecount.publish('c', 'SELECT g::bigint AS n FROM generate_series(1, 200000) g')")
        .await
        .unwrap();
    let mut config = Config::local(&db.url);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let flight = Flight::start_with(config).await;
    // The first query is served while it loads the version; the others wait for that load
    // and read what it stored.
    let (a, b, c) = tokio::join!(
        sum_of(&flight, "c"),
        sum_of(&flight, "c"),
        sum_of(&flight, "c")
    );
    assert_eq!([a, b, c], [200_000 * 200_001 / 2; 3]);
    let m = flight.metrics_addr.unwrap();
    assert_eq!(metric(m, "barecount_flight_cache_misses_total").await, 1.0);
    assert_eq!(
        metric(m, "barecount_flight_cache_loaded_rows_total").await,
        200_000.0
    );
    flight.stop().await;
}

/// A version with numeric columns (two metadata entries per field) is loaded from Postgres
/// once, however often it is read, and held in memory at about its size: its cache key was
/// the schema's debug text, whose metadata order changed between requests, so "warm" reads
/// loaded it again; and its memory was counted once per array of each batch read back from the
/// file, so the memory tier refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_version_is_loaded_once_and_kept_in_memory_at_its_size() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "SELECT barecount.publish('money', 'SELECT g::bigint AS id, (g % 1000 / 100.0)::numeric(12,2) AS amount,
                                              (g % 77 / 10000.0)::numeric(10,4) AS rate, g::numeric AS big
                                         FROM generate_series(1, 200000) g')",
        )
        .await
        .unwrap();
    let dir = temp_dir("bc-cache-key");
    let mut c = Config::local(&db.url);
    c.cache_dir = dir.clone();
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.endpoint_rows = 65_536;
    let flight = Flight::start_with(c).await;
    let m = flight.metrics_addr.unwrap();
    for _ in 0..6 {
        let (_, b) = client::query(&flight.url, &flight.auth, "SELECT * FROM money")
            .await
            .unwrap();
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 200_000);
    }
    assert_eq!(metric(m, "barecount_flight_cache_misses_total").await, 1.0);
    assert_eq!(
        metric(m, "barecount_flight_cache_loaded_rows_total").await,
        200_000.0
    );
    assert_eq!(files(&dir), 1);
    // read back from its file by a new server, it is kept in memory at about the file's size
    flight.stop().await;
    let mut c = Config::local(&db.url);
    c.cache_dir = dir.clone();
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let flight = Flight::start_with(c).await;
    let m = flight.metrics_addr.unwrap();
    for _ in 0..3 {
        client::query(&flight.url, &flight.auth, "SELECT sum(id) FROM money")
            .await
            .unwrap();
    }
    assert_eq!(metric(m, "barecount_flight_cache_misses_total").await, 0.0);
    let file = metric(m, "barecount_flight_cache_bytes").await;
    let memory = metric(m, "barecount_flight_cache_memory_bytes").await;
    assert!(
        memory > 0.0 && memory < 2.0 * file,
        "in memory: {memory} bytes for a {file}-byte file"
    );
    assert!(metric(m, "barecount_flight_cache_memory_hits_total").await >= 2.0);
    flight.stop().await;
}
