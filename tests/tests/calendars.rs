//! Calendars through SQL in a real Postgres: NRF 4-5-4, Gregorian fiscal, ISO week; versioning;
//! date spines; every error path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{count, fresh_db, refused};

#[tokio::test]
async fn calendars_through_sql() {
    let db = fresh_db().await;
    let c = &db.client;
    let nrf = r#"{"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}"#;
    let v: i32 = c
        .query_one(
            &format!("SELECT barecount.calendar_create('nrf', '{nrf}')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
    let again: i32 = c
        .query_one(
            &format!("SELECT barecount.calendar_create('nrf', '{nrf}')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 1, "the same definition is a no-op");
    c.batch_execute(
        "SELECT barecount.calendar_create('fy_april', '{\"kind\": \"gregorian\", \"start_month\": 4, \"year_label\": \"end\"}');
         SELECT barecount.calendar_create('iso', '{\"kind\": \"iso_week\"}');",
    )
    .await
    .unwrap();

    let text =
        |sql: &'static str| async move { c.query_one(sql, &[]).await.unwrap().get::<_, String>(0) };
    assert_eq!(
        text("SELECT barecount.fiscal_period('2024-03-15', 'nrf')").await,
        "FY2024-P02"
    );
    assert_eq!(
        text("SELECT barecount.period_label('2024-03-05', 'nrf', 'week')").await,
        "FY2024-W05"
    );
    assert_eq!(
        text("SELECT barecount.period_label('2024-03-15', 'fy_april', 'period')").await,
        "FY2024-P12"
    );
    assert_eq!(
        text("SELECT barecount.period_label('2021-01-03', 'iso', 'week')").await,
        "FY2020-W53"
    );
    assert_eq!(
        count(
            c,
            "SELECT barecount.fiscal_year('2024-01-15', 'nrf')::bigint"
        )
        .await,
        2023
    );
    assert_eq!(
        count(
            c,
            "SELECT barecount.fiscal_quarter('2024-04-01', 'fy_april')::bigint"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            c,
            "SELECT barecount.fiscal_week('2024-02-03', 'nrf')::bigint"
        )
        .await,
        53
    );
    assert_eq!(
        count(
            c,
            "SELECT barecount.fiscal_day_of_year('2023-02-04', 'nrf')::bigint"
        )
        .await,
        7
    );
    let bounds = c
        .query_one("SELECT barecount.period_start('2023-06-01', 'nrf', 'year')::text, barecount.period_end('2023-06-01', 'nrf', 'year')::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (bounds.get::<_, String>(0), bounds.get::<_, String>(1)),
        ("2023-01-29".into(), "2024-02-03".into())
    );

    // date spines: NRF FY2023 has 12 periods and 53 weeks; every day maps into exactly one period
    assert_eq!(count(c, "SELECT count(*) FROM barecount.calendar_periods('nrf', 'period', '2023-01-29', '2024-02-03')").await, 12);
    assert_eq!(count(c, "SELECT count(*) FROM barecount.calendar_periods('nrf', 'week', '2023-01-29', '2024-02-03')").await, 53);
    assert_eq!(
        count(c, "SELECT count(DISTINCT barecount.fiscal_period(d::date, 'nrf')) FROM generate_series('2023-01-29'::date, '2024-02-03', '1 day') d").await,
        12
    );
    let last = c
        .query_one("SELECT label, period_start::text, period_end::text FROM barecount.calendar_periods('nrf', 'period', '2023-12-31', '2023-12-31')", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            last.get::<_, String>(0),
            last.get::<_, String>(1),
            last.get::<_, String>(2)
        ),
        (
            "FY2023-P12".into(),
            "2023-12-31".into(),
            "2024-02-03".into()
        ),
        "the 53rd week lands in the last period"
    );

    // a changed definition is a new version, and functions use it
    let v2: i32 = c
        .query_one("SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\", \"year_label\": \"end\"}')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v2, 2);
    assert_eq!(
        text("SELECT barecount.fiscal_period('2024-03-15', 'nrf')").await,
        "FY2025-P02"
    );
    assert_eq!(
        refused(c, "UPDATE barecount.calendars SET spec = '{}'").await,
        "42501"
    );
    assert_eq!(
        refused(&db.superuser, "UPDATE barecount.calendars SET spec = '{}'").await,
        "2F002",
        "the guard holds for a superuser too"
    );

    for (sql, state) in [
        (
            "SELECT barecount.fiscal_period('2024-03-15', 'nope')",
            "42704",
        ),
        (
            "SELECT barecount.period_label('2024-03-15', 'nrf', 'fortnight')",
            "22023",
        ),
        (
            "SELECT barecount.fiscal_period('1850-01-01', 'nrf')",
            "22008",
        ),
        ("SELECT barecount.fiscal_period('infinity', 'nrf')", "22008"),
        (
            "SELECT barecount.period_label('2024-03-15', 'iso', 'period')",
            "0A000",
        ),
        (
            "SELECT barecount.calendar_create('lunar', '{\"kind\": \"lunar\"}')",
            "22023",
        ),
        (
            "SELECT barecount.calendar_create('Bad Name', '{\"kind\": \"iso_week\"}')",
            "42602",
        ),
        (
            "SELECT * FROM barecount.calendar_periods('nrf', 'week', '2024-02-01', '2024-01-01')",
            "22023",
        ),
    ] {
        assert_eq!(refused(c, sql).await, state, "{sql}");
    }
}

#[tokio::test]
async fn working_days_through_sql() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "SELECT barecount.calendar_create('us', '{\"kind\": \"gregorian\", \"holidays\": \"us_federal\", \"closures\": [\"2024-12-24\"]}');
         SELECT barecount.calendar_create('de', '{\"kind\": \"gregorian\", \"holidays\": \"de_national\"}');
         SELECT barecount.calendar_create('gulf', '{\"kind\": \"gregorian\", \"weekend\": [\"fri\", \"sat\"]}');",
    )
    .await
    .unwrap();
    let b = |sql: String| async move { c.query_one(&sql, &[]).await.unwrap().get::<_, bool>(0) };
    assert!(
        !b("SELECT barecount.is_working_day('2024-11-28', 'us')".into()).await,
        "Thanksgiving"
    );
    assert!(
        !b("SELECT barecount.is_working_day('2024-12-24', 'us')".into()).await,
        "a company closure"
    );
    assert!(
        !b("SELECT barecount.is_working_day('2024-03-29', 'de')".into()).await,
        "Karfreitag"
    );
    assert!(b("SELECT barecount.is_working_day('2024-11-28', 'de')".into()).await);
    assert!(
        !b("SELECT barecount.is_working_day('2024-12-27', 'gulf')".into()).await,
        "Friday weekend"
    );
    assert!(
        b("SELECT barecount.is_working_day('2024-12-29', 'gulf')".into()).await,
        "Sunday works"
    );
    let t =
        |sql: &'static str| async move { c.query_one(sql, &[]).await.unwrap().get::<_, String>(0) };
    assert_eq!(
        t("SELECT barecount.add_working_days('2024-11-27', 1, 'us')::text").await,
        "2024-11-29"
    );
    assert_eq!(
        t("SELECT barecount.next_working_day('2024-12-24', 'us')::text").await,
        "2024-12-26"
    );
    assert_eq!(
        t("SELECT barecount.previous_working_day('2024-12-25', 'us')::text").await,
        "2024-12-23"
    );
    assert_eq!(
        count(
            c,
            "SELECT barecount.working_days_between('2024-12-01', '2025-01-01', 'us')"
        )
        .await,
        20
    );
    // the consistency rule, over a set of pairs in one statement
    assert_eq!(
        count(c, "SELECT count(*) FROM generate_series('2024-11-01'::date, '2025-01-15', '3 days') a(d),
                                        generate_series('2024-11-01'::date, '2025-01-15', '5 days') e(d)
                  WHERE barecount.add_working_days(a.d::date, barecount.working_days_between(a.d::date, e.d::date, 'us')::int, 'us')
                        <> barecount.next_working_day(greatest(a.d, e.d)::date, 'us')").await,
        0
    );
    assert_eq!(
        refused(c, "SELECT barecount.is_working_day('2500-01-01', 'us')").await,
        "22008"
    );
    assert_eq!(refused(c, "SELECT barecount.calendar_create('x', '{\"kind\": \"gregorian\", \"holidays\": \"mars\"}')").await, "22023");
}

#[tokio::test]
async fn closed_periods_change_only_through_a_recorded_restatement() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        "SELECT barecount.calendar_create('nrf', '{\"kind\": \"retail_454\", \"year_end\": \"nearest\", \"end_month\": 1, \"weekday\": \"sat\"}');
         CREATE TABLE gdp.sales AS
           SELECT 'default'::text AS tenant_id, d::date AS day, 10::numeric AS amount
             FROM generate_series('2024-03-01'::date, '2024-04-30', '1 day') d;
         SELECT barecount.period_guard('gdp.sales', 'day', 'nrf');",
    )
    .await
    .unwrap();
    let label: String = c
        .query_one(
            "SELECT barecount.period_close('nrf', 'period', '2024-03-15')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(label, "FY2024-P02");
    assert_eq!(count(c, "SELECT count(*) FROM barecount.ledger WHERE event_type = 'period_close' AND subject = 'period:nrf/FY2024-P02'").await, 1);
    assert_eq!(
        refused(
            c,
            "UPDATE gdp.sales SET amount = 0 WHERE day = '2024-03-15'"
        )
        .await,
        "55000"
    );
    assert_eq!(
        refused(c, "DELETE FROM gdp.sales WHERE day = '2024-03-15'").await,
        "55000"
    );
    assert_eq!(
        refused(
            c,
            "INSERT INTO gdp.sales VALUES ('default', '2024-03-20', 1)"
        )
        .await,
        "55000"
    );
    assert_eq!(
        refused(
            c,
            "UPDATE gdp.sales SET day = '2024-03-20' WHERE day = '2024-04-10'"
        )
        .await,
        "55000",
        "moving a row into a closed period"
    );
    // the open period next to it takes writes
    c.batch_execute("UPDATE gdp.sales SET amount = 11 WHERE day = '2024-04-10'")
        .await
        .unwrap();

    // a restatement records its reason and statement, then changes the closed period
    let seq: i64 = c
        .query_one("SELECT barecount.restatement('refund booked late', 'UPDATE gdp.sales SET amount = 7 WHERE day = ''2024-03-15''')", &[])
        .await
        .unwrap()
        .get(0);
    let receipt: serde_json::Value = c
        .query_one(
            "SELECT inputs FROM barecount.ledger WHERE seq = $1",
            &[&seq],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(receipt["reason"], "refund booked late");
    assert_eq!(
        count(
            c,
            "SELECT amount::bigint FROM gdp.sales WHERE day = '2024-03-15'"
        )
        .await,
        7
    );
    assert_eq!(
        refused(
            c,
            "UPDATE gdp.sales SET amount = 0 WHERE day = '2024-03-15'"
        )
        .await,
        "55000",
        "only inside the restatement"
    );
    assert_eq!(refused(c, "SELECT set_config('barecount.restatement', '999', false); UPDATE gdp.sales SET amount = 0 WHERE day = '2024-03-15'").await, "55000", "the setting alone is no restatement");
    assert_eq!(
        refused(c, "SELECT barecount.restatement('', 'SELECT 1')").await,
        "22023"
    );

    // reopening a closed period needs a reason; then writes flow again
    assert_eq!(
        refused(
            c,
            "SELECT barecount.period_reopen('nrf', 'period', '2024-03-15')"
        )
        .await,
        "22023"
    );
    c.batch_execute(
        "SELECT barecount.period_reopen('nrf', 'period', '2024-03-15', 'late invoices')",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE gdp.sales SET amount = 0 WHERE day = '2024-03-15'")
        .await
        .unwrap();
    let events: Vec<String> = c
        .query("SELECT event_type FROM barecount.ledger WHERE event_type IN ('period_close', 'period_reopen', 'restatement') ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["period_close", "restatement", "period_reopen"]);
    // soft-closed periods refuse direct writes too
    c.batch_execute("SELECT barecount.period_close('nrf', 'period', '2024-04-10', true)")
        .await
        .unwrap();
    assert_eq!(
        refused(
            c,
            "UPDATE gdp.sales SET amount = 1 WHERE day = '2024-04-10'"
        )
        .await,
        "55000"
    );
    assert_eq!(
        refused(
            c,
            "SELECT barecount.period_guard('gdp.sales', 'nope', 'nrf')"
        )
        .await,
        "42703"
    );
    assert!(c
        .query_one("SELECT ok FROM barecount.ledger_verify()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
}

#[tokio::test]
async fn working_day_searches_are_bounded_and_every_accepted_calendar_is_usable() {
    let db = fresh_db().await;
    let c = &db.client;
    c.batch_execute(
        r#"SET statement_timeout = '5s';
           SELECT barecount.calendar_create('us', '{"kind": "gregorian", "holidays": "us_federal"}');"#,
    )
    .await
    .unwrap();
    // counts past the supported range are refused at once (22008), never searched for
    for n in ["1000000", "2147483647", "-2147483648"] {
        let t0 = std::time::Instant::now();
        assert_eq!(
            refused(
                c,
                &format!("SELECT barecount.add_working_days('2024-01-01', {n}, 'us')")
            )
            .await,
            "22008",
            "{n}"
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(2), "{n}");
    }
    // an answer after 2200 is refused, not returned for the other functions to refuse
    assert_eq!(
        refused(
            c,
            "SELECT barecount.add_working_days('2200-12-01', 100, 'us')"
        )
        .await,
        "22008"
    );
    // definitions that could never be used are refused when created, naming what is wrong
    for (spec, what) in [
        (
            r#"{"kind": "gregorian", "weekend": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "working_days": ["2024-01-01"]}"#,
            "weekend",
        ),
        (
            r#"{"kind": "gregorian", "holiday_rules": [{"easter": 1000000000}]}"#,
            "easter",
        ),
    ] {
        let e = c
            .query(
                "SELECT barecount.calendar_create('bad', $1::text::jsonb)",
                &[&spec],
            )
            .await
            .unwrap_err();
        assert_eq!(barecount_tests::sqlstate(&e), "22023", "{spec}");
        assert!(
            e.to_string().contains(what) || format!("{e:?}").contains(what),
            "{e:?}"
        );
    }
}
