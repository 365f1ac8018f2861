//! Scheduling through pg_cron, in the test cluster's database that preloads it (pg_cron runs
//! jobs in one database): a scheduled run is an ordinary run, started by pg_cron's worker as
//! the role that scheduled it; a calendar-aware schedule runs the closed period on the first
//! working day after it, once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::{base_url, connect, connect_as, count, login_role, refused, strings};
use rand::Rng;
use std::time::{Duration, Instant};

#[tokio::test]
async fn pg_cron_starts_ordinary_runs_and_calendar_aware_ones_after_period_close() {
    let url = base_url();
    let admin = connect(&url).await;
    let tenant = format!("sched{:08x}", rand::rng().random::<u32>());
    admin
        .execute(
            "SELECT barecount.tenant_create($1, 'Scheduling')",
            &[&tenant],
        )
        .await
        .unwrap();
    let eng = login_role(&admin, "sched_eng", &["barecount_engineer"], Some(&tenant)).await;
    let e = connect_as(&url, &eng).await;
    e.batch_execute(
        r#"SELECT barecount.calendar_create('nrf', '{"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}');
           SELECT barecount.pipeline_define('tick', '{"steps": [{"name": "tell", "kind": "hook", "event": "tick"}]}');
           SELECT barecount.pipeline_define('close', '{"calendar": "nrf", "grain": "period",
                                                       "steps": [{"name": "tell", "kind": "hook", "event": "closed"}]}');"#,
    )
    .await
    .unwrap();

    // every minute: pg_cron's worker starts a run as this role, an ordinary run
    let job: i64 = e
        .query_one(
            "SELECT barecount.pipeline_schedule('tick', '* * * * *')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(job > 0);
    assert_eq!(
        strings(
            &e,
            "SELECT username || ' ' || command FROM cron.job WHERE jobname LIKE 'barecount:%'"
        )
        .await,
        [format!(
            "{eng} SELECT barecount._pipeline_tick('tick', false)"
        )]
    );
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let n = count(&e, "SELECT count(*) FROM barecount.pipeline_runs WHERE pipeline = 'tick' AND trigger = 'schedule' AND status = 'succeeded'").await;
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_cron started no run within 150 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await; // polling pg_cron's minute tick
    }
    let started_by: Vec<String> = strings(
        &e,
        "SELECT started_by::text FROM barecount.pipeline_runs WHERE trigger = 'schedule'",
    )
    .await;
    assert!(started_by.iter().all(|s| *s == eng), "{started_by:?}");
    assert!(e
        .query_one("SELECT barecount.pipeline_unschedule('tick')", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    assert!(!e
        .query_one("SELECT barecount.pipeline_unschedule('tick')", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));

    // calendar-aware: NRF FY2024 P01 ends on Saturday 2024-03-02; the first working day after
    // it is Monday 2024-03-04, which runs P01 (once); the days around it run nothing
    e.query_one(
        "SELECT barecount.pipeline_schedule('close', '0 6 * * *', true)",
        &[],
    )
    .await
    .unwrap();
    for day in ["2024-03-02", "2024-03-03", "2024-03-05"] {
        let r: Option<i64> = e
            .query_one(
                "SELECT barecount._pipeline_tick('close', true, $1::text::date)",
                &[&day],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(r, None, "{day}");
    }
    let run: Option<i64> = e
        .query_one(
            "SELECT barecount._pipeline_tick('close', true, '2024-03-04')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let run = run.expect("a run on the first working day after close");
    let r = e
        .query_one("SELECT period_from::text, period_to::text, idempotency_key, trigger FROM barecount.pipeline_runs WHERE run_id = $1", &[&run])
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ),
        (
            "2024-02-04".into(),
            "2024-03-02".into(),
            "schedule:FY2024-P01".into(),
            "schedule".into()
        )
    );
    let again: Option<i64> = e
        .query_one(
            "SELECT barecount._pipeline_tick('close', true, '2024-03-04')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        again,
        Some(run),
        "a second firing the same day is the same run"
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM barecount.pipeline_runs WHERE pipeline = 'close'"
        )
        .await,
        1
    );
    // a schedule cannot be calendar-aware without a calendar
    assert_eq!(
        refused(
            &e,
            "SELECT barecount.pipeline_schedule('tick', '* * * * *', true)"
        )
        .await,
        "22023"
    );
    e.query_one("SELECT barecount.pipeline_unschedule('close')", &[])
        .await
        .unwrap();
    assert_eq!(count(&e, "SELECT count(*) FROM cron.job").await, 0);
}
