//! Pipelines: `pipeline_define` (versioned, checked against the catalog), `pipeline_run` (the
//! steps in dependency order, each in a subtransaction with retries for transient errors, each
//! with a receipt linked to the run; idempotent per key), `pipeline_resume` (a failed run from
//! its failed step) and the scheduler's entry point.
//!
//! Steps run as the caller, through the same SQL functions a person would call; only the run's
//! bookkeeping (runs, steps, receipts, events) is written in privileged sections.

use crate::errors::{required, OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::subxact::{attempt, Caught};
use crate::{calendars, connectors, kpis, ledger, models, privilege, tenant};
use barecount_core::calendar::{self, Grain};
use barecount_core::ident::{check_dataset_name, quote_literal};
use barecount_core::pipeline::{
    is_transient, parse_period_label, Catalog, KpiInfo, Pipeline, PipelineError, Step, StepKind,
};
use chrono::NaiveDate;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::collections::HashMap;

impl From<PipelineError> for SqlError {
    fn from(e: PipelineError) -> Self {
        let code = match &e {
            PipelineError::Cycle(_) => PgSqlErrorCode::ERRCODE_INVALID_RECURSION,
            PipelineError::Unknown { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            PipelineError::Period(_) => PgSqlErrorCode::ERRCODE_INVALID_DATETIME_FORMAT,
            _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        };
        let hint = match &e {
            PipelineError::GrainMismatch { .. } => Some("A pipeline materializes its KPIs by its own calendar and grain: give the pipeline the KPI's, or run the KPI in another pipeline."),
            PipelineError::Cycle(_) => Some("Remove one of the \"after\" links along the cycle."),
            PipelineError::Period(_) => Some("Give dates ('2024-02-04') or period labels of the pipeline's calendar ('FY2024-P01')."),
            _ => None,
        };
        let err = SqlError::new(code, e.to_string());
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    }
}

/// What the checks need of the catalog, read once before checking.
#[derive(Default)]
struct Snapshot {
    contracts: Vec<String>,
    models: HashMap<String, Option<Vec<String>>>,
    kpis: HashMap<String, Option<KpiInfo>>,
    calendars: Vec<String>,
}

impl Catalog for Snapshot {
    fn contract_exists(&self, dataset: &str) -> bool {
        self.contracts.iter().any(|c| c == dataset)
    }
    fn model_reads(&self, model: &str) -> Option<Vec<String>> {
        self.models.get(model).cloned().flatten()
    }
    fn kpi(&self, name: &str) -> Option<KpiInfo> {
        self.kpis.get(name).cloned().flatten()
    }
    fn calendar_exists(&self, name: &str) -> bool {
        self.calendars.iter().any(|c| c == name)
    }
}

fn snapshot(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    p: &Pipeline,
) -> Result<Snapshot, SqlError> {
    let mut s = Snapshot::default();
    for step in &p.steps {
        match &step.kind {
            StepKind::Ingest { dataset, .. } => {
                let n = privilege::as_owner(|| {
                    Ok(client
                        .select(
                            "SELECT 1 FROM barecount.contract_datasets WHERE tenant_id = $1 AND dataset = $2 LIMIT 1",
                            Some(1),
                            &[tenant_id.into(), dataset.as_str().into()],
                        )?
                        .len())
                })?;
                if n > 0 {
                    s.contracts.push(dataset.clone());
                }
            }
            StepKind::Model { model } => {
                let reads = models::model_reads(client, tenant_id, model)?;
                s.models.insert(model.clone(), reads);
            }
            StepKind::Kpi { kpi } => {
                let info = kpis::definition(client, tenant_id, kpi)
                    .ok()
                    .map(|(_, k)| KpiInfo {
                        source: k.source,
                        calendar: k.calendar,
                        grain: k.grain,
                    });
                s.kpis.insert(kpi.clone(), info);
            }
            StepKind::Publish { .. } | StepKind::Hook { .. } => {}
        }
    }
    if let Some(c) = &p.calendar {
        let n = client
            .select(
                "SELECT 1 FROM barecount.calendars WHERE tenant_id = $1 AND name = $2 LIMIT 1",
                Some(1),
                &[tenant_id.into(), c.as_str().into()],
            )?
            .len();
        if n > 0 {
            s.calendars.push(c.clone());
        }
    }
    Ok(s)
}

/// Define a pipeline or a new version of it (the same definition again: the current version).
#[pg_extern(volatile, parallel_unsafe)]
fn pipeline_define(name: &str, spec: JsonbArg) -> i32 {
    check_dataset_name("pipeline", name).or_raise();
    let pipeline = Pipeline::parse(&spec.0).map_err(SqlError::from).or_raise();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let snap = snapshot(client, &tenant_id, &pipeline)?;
        pipeline.check_objects(&snap)?;
        privilege::as_owner(|| {
            tenant::lock_object(client, "pipeline", &tenant_id, name)?;
            let t = client.select(
                "SELECT version, spec = $3 FROM barecount.pipelines WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), JsonB(spec.0.clone()).into()],
            )?;
            let (v, same) = if t.is_empty() {
                (0, false)
            } else {
                let r = t.first();
                (r.get::<i32>(1)?.unwrap_or(0), r.get::<bool>(2)?.unwrap_or(false))
            };
            if same {
                return Ok(v);
            }
            let version = v + 1;
            let receipt = ledger::append(
                client,
                &tenant_id,
                "pipeline_define",
                &format!("pipeline:{name}@{version}"),
                &json!({"inputs": [], "outputs": [], "spec": spec.0}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.pipelines (tenant_id, name, version, spec, ledger_seq) VALUES ($1, $2, $3, $4, $5)",
                None,
                &[tenant_id.as_str().into(), name.into(), version.into(), JsonB(spec.0.clone()).into(), receipt.seq.into()],
            )?;
            Ok(version)
        })
    })
    .or_raise()
}

/// The latest (or a given) version of a pipeline.
fn load(
    client: &SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    version: Option<i32>,
) -> Result<(i32, Pipeline), SqlError> {
    let t = client.select(
        "SELECT version, spec FROM barecount.pipelines WHERE tenant_id = $1 AND name = $2 \
           AND ($3::int IS NULL OR version = $3) ORDER BY version DESC LIMIT 1",
        Some(1),
        &[tenant_id.into(), name.into(), version.into()],
    )?;
    if t.is_empty() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("pipeline \"{name}\" is not defined"),
        )
        .hint("Define it with barecount.pipeline_define(name, spec)."));
    }
    let r = t.first();
    let spec = r.get::<JsonB>(2)?.map(|j| j.0).unwrap_or(Value::Null);
    Ok((r.get::<i32>(1)?.unwrap_or(0), Pipeline::parse(&spec)?))
}

/// A bound of the range asked: a date, or a period label of the pipeline's calendar (its first
/// day for `from`, its last for `to`).
fn bound(p: &Pipeline, name: &str, text: &str, first: bool) -> Result<NaiveDate, SqlError> {
    if let Ok(d) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        return Ok(d);
    }
    let (grain, year, index) = parse_period_label(text)?;
    let Some(cal) = &p.calendar else {
        return Err(PipelineError::Period(format!(
            "pipeline \"{name}\" has no calendar, so \"{text}\" cannot be resolved; give a date"
        ))
        .into());
    };
    let spec = calendars::spec_of(cal);
    let period = calendar::period_by_label(&spec, grain, year, index)
        .map_err(|e| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                e.to_string(),
            )
        })?
        .ok_or_else(|| {
            SqlError::from(PipelineError::Period(format!(
                "calendar \"{cal}\" has no {grain} {text}"
            )))
        })?;
    Ok(if first { period.start } else { period.end })
}

type RunRow = (
    i64,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Run a pipeline over a range of dates or calendar periods.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn pipeline_run(
    name: Option<&str>,
    period_from: Option<&str>,
    period_to: Option<&str>,
    idempotency_key: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(run_id, i64),
        name!(status, String),
        name!(replayed, bool),
        name!(failed_step, Option<String>),
        name!(error_sqlstate, Option<String>),
        name!(error_message, Option<String>),
    ),
> {
    // not STRICT (the key is optional): a NULL argument is a clear 22004
    let name = required(name, "pipeline_run", "name");
    let period_from = required(period_from, "pipeline_run", "period_from");
    let period_to = required(period_to, "pipeline_run", "period_to");
    TableIterator::once(start(name, period_from, period_to, idempotency_key, "manual").or_raise())
}

/// For pg_cron: run a scheduled pipeline (see `pipeline_schedule`). A calendar-aware schedule
/// runs only on the first working day after a period of the pipeline's grain ends, over that
/// period, once (its label is the idempotency key); otherwise each firing runs the period
/// containing yesterday.
#[pg_extern(volatile, parallel_unsafe)]
fn _pipeline_tick(
    name: Option<&str>,
    calendar_aware: Option<bool>,
    today: default!(Option<pgrx::datum::Date>, "NULL"),
) -> Option<i64> {
    let name = required(name, "_pipeline_tick", "name");
    let calendar_aware = required(calendar_aware, "_pipeline_tick", "calendar_aware");
    let plan = Spi::connect(
        |client| -> Result<Option<(NaiveDate, NaiveDate, String)>, SqlError> {
            let tenant_id = tenant::current(client)?;
            let (_, p) = load(client, &tenant_id, name, None)?;
            // a firing is named by its minute (pg_cron fires at most once a minute), or by
            // the day asked for when a missed firing is caught up
            let (today, firing) = match today {
                Some(d) => {
                    let t = calendars::to_naive(d)?;
                    (t, t.to_string())
                }
                None => {
                    let r = client.select(
                        "SELECT current_date, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"')",
                        Some(1),
                        &[],
                    )?;
                    let r = r.first();
                    let d = r.get::<pgrx::datum::Date>(1)?.ok_or_else(|| {
                        SqlError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "current_date is NULL")
                    })?;
                    (calendars::to_naive(d)?, r.get::<String>(2)?.unwrap_or_default())
                }
            };
            let yesterday = today.pred_opt().unwrap_or(today);
            match (&p.calendar, p.grain.as_deref()) {
                (Some(cal), Some(g)) => {
                    let grain = Grain::parse(g).map_err(|e| {
                        SqlError::new(
                            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                            e.to_string(),
                        )
                    })?;
                    let spec = calendars::spec_of(cal);
                    let cerr = |e: calendar::CalendarError| {
                        SqlError::new(
                            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                            e.to_string(),
                        )
                    };
                    if calendar_aware {
                        // the period that ended most recently, and the first working day after it
                        let current = calendar::period_of(&spec, grain, today).map_err(cerr)?;
                        let closed = calendar::period_of(
                            &spec,
                            grain,
                            current.start.pred_opt().unwrap_or(current.start),
                        )
                        .map_err(cerr)?;
                        let after = closed.end.succ_opt().unwrap_or(closed.end);
                        if calendars::next_working_day_of(cal, after)? != today {
                            return Ok(None);
                        }
                        Ok(Some((
                            closed.start,
                            closed.end,
                            format!("schedule:{}", closed.label()),
                        )))
                    } else {
                        let period = calendar::period_of(&spec, grain, yesterday).map_err(cerr)?;
                        Ok(Some((
                            period.start,
                            period.end,
                            format!("schedule:{firing}:{}", period.label()),
                        )))
                    }
                }
                _ => Ok(Some((yesterday, yesterday, format!("schedule:{firing}")))),
            }
        },
    )
    .or_raise();
    let (from, to, key) = plan?;
    let row = start(
        name,
        &from.to_string(),
        &to.to_string(),
        Some(&key),
        "schedule",
    )
    .or_raise();
    Some(row.0)
}

/// Resume a failed run from its failed step (the steps that succeeded are not run again).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn pipeline_resume(
    run_id: i64,
) -> TableIterator<
    'static,
    (
        name!(run_id, i64),
        name!(status, String),
        name!(replayed, bool),
        name!(failed_step, Option<String>),
        name!(error_sqlstate, Option<String>),
        name!(error_message, Option<String>),
    ),
> {
    let row = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let (name, version, from, to) = privilege::as_owner(|| {
            let t = client.update(
                "SELECT pipeline, version, period_from::text, period_to::text, status FROM barecount.pipeline_runs \
                  WHERE tenant_id = $1 AND run_id = $2 FOR UPDATE",
                Some(1),
                &[tenant_id.as_str().into(), run_id.into()],
            )?;
            if t.is_empty() {
                return Err(SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("pipeline run {run_id} does not exist")));
            }
            let r = t.first();
            let status = r.get::<String>(5)?.unwrap_or_default();
            if status != "failed" {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("pipeline run {run_id} is {status}; only a failed run can be resumed"),
                ));
            }
            client.update(
                "UPDATE barecount.pipeline_runs SET status = 'running', finished_at = NULL, failed_step = NULL, \
                        error_sqlstate = NULL, error_message = NULL WHERE run_id = $1",
                None,
                &[run_id.into()],
            )?;
            client.update(
                "UPDATE barecount.pipeline_run_steps SET status = 'pending' WHERE run_id = $1 AND status IN ('failed', 'running')",
                None,
                &[run_id.into()],
            )?;
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<i32>(2)?.unwrap_or(0),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        })?;
        let (_, p) = load(client, &tenant_id, &name, Some(version))?;
        let run = Run { tenant_id, name, run_id, from, to };
        run.event(client, "run_started", json!({"resumed": true}))?;
        execute(client, &run, &p)
    })
    .or_raise();
    TableIterator::once(row)
}

/// Starts (or, for a key seen before, returns) a run.
fn start(
    name: &str,
    from: &str,
    to: &str,
    key: Option<&str>,
    trigger: &str,
) -> Result<RunRow, SqlError> {
    if let Some(k) = key {
        if k.is_empty() || k.len() > 200 {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "an idempotency key has 1 to 200 characters",
            ));
        }
    }
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let (version, p) = load(client, &tenant_id, name, None)?;
        let (f, t) = (bound(&p, name, from, true)?, bound(&p, name, to, false)?);
        if t < f {
            return Err(SqlError::from(PipelineError::Period(format!(
                "the range ends ({t}) before it starts ({f})"
            ))));
        }
        let inserted = privilege::as_owner(|| {
            let r = client.update(
                "INSERT INTO barecount.pipeline_runs (tenant_id, pipeline, version, idempotency_key, period_from, period_to, status, trigger) \
                 VALUES ($1, $2, $3, $4, $5::date, $6::date, 'running', $7) \
                 ON CONFLICT (tenant_id, pipeline, idempotency_key) DO NOTHING RETURNING run_id",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), version.into(), key.into(), f.to_string().into(),
                  t.to_string().into(), trigger.into()],
            )?;
            let id = if r.is_empty() {
                None
            } else {
                r.first().get::<i64>(1)?
            };
            if let Some(id) = id {
                for (i, s) in p.steps.iter().enumerate() {
                    client.update(
                        "INSERT INTO barecount.pipeline_run_steps (tenant_id, run_id, step, ordinal, kind, status) \
                         VALUES ($1, $2, $3, $4, $5, 'pending')",
                        None,
                        &[tenant_id.as_str().into(), id.into(), s.name.as_str().into(), (i as i32 + 1).into(), s.kind.label().into()],
                    )?;
                }
            }
            Ok(id)
        })?;
        let Some(run_id) = inserted else {
            // the key names a run already: return it, never run again
            let r = client.select(
                "SELECT run_id, status, failed_step, error_sqlstate, error_message FROM barecount.pipeline_runs \
                  WHERE tenant_id = $1 AND pipeline = $2 AND idempotency_key = $3",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), key.into()],
            )?;
            let r = r.first();
            return Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
                true,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<String>(5)?,
            ));
        };
        let run = Run {
            tenant_id,
            name: name.to_owned(),
            run_id,
            from: f.to_string(),
            to: t.to_string(),
        };
        run.event(
            client,
            "run_started",
            json!({"trigger": trigger, "idempotency_key": key}),
        )?;
        execute(client, &run, &p)
    })
}

struct Run {
    tenant_id: String,
    name: String,
    run_id: i64,
    from: String,
    to: String,
}

impl Run {
    fn subject(&self) -> String {
        format!("pipeline:{}#{}", self.name, self.run_id)
    }

    fn event(&self, client: &mut SpiClient<'_>, kind: &str, extra: Value) -> Result<(), SqlError> {
        let mut payload = json!({"pipeline": self.name, "run_id": self.run_id,
                                 "period_from": self.from, "period_to": self.to});
        if let (Some(p), Value::Object(e)) = (payload.as_object_mut(), extra) {
            p.extend(e);
        }
        emit(client, &self.tenant_id, kind, &self.subject(), &payload)
    }
}

/// Appends an event to the outbox (privileged section) and wakes listeners.
pub(crate) fn emit(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    kind: &str,
    subject: &str,
    payload: &Value,
) -> Result<(), SqlError> {
    privilege::as_owner(|| {
        client.update(
            "SELECT barecount._event_emit($1, $2, $3, $4)",
            None,
            &[
                tenant_id.into(),
                kind.into(),
                subject.into(),
                JsonB(payload.clone()).into(),
            ],
        )?;
        Ok(())
    })
}

/// What a step did: rows read and written, the receipts it wrote, a note.
#[derive(Default)]
struct Outcome {
    rows_in: Option<i64>,
    rows_out: Option<i64>,
    receipts: Vec<i64>,
    note: Option<String>,
    skipped: bool,
    warned: bool,
}

/// Runs the pending steps of a run in order; records each attempt; stops at the first failure.
fn execute(client: &mut SpiClient<'_>, run: &Run, p: &Pipeline) -> Result<RunRow, SqlError> {
    let pending: Vec<String> = privilege::as_owner(|| {
        let mut out = Vec::new();
        for r in client.select(
            "SELECT step FROM barecount.pipeline_run_steps WHERE run_id = $1 AND status = 'pending' ORDER BY ordinal",
            None,
            &[run.run_id.into()],
        )? {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok(out)
    })?;
    for step in p.steps.iter().filter(|s| pending.contains(&s.name)) {
        privilege::as_owner(|| {
            client.update(
                "UPDATE barecount.pipeline_run_steps SET status = 'running', started_at = clock_timestamp() WHERE run_id = $1 AND step = $2",
                None,
                &[run.run_id.into(), step.name.as_str().into()],
            )?;
            Ok(())
        })?;
        let mut tries = 0u32;
        let result = loop {
            tries += 1;
            pgrx::check_for_interrupts!();
            // events the attempt asks for even when it is rolled back (a quarantine threshold
            // breach that fails the step): emitted after it, outside its subtransaction
            let mut after = Vec::new();
            let result = attempt(|| run_step(client, run, p, step, &mut after));
            for (kind, payload) in after {
                run.event(client, kind, payload)?;
            }
            match result {
                Ok(o) => break Ok(o),
                Err(c) => {
                    let retry = is_transient(&c.sqlstate) && tries < step.retry.attempts;
                    let wait = if retry {
                        step.retry.delay_ms(tries + 1, rand::random::<f64>())
                    } else {
                        0
                    };
                    privilege::as_owner(|| {
                        client.update(
                            "UPDATE barecount.pipeline_run_steps SET attempts = attempts + 1, \
                                    attempt_errors = attempt_errors || jsonb_build_array(jsonb_build_object(\
                                      'attempt', attempts + 1, 'sqlstate', $3, 'message', $4, 'at', clock_timestamp(), 'retry_in_ms', $5)) \
                              WHERE run_id = $1 AND step = $2",
                            None,
                            &[run.run_id.into(), step.name.as_str().into(), c.sqlstate.as_str().into(),
                              c.message.as_str().into(), (wait as i64).into()],
                        )?;
                        Ok(())
                    })?;
                    if !retry {
                        break Err(c);
                    }
                    // interruptible: a cancel stops the run here
                    client.update(
                        "SELECT pg_sleep($1::float8 / 1000)",
                        None,
                        &[(wait as i64).into()],
                    )?;
                }
            }
        };
        match result {
            Ok(o) => finish_step(client, run, step, tries, &o)?,
            Err(c) => return fail(client, run, step, tries, &c),
        }
    }
    privilege::as_owner(|| {
        let mut receipts = Vec::new();
        for r in client.select(
            "SELECT ledger_seq FROM barecount.pipeline_run_steps WHERE run_id = $1 AND ledger_seq IS NOT NULL ORDER BY ordinal",
            None,
            &[run.run_id.into()],
        )? {
            if let Some(s) = r.get::<i64>(1)? {
                receipts.push(s);
            }
        }
        let receipt = ledger::append(
            client,
            &run.tenant_id,
            "pipeline_run",
            &run.subject(),
            &json!({"inputs": [], "outputs": [], "run_id": run.run_id, "status": "succeeded",
                    "period_from": run.from, "period_to": run.to, "step_receipts": receipts}),
            None,
        )?;
        client.update(
            "UPDATE barecount.pipeline_runs SET status = 'succeeded', finished_at = clock_timestamp(), ledger_seq = $2 WHERE run_id = $1",
            None,
            &[run.run_id.into(), receipt.seq.into()],
        )?;
        Ok(())
    })?;
    run.event(client, "run_finished", json!({"status": "succeeded"}))?;
    Ok((run.run_id, "succeeded".into(), false, None, None, None))
}

fn finish_step(
    client: &mut SpiClient<'_>,
    run: &Run,
    step: &Step,
    tries: u32,
    o: &Outcome,
) -> Result<(), SqlError> {
    let status = if o.skipped {
        "skipped"
    } else if o.warned {
        "warned"
    } else {
        "succeeded"
    };
    privilege::as_owner(|| {
        let receipt = ledger::append(
            client,
            &run.tenant_id,
            "pipeline_step",
            &format!("{}/{}", run.subject(), step.name),
            &json!({"inputs": o.receipts.iter().map(|s| format!("ledger:{s}")).collect::<Vec<_>>(), "outputs": [],
                    "run_id": run.run_id, "step": step.name, "kind": step.kind.label(), "status": status,
                    "attempts": tries, "rows_in": o.rows_in, "rows_out": o.rows_out}),
            None,
        )?;
        client.update(
            "UPDATE barecount.pipeline_run_steps SET status = $3, attempts = attempts + 1, rows_in = $4, rows_out = $5, receipts = $6, \
                    note = $7, ledger_seq = $8, finished_at = clock_timestamp(), error_sqlstate = NULL, error_message = NULL \
              WHERE run_id = $1 AND step = $2",
            None,
            &[run.run_id.into(), step.name.as_str().into(), status.into(), o.rows_in.into(),
              o.rows_out.into(), o.receipts.clone().into(), o.note.clone().into(), receipt.seq.into()],
        )?;
        Ok(())
    })
}

fn fail(
    client: &mut SpiClient<'_>,
    run: &Run,
    step: &Step,
    tries: u32,
    c: &Caught,
) -> Result<RunRow, SqlError> {
    privilege::as_owner(|| {
        client.update(
            "UPDATE barecount.pipeline_run_steps SET status = 'failed', error_sqlstate = $3, error_message = $4, \
                    finished_at = clock_timestamp() WHERE run_id = $1 AND step = $2",
            None,
            &[run.run_id.into(), step.name.as_str().into(), c.sqlstate.as_str().into(), c.message.as_str().into()],
        )?;
        let receipt = ledger::append(
            client,
            &run.tenant_id,
            "pipeline_run",
            &run.subject(),
            &json!({"inputs": [], "outputs": [], "run_id": run.run_id, "status": "failed", "failed_step": step.name,
                    "attempts": tries, "sqlstate": c.sqlstate, "message": c.message, "period_from": run.from, "period_to": run.to}),
            None,
        )?;
        client.update(
            "UPDATE barecount.pipeline_runs SET status = 'failed', finished_at = clock_timestamp(), failed_step = $2, \
                    error_sqlstate = $3, error_message = $4, ledger_seq = $5 WHERE run_id = $1",
            None,
            &[run.run_id.into(), step.name.as_str().into(), c.sqlstate.as_str().into(), c.message.as_str().into(), receipt.seq.into()],
        )?;
        Ok(())
    })?;
    run.event(
        client,
        "run_failed",
        json!({"step": step.name, "sqlstate": c.sqlstate, "message": c.message}),
    )?;
    pgrx::warning!(
        "pipeline \"{}\" run {} failed at step \"{}\": {} (SQLSTATE {})",
        run.name,
        run.run_id,
        step.name,
        c.message,
        c.sqlstate
    );
    Ok((
        run.run_id,
        "failed".into(),
        false,
        Some(step.name.clone()),
        Some(c.sqlstate.clone()),
        Some(c.message.clone()),
    ))
}

/// One attempt at a step, as the caller, inside the attempt's subtransaction; `after` takes
/// the events to emit whether or not the attempt stands.
fn run_step(
    client: &mut SpiClient<'_>,
    run: &Run,
    p: &Pipeline,
    step: &Step,
    after: &mut Vec<(&'static str, Value)>,
) -> Result<Outcome, Caught> {
    let r = (|| -> Result<Outcome, SqlError> {
        match &step.kind {
            StepKind::Ingest {
                dataset,
                source,
                quarantine,
            } => {
                let o =
                    connectors::ingest(client, &run.tenant_id, dataset, source, Some(run.run_id))?;
                let mut out = Outcome {
                    rows_in: Some(o.rows),
                    rows_out: Some(o.accepted),
                    receipts: o.ledger_seq.into_iter().collect(),
                    note: o.note.clone(),
                    skipped: o.skipped,
                    warned: false,
                };
                if let Some(rule) = quarantine {
                    if rule.breached(o.quarantined, o.rows) {
                        let what = format!(
                            "step \"{}\": batch {} quarantined {} of {} rows ({:.1}%), above the pipeline's {:.1}%",
                            step.name,
                            o.batch_id.unwrap_or(0),
                            o.quarantined,
                            o.rows,
                            100.0 * o.quarantined as f64 / o.rows as f64,
                            100.0 * rule.max_share
                        );
                        after.push(("quarantine_threshold", json!({"step": step.name,
                            "dataset": dataset, "quarantined": o.quarantined, "rows": o.rows, "max_share": rule.max_share,
                            "fail": rule.fail, "message": what})));
                        if rule.fail {
                            // the batch is rolled back with the attempt: nothing lands
                            return Err(SqlError::new(
                                PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
                                what,
                            )
                            .hint("Fix the feed or the contract, then resume the run."));
                        }
                        out.warned = true;
                        out.note = Some(what);
                    }
                }
                Ok(out)
            }
            StepKind::Model { model } => {
                let mut out = Outcome::default();
                for r in client.select(
                    "SELECT model, row_count, ledger_seq FROM barecount.model_run($1)",
                    None,
                    &[model.as_str().into()],
                )? {
                    if r.get::<String>(1)?.as_deref() == Some(model.as_str()) {
                        out.rows_out = r.get::<i64>(2)?;
                    }
                    out.receipts.extend(r.get::<i64>(3)?);
                }
                Ok(out)
            }
            StepKind::Kpi { kpi } => {
                let r = client.select(
                    "SELECT periods, row_count, ledger_seq FROM barecount.kpi_materialize($1, $2::date, $3::date)",
                    Some(1),
                    &[kpi.as_str().into(), run.from.as_str().into(), run.to.as_str().into()],
                )?;
                let r = r.first();
                Ok(Outcome {
                    rows_out: r.get::<i64>(2)?,
                    receipts: r.get::<i64>(3)?.into_iter().collect(),
                    note: r.get::<i64>(1)?.map(|n| format!("{n} periods")),
                    ..Outcome::default()
                })
            }
            StepKind::Publish { dataset, source } => {
                let r = client.select(
                    "SELECT version, row_count, ledger_seq FROM barecount.publish($1, $2)",
                    Some(1),
                    &[dataset.as_str().into(), source.as_str().into()],
                )?;
                let r = r.first();
                Ok(Outcome {
                    rows_out: r.get::<i64>(2)?,
                    receipts: r.get::<i64>(3)?.into_iter().collect(),
                    note: r.get::<i32>(1)?.map(|v| format!("{dataset}@{v}")),
                    ..Outcome::default()
                })
            }
            StepKind::Hook { event } => {
                run.event(
                    client,
                    "hook",
                    json!({"step": step.name, "event": event,
                    "calendar": p.calendar, "grain": p.grain}),
                )?;
                Ok(Outcome::default())
            }
        }
    })();
    r.map_err(|e| Caught {
        sqlstate: crate::subxact::sqlstate_text(e.code),
        message: e.message,
    })
}

/// Schedule a pipeline through pg_cron: `cron` is a cron expression; calendar-aware runs fire
/// on the schedule but run only on the first working day after a period of the pipeline's
/// calendar grain closes, over that period.
#[pg_extern(volatile, parallel_unsafe)]
fn pipeline_schedule(
    name: Option<&str>,
    cron: Option<&str>,
    calendar_aware: default!(Option<bool>, false),
) -> i64 {
    let name = required(name, "pipeline_schedule", "name");
    let cron = required(cron, "pipeline_schedule", "cron");
    let calendar_aware = required(calendar_aware, "pipeline_schedule", "calendar_aware");
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let (_, p) = load(client, &tenant_id, name, None)?;
        if calendar_aware && p.calendar.is_none() {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("pipeline \"{name}\" has no calendar, so its schedule cannot be calendar-aware"),
            )
            .hint("Give the pipeline a \"calendar\" and \"grain\", or schedule it with calendar_aware => false."));
        }
        require_cron(client)?;
        let job = format!("barecount:{tenant_id}:{name}");
        let command = format!(
            "SELECT barecount._pipeline_tick({}, {calendar_aware})",
            quote_literal(name)
        );
        let id = client
            .update(
                "SELECT cron.schedule($1, $2, $3)",
                Some(1),
                &[job.as_str().into(), cron.into(), command.as_str().into()],
            )?
            .first()
            .get::<i64>(1)?
            .unwrap_or(0);
        Ok::<_, SqlError>(id)
    })
    .or_raise()
}

/// Remove a pipeline's pg_cron schedule; true if there was one.
#[pg_extern(volatile, parallel_unsafe)]
fn pipeline_unschedule(name: &str) -> bool {
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        require_cron(client)?;
        let job = format!("barecount:{tenant_id}:{name}");
        let n = client
            .select(
                "SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user",
                None,
                &[job.as_str().into()],
            )?
            .len();
        if n == 0 {
            return Ok(false);
        }
        client.update("SELECT cron.unschedule($1)", None, &[job.as_str().into()])?;
        Ok::<_, SqlError>(true)
    })
    .or_raise()
}

fn require_cron(client: &SpiClient<'_>) -> Result<(), SqlError> {
    let n = client
        .select(
            "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'",
            None,
            &[],
        )?
        .len();
    if n == 0 {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pipelines are scheduled through pg_cron, which is not installed in this database",
        )
        .hint("Add pg_cron to shared_preload_libraries, set cron.database_name to this database, CREATE EXTENSION pg_cron and GRANT USAGE ON SCHEMA cron to the engineer roles; pipeline_run works without it."));
    }
    Ok(())
}
