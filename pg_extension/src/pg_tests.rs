//! `#[pg_test]`s: the SQL surface inside a real Postgres, one transaction per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    const ORDERS: &str = include_str!("../../contracts/orders.yaml");

    fn register_orders() {
        Spi::run_with_args("SELECT barecount.contract_register($1)", &[ORDERS.into()]).unwrap();
    }

    fn sqlstate_of(query: &str) -> String {
        // Run in a subtransaction via a DO block and report the SQLSTATE it raised.
        let q = query.replace('\'', "''");
        Spi::get_one::<String>(&format!("SELECT barecount_test_sqlstate('{q}')"))
            .unwrap()
            .unwrap_or_default()
    }

    fn install_sqlstate_helper() {
        Spi::run(
            "CREATE OR REPLACE FUNCTION barecount_test_sqlstate(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .unwrap();
    }

    /// A random JSON document: nested objects and arrays, escaped and non-ASCII strings,
    /// integers, decimals and exponents (some beyond double precision).
    fn random_doc(next: &mut impl FnMut() -> u64, depth: u32) -> String {
        let pick = next() % if depth == 0 { 4 } else { 6 };
        match pick {
            0 => ["null", "true", "false"][(next() % 3) as usize].to_owned(),
            1 => match next() % 5 {
                0 => format!("{}", next() as i64),
                1 => format!("{}.{}", (next() % 2000) as i64 - 1000, next() % 1000),
                2 => format!("{}e{}", (next() % 9) + 1, (next() % 800) as i64 - 400),
                3 => "1.0".to_owned(),
                _ => format!("{}", next() % 100),
            },
            2 | 3 => {
                let parts = ["a", "\\\"q\\\"", "\\n", "é", "\\u00e9", "✓", " ", "\\\\"];
                let n = next() % 5;
                let s: String = (0..n)
                    .map(|_| parts[(next() % parts.len() as u64) as usize])
                    .collect();
                format!("\"{s}\"")
            }
            4 => {
                let n = next() % 4;
                let items: Vec<String> = (0..n).map(|_| random_doc(next, depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let n = next() % 4;
                let items: Vec<String> = (0..n)
                    .map(|i| format!("\"k{}{i}\": {}", next() % 3, random_doc(next, depth - 1)))
                    .collect();
                format!("{{{}}}", items.join(","))
            }
        }
    }

    /// An array of 40-99 members and an object of 40-79 keys, each a random document.
    fn random_doc_wide(next: &mut impl FnMut() -> u64) -> String {
        let n = 40 + next() % 60;
        let items: Vec<String> = (0..n).map(|_| random_doc(next, 2)).collect();
        let m = 40 + next() % 40;
        let members: Vec<String> = (0..m)
            .map(|i| {
                format!(
                    "\"key{i}{}\": {}",
                    "x".repeat((next() % 9) as usize),
                    random_doc(next, 2)
                )
            })
            .collect();
        format!("[{}, {{{}}}]", items.join(","), members.join(","))
    }

    /// Both readers refused `text` with the same SQLSTATE.
    fn same_refusal(a: &crate::errors::SqlError, b: &crate::errors::SqlError, text: &str) {
        assert_eq!(
            format!("{:?}", a.code),
            format!("{:?}", b.code),
            "{text}: {} / {}",
            a.message,
            b.message
        );
    }

    #[pg_test]
    #[allow(unsafe_code)]
    fn binary_jsonb_reader_agrees_with_the_text_path() {
        // xorshift: deterministic, no dependency
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        let mut docs: Vec<String> =
            vec![deep, "[1e400]".into(), "{\"a\": -1e999}".into(), "7".into()];
        docs.extend((0..3000).map(|_| random_doc(&mut next, 5)));
        // wide containers: offsets stored every 32nd entry
        docs.extend((0..50).map(|_| random_doc_wide(&mut next)));
        for text in docs {
            let c = std::ffi::CString::new(text.clone()).unwrap();
            // SAFETY: jsonb_in takes a cstring and returns a jsonb datum (or raises)
            let datum = unsafe {
                pgrx::direct_function_call_as_datum(
                    pgrx::pg_sys::jsonb_in,
                    &[Some(pgrx::pg_sys::Datum::from(c.as_ptr()))],
                )
            }
            .unwrap();
            // SAFETY: a non-null jsonb datum, just made
            let via_text = unsafe { crate::jsonarg::jsonb_text(datum) }
                .map(|t| crate::jsonarg::parse(&t))
                .unwrap();
            // the in-place reader (barecount_core::jsonb) over the same datum's bytes
            // SAFETY: a non-null jsonb datum, just made
            let held = unsafe {
                <crate::jsonarg::JsonbDatum as pgrx::FromDatum>::from_polymorphic_datum(
                    datum,
                    false,
                    pgrx::pg_sys::JSONBOID,
                )
            }
            .unwrap();
            // what a JsonbArg argument reads (straight to a value, no separate check)
            let binary = crate::jsonarg::jsonb_value(&held);
            let in_place = held.node().and_then(|n| {
                let mut canonical = String::new();
                n.write_canonical(&mut canonical)
                    .map_err(crate::jsonarg::jsonb_error)?;
                Ok((
                    n.to_value().map_err(crate::jsonarg::jsonb_error)?,
                    canonical,
                ))
            });
            match (&in_place, &via_text) {
                (Ok((a, canonical)), Ok(b)) => {
                    assert_eq!(a, b, "{text}");
                    assert_eq!(
                        canonical,
                        &barecount_core::ledger::canonical_json(b),
                        "{text}"
                    );
                }
                (Err(a), Err(b)) => same_refusal(a, b, &text),
                (a, b) => panic!("{text}: in place {a:?}, text {b:?}"),
            }
            match (binary, via_text) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(a), Err(b)) => same_refusal(&a, &b, &text),
                (a, b) => panic!("{text}: binary {a:?}, text {b:?}"),
            }
        }
    }

    #[pg_test]
    fn privileged_sections_refuse_a_superuser_owner() {
        install_sqlstate_helper();
        // ledger_digest() is a privileged section that only reads: no locks other tests wait on
        assert_eq!(sqlstate_of("SELECT * FROM barecount.ledger_digest()"), "ok");
        // a careless admin makes the owner a superuser (rolled back with the test)
        Spi::run("ALTER ROLE barecount_owner SUPERUSER").unwrap();
        assert_eq!(
            sqlstate_of("SELECT * FROM barecount.ledger_digest()"),
            "42501"
        );
        Spi::run("ALTER ROLE barecount_owner NOSUPERUSER").unwrap();
        assert_eq!(sqlstate_of("SELECT * FROM barecount.ledger_digest()"), "ok");
    }

    #[pg_test]
    fn version_is_the_crate_version() {
        assert_eq!(
            Spi::get_one::<String>("SELECT barecount.version()").unwrap(),
            Some(env!("CARGO_PKG_VERSION").to_owned())
        );
    }

    #[pg_test]
    fn schemas_and_catalog_exist_with_comments_and_tenant_id() {
        for s in ["barecount", "raw", "gdp", "kpi", "published"] {
            let c = Spi::get_one_with_args::<String>(
                "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
                &[s.into()],
            )
            .unwrap();
            assert!(c.is_some(), "schema {s} needs a comment");
        }
        let missing = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'barecount' AND c.relkind = 'r'
                AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
                -- by design (0.2.0): flag definitions are the installation's (their per-tenant
                -- values are in flag_overrides), and a redacted ledger entry belongs to no
                -- tenant any more (its tenant was offboarded)
                AND c.relname NOT IN ('flags', 'ledger_redactions')",
        )
        .unwrap();
        assert_eq!(missing, Some(0), "every catalog table carries tenant_id");
        let uncommented = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'barecount' AND obj_description(p.oid, 'pg_proc') IS NULL",
        )
        .unwrap();
        assert_eq!(uncommented, Some(0), "every function has a COMMENT");
    }

    #[pg_test]
    fn every_object_created_along_the_pipeline_has_a_comment() {
        register_orders();
        Spi::run("SELECT barecount.publish('tiny', 'SELECT 1 AS one')").unwrap();
        let uncommented = Spi::get_one::<String>(
            "SELECT string_agg(what, ', ') FROM (
               SELECT n.nspname || '.' || c.relname AS what
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('barecount', 'raw', 'gdp', 'kpi', 'published')
                  AND c.relkind IN ('r', 'v') AND obj_description(c.oid, 'pg_class') IS NULL
               UNION ALL
               SELECT t.tgname || ' on ' || t.tgrelid::regclass::text
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('barecount', 'raw', 'published') AND NOT t.tgisinternal
                  AND obj_description(t.oid, 'pg_trigger') IS NULL) x",
        )
        .unwrap();
        assert_eq!(uncommented, None, "objects without a COMMENT");
    }

    #[pg_test]
    fn register_is_idempotent_and_versions_are_immutable() {
        register_orders();
        let created = Spi::get_one_with_args::<bool>(
            "SELECT created FROM barecount.contract_register($1)",
            &[ORDERS.into()],
        )
        .unwrap();
        assert_eq!(created, Some(false));
        install_sqlstate_helper();
        let changed = ORDERS.replace("minimum: 0", "minimum: 1");
        let q = format!(
            "SELECT barecount.contract_register('{}')",
            changed.replace('\'', "''")
        );
        assert_eq!(sqlstate_of(&q), "42710");
        assert_eq!(
            sqlstate_of("SELECT barecount.contract_register('kind: [')"),
            "22P02"
        );
        assert_eq!(
            sqlstate_of("UPDATE barecount.contracts SET status = 'x'"),
            "2F002"
        );
    }

    #[pg_test]
    fn validation_reports_every_error() {
        register_orders();
        let ok = Spi::get_one::<bool>(
            r#"SELECT barecount.validate('orders', '{"order_id":"A1","order_date":"2024-01-05","store_id":"S1","region":"east","amount":10.5,"quantity":1}')"#,
        )
        .unwrap();
        assert_eq!(ok, Some(true));
        let n = Spi::get_one::<i64>(
            r#"SELECT count(*) FROM barecount.validation_errors('orders', '{"order_date":"2024-02-30","amount":-3}')"#,
        )
        .unwrap();
        assert!(
            n.unwrap_or(0) >= 3,
            "missing order_id, bad date, negative amount: {n:?}"
        );
        install_sqlstate_helper();
        assert_eq!(
            sqlstate_of("SELECT barecount.validate('nope', '{}')"),
            "42704"
        );
    }

    #[pg_test]
    fn ingest_quarantines_and_writes_the_ledger() {
        register_orders();
        let (accepted, quarantined) = Spi::get_two::<i64, i64>(
            r#"SELECT accepted, quarantined FROM barecount.ingest('orders', '[
                {"order_id":"A1","order_date":"2024-01-05","store_id":"S1","region":"east","amount":10.5,"quantity":1},
                {"order_id":"A2","order_date":"2024-01-06","store_id":"S1","region":"east","amount":-1,"quantity":1},
                {"order_id":"A3","order_date":"2024-01-07","store_id":"S2","region":"west","amount":3,"quantity":2}]')"#,
        )
        .unwrap();
        assert_eq!((accepted, quarantined), (Some(2), Some(1)));
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM raw.orders__accepted").unwrap(),
            Some(2)
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT payload->>'order_id' FROM barecount.quarantine")
                .unwrap(),
            Some("A2".into())
        );
        let events = Spi::get_one::<String>(
            "SELECT string_agg(event_type, ',' ORDER BY seq) FROM barecount.ledger",
        )
        .unwrap();
        assert_eq!(events, Some("contract_register,ingest,quarantine".into()));
        let chained = Spi::get_one::<bool>(
            "SELECT bool_and(l.prev_hash = p.entry_hash) FROM barecount.ledger l
               JOIN barecount.ledger p ON p.seq = l.seq - 1",
        )
        .unwrap();
        assert_eq!(chained, Some(true));
        install_sqlstate_helper();
        assert_eq!(
            sqlstate_of("SELECT barecount.ingest('orders', '{}')"),
            "22023"
        );
        assert_eq!(sqlstate_of("DELETE FROM barecount.ledger"), "2F002");
        assert_eq!(sqlstate_of("TRUNCATE barecount.ledger"), "2F002");
        assert_eq!(sqlstate_of("UPDATE raw.orders SET payload = '{}'"), "2F002");
    }

    #[pg_test]
    fn publish_creates_immutable_versions_and_a_latest_view() {
        Spi::run("CREATE TABLE gdp.t AS SELECT 'default'::text AS tenant_id, g AS n, 'r' || (g % 3) AS region FROM generate_series(1, 10) g")
            .unwrap();
        let (v1, h1) = Spi::get_two::<i32, String>(
            "SELECT version, content_hash FROM barecount.publish('tiny', 'gdp.t')",
        )
        .unwrap();
        assert_eq!(v1, Some(1));
        // the same rows in another order hash the same
        let h1b = Spi::get_one::<String>(
            "SELECT content_hash FROM barecount.publish('tiny', 'SELECT * FROM gdp.t ORDER BY n DESC')",
        )
        .unwrap();
        assert_eq!(h1, h1b);
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM published.tiny").unwrap(),
            Some(10)
        );
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM published.tiny__v1 WHERE tenant_id = 'default'"
            )
            .unwrap(),
            Some(10),
            "published rows carry their tenant"
        );
        Spi::run("SELECT barecount.publish('tiny', 'SELECT tenant_id, n, region, n * 2 AS twice FROM gdp.t WHERE n <= 4')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM published.tiny").unwrap(),
            Some(4)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM published.tiny__v1").unwrap(),
            Some(10)
        );
        assert_eq!(
            Spi::get_one::<i32>(
                "SELECT latest_version FROM barecount.datasets WHERE dataset = 'tiny'"
            )
            .unwrap(),
            Some(3)
        );
        install_sqlstate_helper();
        assert_eq!(sqlstate_of("DELETE FROM published.tiny__v1"), "2F002");
        assert_eq!(
            sqlstate_of("INSERT INTO published.tiny__v1 VALUES ('default', 1, 'x')"),
            "2F002"
        );
        assert_eq!(sqlstate_of("TRUNCATE published.tiny__v1"), "2F002");
        assert_eq!(
            sqlstate_of("SELECT barecount.publish('Bad Name', 'SELECT 1')"),
            "42602"
        );
        assert_eq!(
            sqlstate_of("SELECT barecount.publish('x', 'no_such_table')"),
            "42P01"
        );
        // a failed publish leaves nothing behind
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM barecount.dataset_versions WHERE dataset = 'x'"
            )
            .unwrap(),
            Some(0)
        );
    }
}
