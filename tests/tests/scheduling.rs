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

/// Offboarding cannot remove pg_cron's jobs (they belong to the roles that scheduled them), so
/// it refuses while the tenant has any — its pipelines' schedules and any other job of its
/// roles — and lists them; it refuses too when it cannot see them. Run as a barecount_admin
/// login role, in the database where pg_cron lives.
#[tokio::test]
async fn offboarding_refuses_to_leave_pg_cron_jobs_behind() {
    let url = base_url();
    let superuser = connect(&url).await;
    let tenant = format!("offcron{:08x}", rand::rng().random::<u32>());
    superuser
        .execute(
            "SELECT barecount.tenant_create($1, 'Offboarding')",
            &[&tenant],
        )
        .await
        .unwrap();
    let adm = login_role(&superuser, "offcron_adm", &["barecount_admin"], None).await;
    let admin = connect_as(&url, &adm).await;
    let eng = login_role(
        &superuser,
        "offcron_eng",
        &["barecount_engineer"],
        Some(&tenant),
    )
    .await;
    let e = connect_as(&url, &eng).await;
    e.batch_execute(
        r#"SELECT barecount.pipeline_define('nightly', '{"steps": [{"name": "tell", "kind": "hook", "event": "tick"}]}');
           SELECT barecount.pipeline_schedule('nightly', '0 3 * * *');
           SELECT cron.schedule('my-own-job', '0 4 * * *', 'SELECT 1');"#,
    )
    .await
    .unwrap();
    let ids: Vec<i64> = e
        .query("SELECT jobid FROM cron.job ORDER BY jobid", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2);
    admin
        .execute(
            "SELECT barecount.tenant_suspend($1, 'contract ended')",
            &[&tenant],
        )
        .await
        .unwrap();
    let check = format!("SELECT * FROM barecount.tenant_offboard_check('{tenant}')");
    let err = admin.query(&check, &[]).await.unwrap_err();
    let d = err.as_db_error().unwrap();
    assert_eq!(d.code().code(), "55000");
    assert_eq!(
        d.message(),
        format!(
            "tenant \"{tenant}\" has pg_cron jobs: barecount:{tenant}:nightly (job {}, scheduled by {eng}), my-own-job (job {}, scheduled by {eng})",
            ids[0], ids[1]
        )
    );
    assert!(d.hint().unwrap_or_default().contains("pipeline_unschedule"));
    // without USAGE on pg_cron's schema, BareCount cannot see the jobs and refuses to guess
    superuser
        .batch_execute("REVOKE USAGE ON SCHEMA cron FROM barecount_owner")
        .await
        .unwrap();
    let blind = admin.query(&check, &[]).await.unwrap_err();
    superuser
        .batch_execute("GRANT USAGE ON SCHEMA cron TO barecount_owner")
        .await
        .unwrap();
    assert_eq!(blind.code().map(|c| c.code()), Some("42501"));
    assert_eq!(
        blind.as_db_error().and_then(|d| d.hint()),
        Some("A superuser runs GRANT USAGE ON SCHEMA cron TO barecount_owner.")
    );
    // the tenant is suspended: its engineer cannot unschedule through BareCount, but pg_cron's
    // own unschedule is the job owner's
    assert_eq!(
        refused(&e, "SELECT barecount.pipeline_unschedule('nightly')").await,
        "55000"
    );
    e.batch_execute("SELECT cron.unschedule(jobid) FROM cron.job")
        .await
        .unwrap();
    assert!(!admin.query(&check, &[]).await.unwrap().is_empty());
    assert_eq!(count(&e, "SELECT count(*) FROM cron.job").await, 0);
}
