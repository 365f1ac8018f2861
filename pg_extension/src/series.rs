//! KPI series: `kpi_anomalies` and `kpi_forecast` read a KPI's materialized rows (as the caller,
//! under its row-level security) and run `barecount_core::timeseries` over each dimension
//! combination's series; `watch` runs a KPI's own detector and forecast after each
//! materialization and turns new anomalies and forecast threshold crossings into events.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::tenant;
use barecount_core::ident::quote_ident;
use barecount_core::kpi::Kpi;
use barecount_core::layer::Layer;
use barecount_core::timeseries::anomaly::{self, detect_calendar};
use barecount_core::timeseries::ets::{self, forecast_calendar};
use barecount_core::timeseries::SeriesError;
use pgrx::datum::Date;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

impl From<SeriesError> for SqlError {
    fn from(e: SeriesError) -> Self {
        let code = match e {
            SeriesError::TooShort { .. }
            | SeriesError::NotPositive { .. }
            | SeriesError::NotFinite(_) => PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            SeriesError::Unknown { .. } | SeriesError::BadOption { .. } => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
        };
        SqlError::new(code, e.to_string())
    }
}

/// A period: its label and its first day (as ISO text and as a date).
pub(crate) struct Period {
    pub label: String,
    pub start: String,
    pub date: Date,
}

impl Period {
    fn from_row(r: &pgrx::spi::SpiHeapTupleData<'_>, first: usize) -> Result<Period, SqlError> {
        Ok(Period {
            label: r.get::<String>(first)?.unwrap_or_default(),
            start: r.get::<String>(first + 1)?.unwrap_or_default(),
            date: r.get::<Date>(first + 2)?.ok_or_else(|| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    "a period without a first day",
                )
            })?,
        })
    }
}

/// One series: per period the value, for one combination of dimension values.
pub(crate) struct Series {
    pub dims: Value,
    pub periods: Vec<Period>,
    pub values: Vec<f64>,
}

/// Reads a KPI's measure per dimension values, in period order (NULL values are skipped).
pub(crate) fn read(
    client: &SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    kpi: &Kpi,
    measure: &str,
) -> Result<Vec<Series>, SqlError> {
    let table = tenant::relation(tenant_id, Layer::Kpi, name);
    let dims = crate::kpis::dims_sql(kpi);
    let rows = client.select(
        &format!(
            "SELECT {dims}::text, ({m})::float8, period::text, period_start::text AS start_text, period_start FROM {table}
              WHERE tenant_id = $1 AND ({m}) IS NOT NULL ORDER BY 1, period_start",
            m = quote_ident(measure)
        ),
        None,
        &[tenant_id.into()],
    )?;
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for r in rows {
        let d = r.get::<String>(1)?.unwrap_or_default();
        let s = out.entry(d.clone()).or_insert_with(|| Series {
            dims: serde_json::from_str(&d).unwrap_or(Value::Null),
            periods: vec![],
            values: vec![],
        });
        s.values.push(r.get::<f64>(2)?.unwrap_or(f64::NAN));
        s.periods.push(Period::from_row(&r, 3)?);
    }
    Ok(out.into_values().collect())
}

/// Which periods are a 53rd week (an ISO or retail year's), when the season is 52 weeks: the
/// seasonal methods leave them out of the season so the other weeks keep their phase.
fn week53(periods: &[Period], m: usize) -> Vec<bool> {
    periods
        .iter()
        .map(|p| m == 52 && p.label.ends_with("-W53"))
        .collect()
}

fn opt(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, SqlError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("option \"{k}\" is a number, not {v}"),
            )
        }),
    }
}

fn season(kpi: &Kpi, o: &Map<String, Value>) -> Result<usize, SqlError> {
    match opt(o, "season")? {
        None => Ok(kpi.season_length()),
        Some(s) if (1.0..=366.0).contains(&s) && s.fract() == 0.0 => Ok(s as usize),
        Some(s) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("option \"season\" is a whole number of periods from 1 to 366, not {s}"),
        )),
    }
}

pub(crate) fn anomaly_method(
    kpi: &Kpi,
    method: &str,
    o: &Map<String, Value>,
) -> Result<anomaly::Method, SqlError> {
    if let Some(k) = o
        .keys()
        .find(|k| !["measure", "threshold", "max_share", "alpha", "season"].contains(&k.as_str()))
    {
        return Err(SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("unknown option \"{k}\""))
            .hint("Options: measure, threshold (robust z, default 3.5), max_share (esd, default 0.1), alpha (esd, default 0.05), season (periods; default from the grain)."));
    }
    Ok(anomaly::Method::parse(
        method,
        season(kpi, o)?,
        opt(o, "threshold")?,
        opt(o, "max_share")?,
        opt(o, "alpha")?,
    )?)
}

fn measure_of(name: &str, kpi: &Kpi, o: &Map<String, Value>) -> Result<String, SqlError> {
    match o.get("measure") {
        None if kpi.measures.len() == 1 => Ok(kpi.measures[0].0.clone()),
        None => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("KPI \"{name}\" has several measures; name one"),
        )
        .hint(format!(
            "Pass options => '{{\"measure\": \"{}\"}}'.",
            kpi.measures[0].0
        ))),
        Some(Value::String(m)) if kpi.measures.iter().any(|(n, _)| n == m) => Ok(m.clone()),
        Some(m) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("KPI \"{name}\" has no measure {m}"),
        )),
    }
}

fn option_map(o: Option<JsonbArg>) -> Result<Map<String, Value>, SqlError> {
    match o.map(|j| j.0) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(v) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("options are a JSON object, not {v}"),
        )),
    }
}

/// Anomaly detection over a KPI's materialized series, per dimension values: robust z-score
/// (`mad`), seasonal decomposition residuals (`seasonal`, the season from the KPI's grain) or
/// the generalized ESD test (`esd`). Options: measure, threshold, max_share, alpha, season.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_unsafe)]
fn kpi_anomalies(
    kpi: Option<&str>,
    method: default!(Option<&str>, "'seasonal'"),
    options: default!(Option<JsonbArg>, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(period, String),
        name!(period_start, Date),
        name!(dims, JsonB),
        name!(value, f64),
        name!(expected, f64),
        name!(score, f64),
        name!(is_anomaly, bool),
        name!(method, String),
    ),
> {
    let kpi = crate::errors::required(kpi, "kpi_anomalies", "kpi");
    let method = crate::errors::required(method, "kpi_anomalies", "method");
    let o = option_map(options).or_raise();
    let rows = Spi::connect(|client| {
        let tenant_id = tenant::current(client)?;
        let (_, k) = crate::kpis::definition(client, &tenant_id, kpi)?;
        let measure = measure_of(kpi, &k, &o)?;
        let m = anomaly_method(&k, method, &o)?;
        let mut out = Vec::new();
        for s in read(client, &tenant_id, kpi, &k, &measure)? {
            pgrx::check_for_interrupts!();
            let points =
                detect_calendar(&s.values, &week53(&s.periods, m.season()), m).map_err(|e| {
                    SqlError::from(e).detail(format!("KPI \"{kpi}\", dimension values {}", s.dims))
                })?;
            for (period, (v, p)) in s.periods.iter().zip(s.values.iter().zip(points)) {
                out.push((
                    period.label.clone(),
                    period.date,
                    JsonB(s.dims.clone()),
                    *v,
                    p.expected,
                    p.score,
                    p.is_anomaly,
                    m.name().to_owned(),
                ));
            }
        }
        Ok::<_, SqlError>(out)
    })
    .or_raise();
    TableIterator::new(rows)
}

/// The next `h` periods after the one starting on `last`, on the KPI's calendar and grain.
pub(crate) fn next_periods(
    client: &SpiClient<'_>,
    kpi: &Kpi,
    last: Date,
    h: usize,
) -> Result<Vec<Period>, SqlError> {
    let sql = kpi.next_periods_sql(&crate::kpis::calendar_literal(kpi));
    let mut out = Vec::with_capacity(h);
    for r in client.select(&sql, None, &[last.into(), (h as i32).into()])? {
        out.push(Period::from_row(&r, 1)?);
    }
    Ok(out)
}

/// Forecasts of a KPI's measure, per dimension values, for the next `horizon` periods of its
/// calendar and grain, with 80 % and 95 % prediction intervals. Methods: auto (the three ETS
/// models with the lowest AICc, combined by their Akaike weights), ets (the lowest AICc alone),
/// holt_winters_additive, holt_winters_multiplicative,
/// holt_winters_damped, holt, holt_damped, ses, any ETS model by its letters (ets_mam: relative
/// errors, additive trend, multiplicative season; ets_madn, ...), seasonal_naive, naive, drift.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_unsafe)]
fn kpi_forecast(
    kpi: Option<&str>,
    horizon: Option<i32>,
    method: default!(Option<&str>, "'auto'"),
    options: default!(Option<JsonbArg>, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(period, String),
        name!(period_start, Date),
        name!(step, i32),
        name!(dims, JsonB),
        name!(forecast, f64),
        name!(lo80, f64),
        name!(hi80, f64),
        name!(lo95, f64),
        name!(hi95, f64),
        name!(model, String),
    ),
> {
    let kpi = crate::errors::required(kpi, "kpi_forecast", "kpi");
    let horizon = crate::errors::required(horizon, "kpi_forecast", "horizon");
    let method = crate::errors::required(method, "kpi_forecast", "method");
    if !(1..=1000).contains(&horizon) {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("kpi_forecast: the horizon must be from 1 to 1000 periods, not {horizon}"),
        )
        .raise()
    }
    let o = option_map(options).or_raise();
    let rows = Spi::connect(|client| {
        let tenant_id = tenant::current(client)?;
        let (_, k) = crate::kpis::definition(client, &tenant_id, kpi)?;
        if let Some(key) = o
            .keys()
            .find(|x| !["measure", "season"].contains(&x.as_str()))
        {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown option \"{key}\""),
            )
            .hint("Options: measure, season."));
        }
        let measure = measure_of(kpi, &k, &o)?;
        let m = season(&k, &o)?;
        let method = ets::Method::parse(method, m)?;
        let mut out = Vec::new();
        for s in read(client, &tenant_id, kpi, &k, &measure)? {
            pgrx::check_for_interrupts!();
            let Some(last) = s.periods.last() else {
                continue;
            };
            let ahead = next_periods(client, &k, last.date, horizon as usize)?;
            let f = forecast_calendar(
                &s.values,
                &week53(&s.periods, m),
                &week53(&ahead, m),
                m,
                method,
            )
            .map_err(|e| {
                SqlError::from(e).detail(format!("KPI \"{kpi}\", dimension values {}", s.dims))
            })?;
            for (i, period) in ahead.into_iter().enumerate() {
                out.push((
                    period.label,
                    period.date,
                    i as i32 + 1,
                    JsonB(s.dims.clone()),
                    f.point[i],
                    f.lo80[i],
                    f.hi80[i],
                    f.lo95[i],
                    f.hi95[i],
                    f.model.clone(),
                ));
            }
        }
        Ok::<_, SqlError>(out)
    })
    .or_raise();
    TableIterator::new(rows)
}

/// After a materialization of [from, to] (SQL date literals): the KPI's detector flags
/// anomalies in the periods written, each new one an `anomaly` event; its forecast, when a
/// threshold on the measure is crossed within the horizon, a `forecast` event (once per
/// period, dimension values and level). Privileged section (the KPI table is BareCount's).
pub(crate) fn watch(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    kpi: &Kpi,
    from: &str,
    to: &str,
) -> Result<(), SqlError> {
    let range = client
        .select(
            &format!("SELECT ({from})::text, ({to})::text"),
            Some(1),
            &[],
        )?
        .first();
    let (lo, hi) = (
        range.get::<String>(1)?.unwrap_or_default(),
        range.get::<String>(2)?.unwrap_or_default(),
    );
    // the series of the detector's measure, read once (the forecast reuses it when it watches
    // the same measure)
    let watched = match &kpi.anomaly {
        Some(w) => Some((w, read(client, tenant_id, name, kpi, &w.measure)?)),
        None => None,
    };
    if let Some((w, series)) = &watched {
        let method = anomaly_method(kpi, &w.method, &w.options)?;
        for s in series {
            let Ok(points) =
                detect_calendar(&s.values, &week53(&s.periods, method.season()), method)
            else {
                continue;
            }; // too short yet: nothing to say
            for (period, (v, p)) in s.periods.iter().zip(s.values.iter().zip(points)) {
                let (label, start) = (&period.label, &period.start);
                if !p.is_anomaly || start.as_str() < lo.as_str() || start.as_str() > hi.as_str() {
                    continue;
                }
                let payload = json!({"kpi": name, "measure": w.measure, "period": label, "period_start": start, "dims": s.dims,
                                     "value": v, "expected": p.expected, "score": p.score, "method": method.name()});
                client.update(
                    "INSERT INTO barecount.kpi_anomaly_state (tenant_id, kpi, measure, period, dims, value, expected, score, method, event_id)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, barecount._event_emit($1, 'anomaly', 'kpi:' || $2 || '/' || $4, $10)
                      WHERE NOT EXISTS (SELECT 1 FROM barecount.kpi_anomaly_state s
                                         WHERE s.tenant_id = $1 AND s.kpi = $2 AND s.measure = $3 AND s.period = $4 AND s.dims = $5)",
                    None,
                    &[tenant_id.into(), name.into(), w.measure.as_str().into(), label.as_str().into(), JsonB(s.dims.clone()).into(),
                      (*v).into(), p.expected.into(), p.score.into(), method.name().into(), JsonB(payload).into()],
                )?;
            }
        }
    }
    if let Some(w) = &kpi.forecast {
        let m = season(kpi, &w.options)?;
        let horizon = w
            .options
            .get("horizon")
            .and_then(Value::as_f64)
            .unwrap_or(6.0)
            .clamp(1.0, 1000.0) as usize;
        let method = ets::Method::parse(&w.method, m)?;
        let own;
        let series = match &watched {
            Some((a, series)) if a.measure == w.measure => series,
            _ => {
                own = read(client, tenant_id, name, kpi, &w.measure)?;
                &own
            }
        };
        for s in series {
            let Some(last) = s.periods.last() else {
                continue;
            };
            let periods = next_periods(client, kpi, last.date, horizon)?;
            let Ok(f) = forecast_calendar(
                &s.values,
                &week53(&s.periods, m),
                &week53(&periods, m),
                m,
                method,
            ) else {
                continue;
            };
            for t in kpi.thresholds.iter().filter(|t| t.measure == w.measure) {
                let Some((i, level)) = f
                    .point
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i, t.level_of(*v)))
                    .find(|(_, l)| *l != "ok")
                else {
                    continue;
                };
                let (label, start) = (&periods[i].label, &periods[i].start);
                let payload = json!({"kpi": name, "measure": w.measure, "period": label, "period_start": start, "dims": s.dims,
                                     "forecast": f.point[i], "lo95": f.lo95[i], "hi95": f.hi95[i], "level": level, "steps_ahead": i + 1, "model": f.model});
                // once per KPI, measure, period, dimension values and level: kpi_threshold_state keeps it under a 'forecast:' period key
                client.update(
                    "WITH fresh AS (
                        INSERT INTO barecount.kpi_threshold_state AS st (tenant_id, kpi, measure, period, dims, level)
                        VALUES ($1, $2, $3, 'forecast:' || $4, $5, $6)
                        ON CONFLICT (tenant_id, kpi, measure, period, dims) DO UPDATE SET level = excluded.level
                        WHERE st.level IS DISTINCT FROM excluded.level RETURNING 1)
                     SELECT barecount._event_emit($1, 'forecast', 'kpi:' || $2 || '/' || $4, $7) FROM fresh",
                    None,
                    &[tenant_id.into(), name.into(), w.measure.as_str().into(), label.as_str().into(), JsonB(s.dims.clone()).into(), level.into(), JsonB(payload).into()],
                )?;
            }
        }
    }
    Ok(())
}
