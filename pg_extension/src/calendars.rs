//! Calendars from SQL: `calendar_create` (versioned) and the period functions over a named
//! calendar. Pure calendar math lives in `barecount_core::calendar`.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::{ledger, privilege, readonly, tenant};
use barecount_core::calendar::{self, CalendarError, Grain, Period, Spec, WorkingDays};
use chrono::NaiveDate;
use pgrx::datum::Date;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;

impl From<CalendarError> for SqlError {
    fn from(e: CalendarError) -> Self {
        use PgSqlErrorCode::*;
        let code = match &e {
            CalendarError::InvalidSpec(_)
            | CalendarError::UnknownGrain(_)
            | CalendarError::InvalidRange { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            CalendarError::OutOfRange(_) => ERRCODE_DATETIME_FIELD_OVERFLOW,
            CalendarError::UnsupportedGrain { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
        };
        SqlError::new(code, e.to_string())
    }
}

pub(crate) fn to_naive(d: Date) -> Result<NaiveDate, SqlError> {
    if !d.is_finite() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            "calendars have no infinite dates",
        ));
    }
    // from the stored day number (days since 2000-01-01), not pgrx's year()/month()/day(),
    // which each call extract() through the function manager (most of the time of a call)
    pg_epoch()
        .checked_add_signed(chrono::Duration::days(i64::from(d.to_pg_epoch_days())))
        .ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                "date out of range",
            )
        })
}

/// 2000-01-01, day 0 of Postgres dates.
fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn to_date(d: NaiveDate) -> Date {
    let days = (d - pg_epoch()).num_days();
    i32::try_from(days)
        .ok()
        .and_then(|days| Date::try_from(pg_sys::Datum::from(days)).ok())
        .filter(Date::is_finite)
        .ok_or_else(|| format!("date {d} is out of range"))
        .or_raise_internal()
}

trait OrRaiseInternal<T> {
    fn or_raise_internal(self) -> T;
}

impl<T, E: std::fmt::Display> OrRaiseInternal<T> for Result<T, E> {
    fn or_raise_internal(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => SqlError::new(
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                e.to_string(),
            )
            .raise(),
        }
    }
}

/// Create a calendar, or a new version of it when the definition changed; the same definition
/// again is a no-op returning the current version.
#[pg_extern(volatile, parallel_unsafe)]
fn calendar_create(name: &str, spec: JsonbArg) -> i32 {
    barecount_core::ident::check_dataset_name("calendar", name).or_raise();
    Spec::parse(&spec.0).or_raise();
    WorkingDays::parse(&spec.0).or_raise();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            tenant::lock_object(client, "calendar", &tenant_id, name)?;
            let latest = client.select(
                "SELECT version, spec = $3 FROM barecount.calendars WHERE tenant_id = $1 AND name = $2 \
                  ORDER BY version DESC LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), JsonB(spec.0.clone()).into()],
            )?;
            let (version, same) = if latest.is_empty() {
                (0, false)
            } else {
                let r = latest.first();
                (r.get::<i32>(1)?.unwrap_or(0), r.get::<bool>(2)?.unwrap_or(false))
            };
            if same {
                return Ok(version);
            }
            let version = version + 1;
            let receipt = ledger::append(
                client,
                &tenant_id,
                "calendar_create",
                &format!("calendar:{name}@{version}"),
                &json!({"inputs": [], "outputs": [], "spec": spec.0}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.calendars (tenant_id, name, version, spec, ledger_seq) VALUES ($1, $2, $3, $4, $5)",
                None,
                &[tenant_id.as_str().into(), name.into(), version.into(), JsonB(spec.0.clone()).into(), receipt.seq.into()],
            )?;
            Ok(version)
        })
    })
    .or_raise()
}

/// A calendar's period and working-day definitions.
struct Defined {
    spec: Spec,
    working: WorkingDays,
    /// the fiscal years met in this statement (each computed once, not once per row)
    years: RefCell<calendar::YearCache>,
}

/// (statement, name, calendar) — a calendar is resolved once per statement, not per row.
type Resolved = ((u32, u32, i64), String, Rc<Defined>);

thread_local! {
    static RESOLVED: RefCell<Option<Resolved>> = const { RefCell::new(None) };
}

fn calendar_of(name: &str) -> Rc<Defined> {
    let statement = privilege::statement_key();
    if let Some(s) = RESOLVED.with(|r| {
        r.borrow()
            .as_ref()
            .filter(|(k, n, _)| *k == statement && n == name)
            .map(|(_, _, s)| s.clone())
    }) {
        return s;
    }
    // read-only SPI: this runs inside parallel queries (see readonly.rs)
    let spec = (|| {
        let tenant_id = readonly::tenant()?;
        let Some(text) = readonly::one(
            "SELECT spec::text FROM barecount.calendars WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
            &[Some(&tenant_id), Some(name)],
        )?
        else {
            return Err(SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("calendar \"{name}\" does not exist"))
                .hint("Create it with barecount.calendar_create(name, spec)."));
        };
        let v = crate::jsonarg::parse(&text)?;
        Ok(Rc::new(Defined { spec: Spec::parse(&v)?, working: WorkingDays::parse(&v)?, years: RefCell::default() }))
    })()
    .or_raise();
    RESOLVED.with(|r| *r.borrow_mut() = Some((statement, name.to_owned(), spec.clone())));
    spec
}

/// A calendar's period definition (raises 42704 for an unknown calendar).
pub(crate) fn spec_of(name: &str) -> Spec {
    calendar_of(name).spec.clone()
}

/// The first working day of a calendar on or after `d`, as `next_working_day` answers it.
pub(crate) fn next_working_day_of(name: &str, d: NaiveDate) -> Result<NaiveDate, SqlError> {
    Ok(calendar_of(name)
        .working
        .next_working_day_with(d, &mut interrupt)?)
}

pub fn period_for(d: Date, calendar: &str, grain: &str) -> Period {
    period_of_grain(d, calendar, Grain::parse(grain).or_raise())
}

/// The label of the period of `grain` containing the date (formatted once per period).
fn label_of_grain(d: Date, calendar: &str, grain: Grain) -> String {
    in_cached_year(d, calendar, |years, spec, day| {
        years.label_of(spec, grain, day)
    })
}

fn period_of_grain(d: Date, calendar: &str, grain: Grain) -> Period {
    in_cached_year(d, calendar, |years, spec, day| {
        years.period_of(spec, grain, day)
    })
}

/// `f` over the statement's cache of the calendar's fiscal years, for the date.
fn in_cached_year<T>(
    d: Date,
    calendar: &str,
    f: impl FnOnce(&mut calendar::YearCache, &Spec, NaiveDate) -> Result<T, CalendarError>,
) -> T {
    let cal = calendar_of(calendar);
    let day = to_naive(d).or_raise();
    let mut years = cal.years.borrow_mut();
    f(&mut years, &cal.spec, day).or_raise()
}

// Parallel safety (audited for issue 13): the calendar functions labelled PARALLEL SAFE below
// only read. `calendar_of` looks the calendar up with read-only SPI (readonly.rs: no new
// command, so allowed in a parallel worker and in its leader even after the transaction has
// written, where pgrx's own SPI is refused) as the calling role, with its row-level security
// (current_tenant() works in a worker: the session user and settings are the leader's); its
// cache is a per-process thread_local keyed by the statement, so a worker keeps its own copy;
// no role switch, no write, no sequence, no NOTIFY. The date arithmetic is pure core code,
// bounded and interruptible.
/// The fiscal year (its label) containing the date.
#[pg_extern(stable, parallel_safe)]
fn fiscal_year(d: Date, calendar: &str) -> i32 {
    period_of_grain(d, calendar, Grain::Year).year
}

/// The fiscal quarter (1-4) containing the date.
#[pg_extern(stable, parallel_safe)]
fn fiscal_quarter(d: Date, calendar: &str) -> i32 {
    period_of_grain(d, calendar, Grain::Quarter).index as i32
}

/// The fiscal period's label, e.g. FY2024-P03.
#[pg_extern(stable, parallel_safe)]
fn fiscal_period(d: Date, calendar: &str) -> String {
    label_of_grain(d, calendar, Grain::Period)
}

/// The fiscal week (1-53) containing the date.
#[pg_extern(stable, parallel_safe)]
fn fiscal_week(d: Date, calendar: &str) -> i32 {
    period_of_grain(d, calendar, Grain::Week).index as i32
}

/// The day of the fiscal year (1-371).
#[pg_extern(stable, parallel_safe)]
fn fiscal_day_of_year(d: Date, calendar: &str) -> i32 {
    period_of_grain(d, calendar, Grain::Day).index as i32
}

/// The label of the period of `grain` (year, quarter, period, week, day) containing the date.
#[pg_extern(stable, parallel_safe)]
fn period_label(d: Date, calendar: &str, grain: &str) -> String {
    label_of_grain(d, calendar, Grain::parse(grain).or_raise())
}

/// The first day of the period of `grain` containing the date.
#[pg_extern(stable, parallel_safe)]
fn period_start(d: Date, calendar: &str, grain: &str) -> Date {
    to_date(period_for(d, calendar, grain).start)
}

/// The last day of the period of `grain` containing the date.
#[pg_extern(stable, parallel_safe)]
fn period_end(d: Date, calendar: &str, grain: &str) -> Date {
    to_date(period_for(d, calendar, grain).end)
}

/// Every period of `grain` overlapping [from, to]: backfill scaffolding and date spines.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
fn calendar_periods(
    calendar: &str,
    grain: &str,
    from: Date,
    to: Date,
) -> TableIterator<
    'static,
    (
        name!(label, String),
        name!(fiscal_year, i32),
        name!(index, i32),
        name!(period_start, Date),
        name!(period_end, Date),
    ),
> {
    let cal = calendar_of(calendar);
    let g = Grain::parse(grain).or_raise();
    let periods = calendar::periods_between(
        &cal.spec,
        g,
        to_naive(from).or_raise(),
        to_naive(to).or_raise(),
    )
    .or_raise();
    if periods.len() > 1_000_000 {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "more than a million periods requested",
        )
        .hint("Ask for a shorter range or a coarser grain.")
        .raise()
    }
    TableIterator::new(
        periods
            .into_iter()
            .map(|p| {
                (
                    p.label(),
                    p.year,
                    p.index as i32,
                    to_date(p.start),
                    to_date(p.end),
                )
            })
            .collect::<Vec<_>>(),
    )
}

fn in_range(d: Date) -> NaiveDate {
    let n = to_naive(d).or_raise();
    use chrono::Datelike;
    if n.year() < calendar::MIN_YEAR || n.year() > calendar::MAX_YEAR {
        SqlError::from(CalendarError::OutOfRange(n)).raise()
    }
    n
}

/// Lets Postgres cancel a long working-day search (statement_timeout, pg_cancel_backend).
fn interrupt() {
    check_for_interrupts!();
}

/// Whether the date is a working day of the calendar (weekend, holidays, closures, extra days).
#[pg_extern(stable, parallel_safe)]
fn is_working_day(d: Date, calendar: &str) -> bool {
    calendar_of(calendar).working.is_working_day(in_range(d))
}

/// Working days in [from, to) (zero when to <= from).
#[pg_extern(stable, parallel_safe)]
fn working_days_between(from: Date, to: Date, calendar: &str) -> i64 {
    calendar_of(calendar).working.working_days_between_with(
        in_range(from),
        in_range(to),
        &mut interrupt,
    )
}

/// The working day n working days after the first working day on or after d (n < 0: before).
#[pg_extern(stable, parallel_safe)]
fn add_working_days(d: Date, n: i32, calendar: &str) -> Date {
    to_date(
        calendar_of(calendar)
            .working
            .add_working_days_with(in_range(d), i64::from(n), &mut interrupt)
            .or_raise(),
    )
}

/// The first working day on or after the date.
#[pg_extern(stable, parallel_safe)]
fn next_working_day(d: Date, calendar: &str) -> Date {
    to_date(
        calendar_of(calendar)
            .working
            .next_working_day_with(in_range(d), &mut interrupt)
            .or_raise(),
    )
}

/// The last working day on or before the date.
#[pg_extern(stable, parallel_safe)]
fn previous_working_day(d: Date, calendar: &str) -> Date {
    to_date(
        calendar_of(calendar)
            .working
            .previous_working_day_with(in_range(d), &mut interrupt)
            .or_raise(),
    )
}
