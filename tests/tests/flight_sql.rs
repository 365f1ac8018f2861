//! barecount-flight as real clients use it, through the Rust arrow-flight clients: the
//! handshake and every credential kind, tenant isolation, tickets, prepared statements with
//! parameters, GetSchema, GetSqlInfo, GetTables metadata and GetPrimaryKeys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::TicketStatementQuery;
use arrow_flight::sql::{CommandGetPrimaryKeys, CommandGetTables, ProstMessageExt, SqlInfo};
use arrow_flight::{Criteria, FlightDescriptor, FlightInfo, Ticket};
use barecount_flight::client::{self, Auth};
use barecount_flight::ticket::{TicketClaims, TicketQuery, TicketSigner};
use barecount_flight::{Application, Config};
use barecount_tests::{api_token, code_of, fresh_db, login_role, Flight};
use futures::TryStreamExt;
use prost::Message;
use std::sync::Arc;
use tonic::Code;

async fn rows_of(
    c: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for e in info.endpoint {
        let mut got: Vec<RecordBatch> = c
            .do_get(e.ticket.unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        out.append(&mut got);
    }
    out
}

fn total(b: &[RecordBatch]) -> usize {
    b.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_authenticated_and_tenants_never_meet() {
    let db = fresh_db().await;
    let su = &db.superuser;
    su.batch_execute(
        "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('globex', 'Globex');
         SELECT barecount.act_as_tenant('acme');
         SELECT barecount.publish('acme_n', 'SELECT g AS n FROM generate_series(1, 5) g');
         SELECT barecount.act_as_tenant('globex');
         SELECT barecount.publish('globex_n', 'SELECT g AS n FROM generate_series(1, 7) g');",
    )
    .await
    .unwrap();
    let flight = Flight::start(&db.url).await;
    let url = &flight.url;

    // No credentials, a malformed header, an unknown or bad token: Unauthenticated, every call.
    let mut anon = FlightSqlServiceClient::new(client::channel(url).await.unwrap());
    let e = anon.execute("SELECT 1".into(), None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e}");
    let mut plain_anon = arrow_flight::flight_service_client::FlightServiceClient::new(
        client::channel(url).await.unwrap(),
    );
    let s = plain_anon
        .list_flights(Criteria::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("Handshake"), "{}", s.message());
    for bad in ["bct_nope_nope", "bcs.eyJ4IjoxfQ.00", "whatever"] {
        let mut c = client::plain_client(url, bad).await.unwrap();
        let s = c.list_flights(Criteria::default()).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{bad}: {s}");
    }

    // An API token of acme sees acme only, through every path.
    let acme_token = api_token(su, "acme", &["read"]).await;
    let acme = Auth::Token(acme_token.clone());
    let listed: Vec<String> = client::list(url, &acme)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.dataset)
        .collect();
    assert_eq!(listed, ["acme_n"]);
    let (_, b) = client::query(url, &acme, "SELECT sum(n) FROM acme_n")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 15);
    for sql in ["SELECT * FROM globex_n", "SELECT * FROM globex_n__v1"] {
        let e = client::query(url, &acme, sql).await.unwrap_err();
        assert!(format!("{e:#}").contains("globex_n"), "{e:#}");
    }
    let mut acme_plain = client::plain_client(url, &acme_token).await.unwrap();
    let s = acme_plain
        .get_flight_info(FlightDescriptor::new_path(vec!["globex_n".into()]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let mut acme_sql = client::sql_client(url, &acme).await.unwrap();
    let tables = acme_sql
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let tables = rows_of(&mut acme_sql, tables).await;
    let names: Vec<&str> = tables[0]
        .column(2)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(names, ["acme_n", "acme_n__v1"]);

    // A ticket of globex is refused to acme even though it is validly signed.
    let globex = Auth::Token(api_token(su, "globex", &["read"]).await);
    let mut globex_sql = client::sql_client(url, &globex).await.unwrap();
    let info = globex_sql
        .execute("SELECT * FROM globex_n".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let s = acme_sql
        .do_get(ticket.clone())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code_of(&s), Code::PermissionDenied, "{s}");
    assert_eq!(total(&rows_of(&mut globex_sql, info).await), 7);

    // Revoked and expired API tokens stop working at once.
    let doomed = api_token(su, "acme", &["read"]).await;
    let doomed_id = doomed.split('_').nth(1).unwrap().to_owned();
    client::list(url, &Auth::Token(doomed.clone()))
        .await
        .unwrap();
    su.execute("SELECT barecount.token_revoke($1)", &[&doomed_id])
        .await
        .unwrap();
    let e = client::list(url, &Auth::Token(doomed)).await.unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");
    let old = api_token(su, "acme", &["read"]).await;
    let old_id = old.split('_').nth(1).unwrap().to_owned();
    su.execute(
        "UPDATE barecount.tokens SET expires_at = now() - interval '1 second' WHERE token_id = $1",
        &[&old_id],
    )
    .await
    .unwrap();
    let e = client::list(url, &Auth::Token(old)).await.unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");

    // Basic credentials: a login role's own password, exchanged for a session token.
    let alice = login_role(su, "alice", &["barecount_reader"], Some("acme")).await;
    su.batch_execute(&format!("ALTER ROLE {alice} PASSWORD 'correct horse'"))
        .await
        .unwrap();
    let alice_auth = Auth::Password {
        user: alice.clone(),
        password: "correct horse".into(),
    };
    let session = client::bearer(url, &alice_auth).await.unwrap();
    assert!(session.starts_with("bcs."), "{session}");
    let listed = client::list(url, &Auth::Token(session.clone()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].dataset, "acme_n");
    let (_, b) = client::query(url, &alice_auth, "SELECT count(*) FROM acme_n")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 5);
    for (user, password) in [
        (alice.as_str(), "wrong"),
        ("nobody_at_all", "x"),
        (alice.as_str(), ""),
    ] {
        let e = client::bearer(
            url,
            &Auth::Password {
                user: user.into(),
                password: password.into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), Code::Unauthenticated, "{user}: {e:#}");
    }
    // A role without a tenant cannot log in, even with the right password.
    let loner = login_role(su, "loner", &["barecount_reader"], None).await;
    su.batch_execute(&format!("ALTER ROLE {loner} PASSWORD 'pw'"))
        .await
        .unwrap();
    let e = client::bearer(
        url,
        &Auth::Password {
            user: loner,
            password: "pw".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");
    // An API token works as the Basic password too (for clients that only speak user/password).
    let via_basic = client::bearer(
        url,
        &Auth::Password {
            user: "token".into(),
            password: acme_token.clone(),
        },
    )
    .await
    .unwrap();
    assert!(via_basic.starts_with("bcs."));
    // A session token tampered to name another tenant is refused.
    let (payload, sig) = session.trim_start_matches("bcs.").rsplit_once('.').unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(b64.decode(payload).unwrap())
        .unwrap()
        .replace("\"acme\"", "\"globex\"");
    let forged = format!("bcs.{}.{sig}", b64.encode(claims));
    let e = client::list(url, &Auth::Token(forged)).await.unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e:#}");

    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_tickets_are_refused() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "SELECT barecount.publish('t', 'SELECT g AS n FROM generate_series(1, 3) g')",
        )
        .await
        .unwrap();
    let mut config = Config::local(&db.url);
    config.ticket_secret = Some("a shared secret".into());
    let app = Application::build(config).await.unwrap();
    let url = format!("http://{}", app.addr());
    let server = tokio::spawn(app.run_until_stopped());
    let auth = Auth::Token(api_token(&db.client, "default", &["read"]).await);
    let mut c = client::sql_client(&url, &auth).await.unwrap();

    let ticket_for = |t: String| {
        Ticket::new(
            TicketStatementQuery {
                statement_handle: t.into_bytes().into(),
            }
            .as_any()
            .encode_to_vec(),
        )
    };
    let sql = TicketQuery::Sql {
        sql: "SELECT * FROM t".into(),
        params: None,
    };
    // Signed with the server's secret and in date: served (the control).
    let good = TicketSigner::new(b"a shared secret".to_vec(), 60, 60)
        .sign("default", sql.clone())
        .unwrap();
    let b: Vec<RecordBatch> = c
        .do_get(ticket_for(good))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(total(&b), 3);
    // Signed with the right secret but expired.
    let expired = TicketSigner::new(b"a shared secret".to_vec(), 60, 60)
        .sign_claims(&TicketClaims {
            tenant: "default".into(),
            query: sql.clone(),
            exp: 1,
        })
        .unwrap();
    let e = c.do_get(ticket_for(expired)).await.map(|_| ()).unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated);
    assert!(e.to_string().contains("expired"), "{e}");
    // Signed with another secret.
    let forged = TicketSigner::new(b"guess".to_vec(), 60, 60)
        .sign("default", sql)
        .unwrap();
    let e = c.do_get(ticket_for(forged)).await.map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
    // Garbage.
    let e = c
        .do_get(Ticket::new(b"not a ticket".to_vec()))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code_of(&e), Code::InvalidArgument, "{e}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters_and_describe_results() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "SELECT barecount.publish('sales', $$SELECT g::bigint AS id, (ARRAY['east','west'])[1 + g % 2] AS region,
                                               (g * 1.5)::numeric(10,2) AS amount
                                          FROM generate_series(1, 100) g$$)",
        )
        .await
        .unwrap();
    let flight = Flight::start(&db.url).await;
    let mut c = client::sql_client(&flight.url, &flight.auth).await.unwrap();

    // qmark parameters, as ADBC and DB-API clients write them.
    let mut stmt = c
        .prepare(
            "SELECT id, region, amount FROM sales WHERE region = ? AND id <= ? ORDER BY id".into(),
            None,
        )
        .await
        .unwrap();
    let ds = stmt.dataset_schema().unwrap().clone();
    let names: Vec<&str> = ds.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["id", "region", "amount"],
        "prepared SELECTs describe their result"
    );
    assert_eq!(ds.field(2).data_type(), &DataType::Decimal128(10, 2));
    assert_eq!(stmt.parameter_schema().unwrap().fields().len(), 2);
    let params = RecordBatch::try_from_iter(vec![
        ("p1", Arc::new(StringArray::from(vec!["east"])) as _),
        ("p2", Arc::new(Int64Array::from(vec![10])) as _),
    ])
    .unwrap();
    stmt.set_parameters(params).unwrap();
    let info = stmt.execute().await.unwrap();
    let advertised = info.clone().try_decode_schema().unwrap();
    let b = rows_of(&mut c, info).await;
    assert_eq!(
        b[0].schema().as_ref(),
        &advertised,
        "stream schema = advertised schema"
    );
    let ids: Vec<i64> = b
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, [2, 4, 6, 8, 10]);
    // Rebinding runs the same statement with new values.
    let params = RecordBatch::try_from_iter(vec![
        ("p1", Arc::new(StringArray::from(vec!["west"])) as _),
        ("p2", Arc::new(Int64Array::from(vec![4])) as _),
    ])
    .unwrap();
    stmt.set_parameters(params).unwrap();
    let info = stmt.execute().await.unwrap();
    assert_eq!(total(&rows_of(&mut c, info).await), 2);
    stmt.close().await.unwrap();

    // Without parameters bound, executing says what is missing.
    let mut unbound = c
        .prepare("SELECT * FROM sales WHERE id = $1".into(), None)
        .await
        .unwrap();
    let e = unbound.execute().await.unwrap_err();
    assert!(e.to_string().contains("bind"), "{e}");
    // A parameter of the wrong kind is InvalidArgument, naming it.
    let params =
        RecordBatch::try_from_iter(vec![("p1", Arc::new(StringArray::from(vec!["abc"])) as _)])
            .unwrap();
    unbound.set_parameters(params).unwrap();
    let e = unbound.execute().await.unwrap_err();
    assert_eq!(code_of(&e), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("$1"), "{e}");
    // A bad statement fails at prepare.
    let e = c
        .prepare("SELECT nope FROM sales".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::InvalidArgument, "{e}");

    // GetSchema: for a path, a statement and a prepared statement.
    let mut plain = client::plain_client(&flight.url, &flight.token)
        .await
        .unwrap();
    let by_path = plain
        .get_schema(FlightDescriptor::new_path(vec!["sales".into(), "1".into()]))
        .await
        .unwrap()
        .into_inner();
    let by_path: arrow::datatypes::Schema = (&by_path).try_into().unwrap();
    assert_eq!(by_path.fields().len(), 3);
    let cmd = arrow_flight::sql::CommandStatementQuery {
        query: "SELECT count(*) AS n FROM sales".into(),
        transaction_id: None,
    };
    let by_sql = plain
        .get_schema(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
        .await
        .unwrap()
        .into_inner();
    let by_sql: arrow::datatypes::Schema = (&by_sql).try_into().unwrap();
    assert_eq!(by_sql.field(0).name(), "n");
    let e = plain
        .get_schema(FlightDescriptor::new_path(vec!["nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_complete() {
    let db = fresh_db().await;
    db.client
        .batch_execute("SELECT barecount.publish('m', 'SELECT 1::int AS x, ''a''::text AS y, 2.5::numeric(6,2) AS z')")
        .await
        .unwrap();
    let flight = Flight::start(&db.url).await;
    let mut c = client::sql_client(&flight.url, &flight.auth).await.unwrap();

    let types = c
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    assert_eq!(
        total(&rows_of(&mut c, types).await),
        10,
        "one row per served SQL type"
    );
    let catalogs = c.get_catalogs().await.unwrap();
    assert_eq!(total(&rows_of(&mut c, catalogs).await), 1);
    let schemas = c
        .get_db_schemas(arrow_flight::sql::CommandGetDbSchemas {
            catalog: Some("barecount".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = rows_of(&mut c, schemas).await;
    assert_eq!(total(&schemas), 1);
    assert_eq!(
        schemas[0].column(1).as_string::<i32>().value(0),
        "published"
    );
    let table_types = c.get_table_types().await.unwrap();
    assert_eq!(total(&rows_of(&mut c, table_types).await), 1);
    let all_tables = c
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total(&rows_of(&mut c, all_tables).await), 2, "m and m__v1");

    let all = c.get_sql_info(vec![]).await.unwrap();
    let info = rows_of(&mut c, all).await;
    assert!(
        total(&info) >= 80,
        "GetSqlInfo answers every standard id, got {}",
        total(&info)
    );
    let ids: Vec<u32> = info
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
                .to_vec()
        })
        .collect();
    for id in [
        SqlInfo::FlightSqlServerName,
        SqlInfo::SqlIdentifierQuoteChar,
        SqlInfo::SqlKeywords,
        SqlInfo::SqlSupportedGrammar,
        SqlInfo::SqlTransactionsSupported,
    ] {
        assert!(ids.contains(&(id as u32)), "{id:?}");
    }

    let tables = c
        .get_tables(CommandGetTables {
            include_schema: true,
            table_name_filter_pattern: Some("m".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let tables = rows_of(&mut c, tables).await;
    assert_eq!(total(&tables), 1);
    let schema_bytes = tables[0].column(4).as_binary::<i32>().value(0).to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).unwrap();
    let z = schema.field_with_name("z").unwrap();
    let meta = z.metadata();
    assert_eq!(
        meta.get("ARROW:FLIGHT:SQL:TYPE_NAME").map(String::as_str),
        Some("numeric(6,2)")
    );
    assert_eq!(
        meta.get("ARROW:FLIGHT:SQL:PRECISION").map(String::as_str),
        Some("6")
    );
    assert_eq!(
        meta.get("ARROW:FLIGHT:SQL:SCALE").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        meta.get("ARROW:FLIGHT:SQL:TABLE_NAME").map(String::as_str),
        Some("m")
    );
    assert_eq!(
        meta.get("ARROW:FLIGHT:SQL:IS_READ_ONLY")
            .map(String::as_str),
        Some("1")
    );

    let pk = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "m".into(),
        })
        .await
        .unwrap();
    let pk_schema = pk.clone().try_decode_schema().unwrap();
    assert_eq!(pk_schema.field(2).name(), "table_name");
    assert_eq!(
        total(&rows_of(&mut c, pk).await),
        0,
        "published snapshots declare no keys"
    );
    let e = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "absent".into(),
        })
        .await;
    let e = match e {
        Ok(info) => c
            .do_get(info.endpoint[0].ticket.clone().unwrap())
            .await
            .map(|_| ())
            .unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(code_of(&e), Code::NotFound, "{e}");
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_succeeds_as_adbc_expects() {
    let db = fresh_db().await;
    let flight = Flight::start(&db.url).await;
    let mut plain = client::plain_client(&flight.url, &flight.token)
        .await
        .unwrap();
    let results: Vec<arrow_flight::Result> = futures::TryStreamExt::try_collect(
        plain
            .do_action(arrow_flight::Action::new("CloseSession", Vec::new()))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    // CloseSessionResult { status: CLOSED }
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].body.as_ref(), &[0x08, 0x01]);
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_precision_numerics_read_back_exactly() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "SELECT barecount.publish('wide', $$SELECT 1234567890123456789012345678.1234567891::numeric(38,10) AS big,
                                                       999999999999999999999999999999999999.99::numeric(38,2) AS largest,
                                                       (-0.0000000005)::numeric(38,10) AS tiny$$)",
        )
        .await
        .unwrap();
    let flight = Flight::start(&db.url).await;
    let (_, batches) = client::query(
        &flight.url,
        &flight.auth,
        "SELECT big, largest, tiny FROM wide",
    )
    .await
    .unwrap();
    let b = &batches[0];
    let text = |i: usize| arrow::util::display::array_value_to_string(b.column(i), 0).unwrap();
    assert_eq!(text(0), "1234567890123456789012345678.1234567891");
    assert_eq!(text(1), "999999999999999999999999999999999999.99");
    assert_eq!(text(2), "-0.0000000005");
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_schema_and_show_tables_list_the_tenants_own_datasets() {
    let db = fresh_db().await;
    let su = &db.client;
    su.batch_execute(
        "SELECT barecount.tenant_create('acme', 'Acme');
         SELECT barecount.publish('mine', 'SELECT 1::bigint AS n, ''x''::text AS label');
         SELECT barecount.act_as_tenant('acme');
         SELECT barecount.publish('theirs', 'SELECT 1 AS secret');
         SELECT barecount.act_as_tenant(NULL);",
    )
    .await
    .unwrap();
    let flight = Flight::start(&db.url).await;
    let texts = |b: &[RecordBatch], col: usize| -> Vec<String> {
        b.iter()
            .flat_map(|b| {
                (0..b.num_rows())
                    .map(|i| arrow::util::display::array_value_to_string(b.column(col), i).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (_, b) = client::query(
        &flight.url,
        &flight.auth,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'published' ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(texts(&b, 0), ["mine", "mine__v1"]);
    let (_, b) = client::query(
        &flight.url,
        &flight.auth,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'mine' ORDER BY ordinal_position",
    )
    .await
    .unwrap();
    assert_eq!(texts(&b, 0), ["n", "label"]);
    let (_, b) = client::query(&flight.url, &flight.auth, "SHOW TABLES")
        .await
        .unwrap();
    let all = texts(&b, 2);
    assert!(all.contains(&"mine".to_owned()), "{all:?}");
    assert!(!all.iter().any(|t| t.contains("theirs")), "{all:?}");
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executemany_and_session_options_refuse_what_they_must() {
    let db = fresh_db().await;
    db.client
        .batch_execute("SELECT barecount.publish('sales', 'SELECT g::bigint AS id FROM generate_series(1, 10) g')")
        .await
        .unwrap();
    let flight = Flight::start(&db.url).await;
    let mut c = client::sql_client(&flight.url, &flight.auth).await.unwrap();
    // executemany (DoPut of a prepared update): runs each row, updates nothing, reports 0
    let mut stmt = c
        .prepare("SELECT id FROM sales WHERE id = ?".into(), None)
        .await
        .unwrap();
    let rows =
        RecordBatch::try_from_iter(vec![("p1", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)])
            .unwrap();
    stmt.set_parameters(rows).unwrap();
    assert_eq!(stmt.execute_update().await.unwrap(), 0);
    // hostile input: a row that fails is reported, with its parameter
    let mut div = c
        .prepare("SELECT 10 / ? AS q FROM sales".into(), None)
        .await
        .unwrap();
    let rows =
        RecordBatch::try_from_iter(vec![("p1", Arc::new(Int64Array::from(vec![1, 0])) as _)])
            .unwrap();
    div.set_parameters(rows).unwrap();
    let e = div.execute_update().await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("zero"), "{e}");
    // writing statements never get a handle to executemany with
    let e = c
        .prepare("INSERT INTO sales VALUES (?)".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");

    // session options: only with a valid credential
    let mut bogus = client::plain_client(&flight.url, "bct_bogus")
        .await
        .unwrap();
    for action in ["GetSessionOptions", "SetSessionOptions"] {
        let s = bogus
            .do_action(arrow_flight::Action::new(action, Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{action}: {s}");
    }
    // a body that is not a SetSessionOptionsRequest is InvalidArgument
    let mut plain = client::plain_client(&flight.url, &flight.token)
        .await
        .unwrap();
    let s = plain
        .do_action(arrow_flight::Action::new(
            "SetSessionOptions",
            vec![0xff, 0xff, 0xff],
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s}");
    flight.stop().await;
}

/// `SELECT * FROM <dataset>` over a version already in the store is served straight from it
/// over several endpoints (clients fetch them in parallel); anything else, or a version not yet
/// loaded, is one stream. Either way the rows are the same, and the endpoints' tickets are the
/// tenant's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_versions_are_served_over_parallel_endpoints_once_stored() {
    let db = fresh_db().await;
    let su = &db.superuser;
    su.batch_execute(
        "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('globex', 'Globex');
         SELECT barecount.act_as_tenant('acme');
         SELECT barecount.publish('big', 'SELECT g::bigint AS id, g % 7 AS k, ''r'' || (g % 3) AS r FROM generate_series(1, 300000) g');",
    )
    .await
    .unwrap();
    let mut config = Config::local(&db.url);
    config.endpoint_rows = 65_536;
    let flight = Flight::start_with(config).await;
    let acme = Auth::Token(api_token(su, "acme", &["read"]).await);
    let mut c = client::sql_client(&flight.url, &acme).await.unwrap();
    let ids = |b: &[RecordBatch]| -> Vec<i64> {
        let mut v: Vec<i64> = b
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        v.sort_unstable();
        v
    };
    let expected: Vec<i64> = (1..=300_000).collect();

    // not stored yet: one stream, served while the version loads
    let cold = c.execute("SELECT * FROM big".into(), None).await.unwrap();
    assert_eq!(cold.endpoint.len(), 1);
    assert_eq!(ids(&rows_of(&mut c, cold).await), expected);

    // stored now: one endpoint per 65,536 rows, together every row once, each with the schema
    let warm = c.execute("SELECT * FROM big".into(), None).await.unwrap();
    assert_eq!(warm.endpoint.len(), 5, "{warm:?}");
    assert_eq!(warm.total_records, 300_000);
    let schema = warm.clone().try_decode_schema().unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "k", "r"]);
    let mut parts = Vec::new();
    for e in &warm.endpoint {
        let got: Vec<RecordBatch> = c
            .do_get(e.ticket.clone().unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(got.iter().all(|b| b.schema().fields() == schema.fields()));
        parts.push(got);
    }
    assert_eq!(ids(&parts.concat()), expected);
    // the same columns named in order, or a pinned version: also whole
    for sql in [
        "SELECT id, k, r FROM big",
        "SELECT * FROM big__v1",
        "SELECT b.* FROM big b",
    ] {
        let info = c.execute(sql.into(), None).await.unwrap();
        assert_eq!(info.endpoint.len(), 5, "{sql}");
    }
    // anything else is one stream with its own answer
    for (sql, rows) in [
        ("SELECT id FROM big", 300_000),
        ("SELECT k, id, r FROM big", 300_000),
        ("SELECT * FROM big LIMIT 10", 10),
        ("SELECT * FROM big WHERE k = 0", 42_857),
        ("SELECT * FROM big ORDER BY id", 300_000),
        ("SELECT id AS k, k AS id, r FROM big", 300_000),
    ] {
        let info = c.execute(sql.into(), None).await.unwrap();
        assert_eq!(info.endpoint.len(), 1, "{sql}");
        assert_eq!(total(&rows_of(&mut c, info).await), rows, "{sql}");
    }
    // a dataset named like an information_schema table does not stand in for it
    su.batch_execute("SELECT barecount.act_as_tenant('acme'); SELECT barecount.publish('tables', 'SELECT 1 AS x')")
        .await
        .unwrap();
    let c2 = &mut client::sql_client(&flight.url, &acme).await.unwrap();
    let info = c2
        .execute("SELECT * FROM tables".into(), None)
        .await
        .unwrap();
    assert_eq!(total(&rows_of(c2, info).await), 1);
    let info = c2
        .execute("SELECT * FROM information_schema.tables".into(), None)
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(0).name(), "table_catalog");
    assert!(total(&rows_of(c2, info).await) > 1);

    // another tenant can use none of the endpoints
    let globex = Auth::Token(api_token(su, "globex", &["read"]).await);
    let mut g = client::sql_client(&flight.url, &globex).await.unwrap();
    for e in &warm.endpoint {
        let s = g
            .do_get(e.ticket.clone().unwrap())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(code_of(&s), Code::PermissionDenied, "{s}");
    }
    let e = g
        .execute("SELECT * FROM big".into(), None)
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("big"), "{e}");

    // a revoked token can use neither the statement nor endpoints it was handed before
    let doomed = api_token(su, "acme", &["read"]).await;
    let doomed_id = doomed.split('_').nth(1).unwrap().to_owned();
    let mut d = client::sql_client(&flight.url, &Auth::Token(doomed))
        .await
        .unwrap();
    let handed = d.execute("SELECT * FROM big".into(), None).await.unwrap();
    assert_eq!(handed.endpoint.len(), 5);
    su.execute("SELECT barecount.token_revoke($1)", &[&doomed_id])
        .await
        .unwrap();
    let s = d
        .do_get(handed.endpoint[0].ticket.clone().unwrap())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code_of(&s), Code::Unauthenticated, "{s}");
    let e = d
        .execute("SELECT * FROM big".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::Unauthenticated, "{e}");
    flight.stop().await;
}
