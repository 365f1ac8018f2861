//! Exports through the `export` action and the CLI: Parquet, CSV and Arrow IPC files of a
//! dataset version or a query, with receipts in the ledger, metering and the daily limit;
//! nothing half-written or overwritten; bad requests refused with the right codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_flight::client::{self, Auth};
use barecount_flight::export::{ExportRequest, Format};
use barecount_flight::Config;
use barecount_tests::{
    api_token, base_url, cli_ok, code_of, connect, count, flight_bin, fresh_db,
    standalone_flight_url, temp_dir, Flight,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::Rng;
use sha2::Digest;
use tonic::Code;

fn req(dataset: Option<&str>, query: Option<&str>, format: Format) -> ExportRequest {
    ExportRequest {
        dataset: dataset.map(Into::into),
        version: None,
        query: query.map(Into::into),
        format,
        name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_write_files_with_receipts() {
    let db = fresh_db().await;
    let pg = &db.client;
    pg.batch_execute(
        "SELECT barecount.publish('sales', $$SELECT g::bigint AS id, (g % 100 * 0.5)::numeric(8,2) AS amount,
                                              'r' || (g % 4) AS region FROM generate_series(1, 100000) g$$);
         SELECT barecount.publish('sales', 'SELECT 1::bigint AS id, 2.5::numeric(8,2) AS amount, ''x'' AS region');",
    )
    .await
    .unwrap();
    let dir = temp_dir("bc-exports");
    let mut config = Config::local(&db.url);
    config.export_dir = dir.clone();
    let flight = Flight::start_with(config).await;
    let (url, auth) = (&flight.url, &flight.auth);

    // Parquet of version 1, with progress along the way.
    let mut seen = Vec::new();
    let mut r = req(Some("sales"), None, Format::Parquet);
    r.version = Some(1);
    r.name = Some("sales_v1".into());
    let receipt = client::export(url, auth, &r, |rows, total| seen.push((rows, total)))
        .await
        .unwrap();
    assert_eq!(receipt.rows, 100_000);
    assert!(seen.len() >= 2, "progress is reported per batch: {seen:?}");
    assert_eq!(seen.last().unwrap(), &(100_000, Some(100_000)));
    let path = std::path::PathBuf::from(&receipt.path);
    assert_eq!(path, dir.join("default").join("sales_v1.parquet"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, receipt.bytes);
    assert_eq!(hex(&sha2::Sha256::digest(&bytes)), receipt.content_hash);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 100_000);
    let v1_hash: String = pg
        .query_one("SELECT content_hash FROM barecount.dataset_versions WHERE dataset = 'sales' AND version = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        receipt.source_content_hash.as_deref(),
        Some(v1_hash.as_str())
    );
    assert_eq!(receipt.source, "dataset:sales@v1");

    // CSV of a query; Arrow IPC of the latest version.
    let receipt = client::export(
        url,
        auth,
        &req(
            None,
            Some("SELECT region, count(*) AS n FROM sales__v1 GROUP BY region ORDER BY region"),
            Format::Csv,
        ),
        |_, _| {},
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&receipt.path).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["region,n", "r0,25000", "r1,25000", "r2,25000", "r3,25000"]
    );
    let receipt = client::export(
        url,
        auth,
        &req(Some("sales"), None, Format::Arrow),
        |_, _| {},
    )
    .await
    .unwrap();
    let f = std::fs::File::open(&receipt.path).unwrap();
    let reader = arrow::ipc::reader::FileReader::try_new(f, None).unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 1);

    // Each export has a ledger receipt naming the file's hash, and is metered.
    let ledger = pg
        .query(
            "SELECT subject, content_hash, seq, entry_hash FROM barecount.ledger WHERE event_type = 'export' ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ledger.len(), 3);
    assert_eq!(ledger[2].get::<_, String>(1), receipt.content_hash);
    assert_eq!(ledger[2].get::<_, i64>(2), receipt.ledger_seq);
    assert_eq!(ledger[2].get::<_, String>(3), receipt.ledger_hash);
    assert_eq!(
        count(
            pg,
            "SELECT events FROM barecount.usage WHERE kind = 'export'"
        )
        .await,
        3
    );

    // Refusals: an existing name, a bad name, an unknown dataset, a token without the export
    // scope, a bad query — and past the daily limit, with nothing left behind.
    let mut again = req(Some("sales"), None, Format::Parquet);
    again.name = Some("sales_v1".into());
    let e = client::export(url, auth, &again, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::AlreadyExists, "{e:#}");
    assert!(format!("{e:#}").contains("exists"), "{e:#}");
    let e = client::export(url, auth, &req(Some("nope"), None, Format::Csv), |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::NotFound, "{e:#}");
    let e = client::export(
        url,
        auth,
        &req(None, Some("SELECT nope FROM sales"), Format::Csv),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Code::InvalidArgument, "{e:#}");
    let reader_only = Auth::Token(api_token(pg, "default", &["read"]).await);
    let e = client::export(
        url,
        &reader_only,
        &req(Some("sales"), None, Format::Csv),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e:#}");
    let mut plain = client::plain_client(url, &flight.token).await.unwrap();
    let s = plain
        .do_action(arrow_flight::Action::new(
            "export",
            br#"{"dataset":"sales","format":"csv","name":"../x"}"#.to_vec(),
        ))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let actions: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(
        plain
            .list_actions(arrow_flight::Empty {})
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|a| a.r#type)
    .collect();
    assert!(actions.contains(&"export".to_owned()), "{actions:?}");

    pg.batch_execute("SELECT barecount.entitlement_set('default', '{\"max_exports_per_day\": 3}')")
        .await
        .unwrap();
    let mut over = req(Some("sales"), None, Format::Csv);
    over.name = Some("over_the_limit".into());
    let e = client::export(url, auth, &over, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::ResourceExhausted, "{e:#}");
    let left: Vec<_> = std::fs::read_dir(dir.join("default"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        3,
        "no file from the refused export, no temporary files: {left:?}"
    );
    flight.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The CLI against the standalone server `make test` starts.
#[tokio::test]
async fn the_cli_exports_with_a_receipt() {
    let pg = connect(&base_url()).await;
    let name = format!("cli_export_{:08x}", rand::rng().random::<u32>());
    pg.query(
        "SELECT * FROM barecount.publish($1, 'SELECT g::bigint AS n FROM generate_series(1, 70000) g')",
        &[&name],
    )
    .await
    .unwrap();
    let token = api_token(&pg, "default", &["read", "export"]).await;
    let url = standalone_flight_url();
    let stdout = cli_ok(
        &[
            "export",
            "--url",
            &url,
            "--dataset",
            &name,
            "--format",
            "csv",
        ],
        &[("BARECOUNT_TOKEN", &token)],
    )
    .await;
    assert!(
        stdout.contains(&format!("exported dataset:{name}@v1 (70000 rows")),
        "{stdout}"
    );
    assert!(stdout.contains("ledger receipt #"), "{stdout}");
    let path = stdout
        .split(" to ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim();
    assert_eq!(
        std::fs::read_to_string(path).unwrap().lines().count(),
        70_001
    );
    // Without credentials the CLI says what to pass.
    let out = tokio::process::Command::new(flight_bin())
        .args([
            "export",
            "--url",
            &standalone_flight_url(),
            "--dataset",
            &name,
        ])
        .env_remove("BARECOUNT_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_keep_null_and_the_empty_string_apart() {
    let db = fresh_db().await;
    db.client
        .batch_execute("SELECT barecount.publish('sales', 'SELECT 1 AS n')")
        .await
        .unwrap();
    let mut config = Config::local(&db.url);
    config.export_dir = temp_dir("csv-exports");
    let flight = Flight::start_with(config).await;
    let (url, auth) = (flight.url.as_str(), &flight.auth);
    // NULL and the empty string stay apart (Postgres's CSV convention): NULL is an empty
    // unquoted field, '' is ""
    let receipt = client::export(
        url,
        auth,
        &req(
            None,
            Some("SELECT CAST(NULL AS VARCHAR) AS a, '' AS b, 'x,y' AS c, 'say \"hi\"' AS d FROM sales"),
            Format::Csv,
        ),
        |_, _| {},
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&receipt.path).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["a,b,c,d", r#","","x,y","say ""hi""""#]
    );
    flight.stop().await;
}

/// Display strings of every cell, row by row, for comparing what different readers got.
fn cells(batches: &[arrow::record_batch::RecordBatch]) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        (!c.is_null(r))
                            .then(|| arrow::util::display::array_value_to_string(c, r).unwrap())
                    })
                    .collect(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_type_reads_back_over_flight_and_in_every_export_format() {
    use arrow::datatypes::DataType;
    let db = fresh_db().await;
    let n100 = format!("{}.125", "9".repeat(97));
    db.client
        .batch_execute(&format!(
            "CREATE TEMP TABLE typed (
                 id bigint NOT NULL, label text NOT NULL, note text,
                 n38 numeric(38,10), n60 numeric(60,10), n100 numeric(100,3), free numeric, huge numeric,
                 iv interval, arr int[], j jsonb, js json, u uuid, b bytea, d date, ts timestamptz);
             INSERT INTO typed VALUES
               (1, 'a', '', 1234567890123456789012345678.1234567891,
                12345678901234567890123456789012345678901234567890.0123456789, {n100}, 1.5, 1e80,
                '1 day 02:03:04', '{{1,2,3}}', '{{\"a\": [1, {{\"b\": null}}]}}', '{{\"x\":1}}',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x0102ff', '2024-02-29', '2024-01-01 12:00:00+00'),
               (2, 'b', NULL, NULL, NULL, NULL, 12345678901234567890.123456789, NULL,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
             SELECT barecount.publish('typed', 'typed');
             -- through a query too: an outer join can bring NULL under a NOT NULL column
             SELECT barecount.publish('joined', $$SELECT t.id, o.label FROM typed t
                                                   LEFT JOIN typed o ON o.id = t.id AND o.id = 1$$);"
        ))
        .await
        .unwrap();
    let mut config = Config::local(&db.url);
    config.export_dir = temp_dir("typed-exports");
    let flight = Flight::start_with(config).await;
    let (url, auth) = (flight.url.as_str(), &flight.auth);

    let (schema, batches) = client::query(url, auth, "SELECT * FROM typed ORDER BY id")
        .await
        .unwrap();
    let field = |n: &str| schema.field_with_name(n).unwrap().clone();
    // NOT NULL survives into the Arrow schema
    assert!(!field("id").is_nullable() && !field("label").is_nullable());
    assert!(field("note").is_nullable() && field("n38").is_nullable());
    // numerics at full precision, and the schema says how each is carried
    let carried = |n: &str| field(n).metadata().get("barecount.numeric").cloned();
    assert_eq!(field("n38").data_type(), &DataType::Decimal128(38, 10));
    assert_eq!(field("n60").data_type(), &DataType::Decimal256(60, 10));
    assert_eq!(carried("n60").as_deref(), Some("decimal256"));
    assert_eq!(field("n100").data_type(), &DataType::Utf8);
    assert_eq!(carried("n100").as_deref(), Some("text"));
    assert_eq!(field("free").data_type(), &DataType::Decimal128(29, 9));
    assert_eq!(carried("free").as_deref(), Some("decimal128"));
    assert_eq!(field("huge").data_type(), &DataType::Utf8);
    assert_eq!(
        field("iv")
            .metadata()
            .get("barecount.pg_type")
            .map(String::as_str),
        Some("interval")
    );
    let got = cells(&batches);
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        got[0],
        vec![
            s("1"),
            s("a"),
            s(""),
            s("1234567890123456789012345678.1234567891"),
            s("12345678901234567890123456789012345678901234567890.0123456789"),
            s(&n100),
            s("1.500000000"),
            s(&format!("1{}", "0".repeat(80))),
            s("1 day 02:03:04"),
            s("{1,2,3}"),
            s(r#"{"a": [1, {"b": null}]}"#),
            s(r#"{"x":1}"#),
            s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            s("\\x0102ff"),
            s("2024-02-29"),
            s("2024-01-01T12:00:00Z"),
        ]
    );
    assert_eq!(got[1][2], None, "NULL stays NULL");
    assert_eq!(got[1][6], s("12345678901234567890.123456789"));

    // a NOT NULL column read through an outer join that brought a NULL stays nullable
    let (joined, _) = client::query(url, auth, "SELECT * FROM joined")
        .await
        .unwrap();
    assert!(!joined.field_with_name("id").unwrap().is_nullable());
    assert!(joined.field_with_name("label").unwrap().is_nullable());

    // every export format holds the same values and types
    let mut from_files = Vec::new();
    for format in [Format::Parquet, Format::Arrow, Format::Csv] {
        let receipt = client::export(url, auth, &req(Some("typed"), None, format), |_, _| {})
            .await
            .unwrap();
        assert_eq!(receipt.rows, 2);
        let file = std::fs::File::open(&receipt.path).unwrap();
        match format {
            Format::Parquet => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
                let file_schema = reader.schema().clone();
                assert_eq!(
                    file_schema.field_with_name("n60").unwrap().data_type(),
                    &DataType::Decimal256(60, 10)
                );
                assert!(!file_schema.field_with_name("id").unwrap().is_nullable());
                let b: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
                from_files.push(("parquet", cells(&b)));
            }
            Format::Arrow => {
                let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
                assert_eq!(
                    reader.schema().field_with_name("n60").unwrap().data_type(),
                    &DataType::Decimal256(60, 10)
                );
                let b: Vec<_> = reader.map(Result::unwrap).collect();
                from_files.push(("arrow", cells(&b)));
            }
            Format::Csv => {
                let text = std::fs::read_to_string(&receipt.path).unwrap();
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(
                    lines[0],
                    "id,label,note,n38,n60,n100,free,huge,iv,arr,j,js,u,b,d,ts"
                );
                assert!(lines[1].starts_with(
                    "1,a,\"\",1234567890123456789012345678.1234567891,12345678901234567890123456789012345678901234567890.0123456789,"
                ), "{}", lines[1]);
                assert!(
                    lines[1].contains(r#","{""a"": [1, {""b"": null}]}","#),
                    "{}",
                    lines[1]
                );
                assert!(
                    lines[2].starts_with("2,b,,,,,12345678901234567890.123456789,"),
                    "{}",
                    lines[2]
                );
            }
        }
    }
    for (format, rows) in from_files {
        let mut rows = rows;
        rows.sort();
        assert_eq!(rows, got, "{format} export differs from what Flight serves");
    }
    flight.stop().await;
}
