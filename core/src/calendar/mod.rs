//! Calendars: Gregorian fiscal years with any start month, ISO 8601 week dates, and retail
//! 52/53-week years (4-4-5, 4-5-4, 5-4-4) ending on a chosen weekday, the last one of the end
//! month or the one nearest its end, with a configurable home for the 53rd week.
//!
//! Every function is pure: a spec and a date in, a period out. Dates outside
//! [`MIN_YEAR`, `MAX_YEAR`] are refused rather than answered wrongly.

mod retail;
mod spec;
mod working;

pub use working::{easter, WorkingDays};

pub use spec::{CalendarError, Grain, Spec, Week53, YearEnd, YearLabel};

use chrono::{Datelike, Duration, NaiveDate};

/// Supported calendar years.
pub const MIN_YEAR: i32 = 1900;
pub const MAX_YEAR: i32 = 2200;

/// A period of a calendar: which one it is, its label and its first and last day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub grain: Grain,
    /// The fiscal year's label (e.g. 2024 in FY2024).
    pub year: i32,
    /// 1-based index within the year (quarter 1-4, period 1-12, week 1-53, day 1-371).
    pub index: u32,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Period {
    /// `FY2024`, `FY2024-Q1`, `FY2024-P03`, `FY2024-W05`, `FY2024-D001`.
    pub fn label(&self) -> String {
        match self.grain {
            Grain::Year => format!("FY{}", self.year),
            Grain::Quarter => format!("FY{}-Q{}", self.year, self.index),
            Grain::Period => format!("FY{}-P{:02}", self.year, self.index),
            Grain::Week => format!("FY{}-W{:02}", self.year, self.index),
            Grain::Day => format!("FY{}-D{:03}", self.year, self.index),
        }
    }
}

fn check_range(d: NaiveDate) -> Result<(), CalendarError> {
    if d.year() < MIN_YEAR || d.year() > MAX_YEAR {
        return Err(CalendarError::OutOfRange(d));
    }
    Ok(())
}

/// The fiscal year containing `d`: (label, first day, last day).
pub fn year_of(spec: &Spec, d: NaiveDate) -> Result<(i32, NaiveDate, NaiveDate), CalendarError> {
    check_range(d)?;
    Ok(match spec {
        Spec::GregorianFiscal { start_month, label } => {
            let start_year = if d.month() >= *start_month {
                d.year()
            } else {
                d.year() - 1
            };
            let start = ymd(start_year, *start_month, 1)?;
            let end = ymd(start_year + 1, *start_month, 1)? - Duration::days(1);
            let name = match label {
                YearLabel::Start => start_year,
                YearLabel::End => end.year(),
            };
            (name, start, end)
        }
        Spec::IsoWeek => {
            let y = d.iso_week().year();
            let start = NaiveDate::from_isoywd_opt(y, 1, chrono::Weekday::Mon)
                .ok_or(CalendarError::OutOfRange(d))?;
            let next = NaiveDate::from_isoywd_opt(y + 1, 1, chrono::Weekday::Mon)
                .ok_or(CalendarError::OutOfRange(d))?;
            (y, start, next - Duration::days(1))
        }
        Spec::Retail(r) => retail::year_of(r, d)?,
    })
}

fn ymd(y: i32, m: u32, d: u32) -> Result<NaiveDate, CalendarError> {
    NaiveDate::from_ymd_opt(y, m, d)
        .ok_or(CalendarError::InvalidSpec(format!("no date {y}-{m}-{d}")))
}

/// The period of `grain` containing `d`.
pub fn period_of(spec: &Spec, grain: Grain, d: NaiveDate) -> Result<Period, CalendarError> {
    let (year, ystart, yend) = year_of(spec, d)?;
    let periods = match grain {
        Grain::Period | Grain::Quarter => Some(months(spec, year, ystart, yend)?),
        _ => None,
    };
    in_year(grain, d, year, ystart, yend, periods.as_deref())
}

/// The period of `grain` containing `d` within its fiscal year `year` [ystart, yend], whose
/// twelve periods (for the period and quarter grains) are `periods`.
fn in_year(
    grain: Grain,
    d: NaiveDate,
    year: i32,
    ystart: NaiveDate,
    yend: NaiveDate,
    periods: Option<&[(NaiveDate, NaiveDate)]>,
) -> Result<Period, CalendarError> {
    let day_index = (d - ystart).num_days() as u32 + 1;
    let make = |index: u32, start: NaiveDate, end: NaiveDate| Period {
        grain,
        year,
        index,
        start,
        end,
    };
    Ok(match grain {
        Grain::Year => make(1, ystart, yend),
        Grain::Day => make(day_index, d, d),
        Grain::Week => {
            let index = (day_index - 1) / 7 + 1;
            let start = ystart + Duration::days(i64::from(index - 1) * 7);
            let end = (start + Duration::days(6)).min(yend);
            make(index, start, end)
        }
        Grain::Period | Grain::Quarter => {
            let periods = periods.ok_or(CalendarError::OutOfRange(d))?;
            let i = periods.partition_point(|(_, e)| *e < d);
            let (s, e) = periods
                .get(i)
                .filter(|(s, _)| *s <= d)
                .ok_or(CalendarError::OutOfRange(d))?;
            if grain == Grain::Period {
                make(i as u32 + 1, *s, *e)
            } else {
                let q = i / 3;
                let (qs, qe) = (periods.get(q * 3), periods.get(q * 3 + 2));
                match (qs, qe) {
                    (Some((qs, _)), Some((_, qe))) => make(q as u32 + 1, *qs, *qe),
                    _ => return Err(CalendarError::OutOfRange(d)),
                }
            }
        }
    })
}

/// One fiscal year a [`YearCache`] keeps: its label, days and periods (empty where the
/// calendar has none, as ISO week calendars).
#[derive(Debug, Clone)]
struct CachedYear {
    year: i32,
    start: NaiveDate,
    end: NaiveDate,
    periods: Result<Vec<(NaiveDate, NaiveDate)>, CalendarError>,
    /// labels made so far, by grain and index (formatting is most of a label's cost)
    labels: Vec<(Grain, u32, String)>,
}

/// The fiscal years of one calendar met so far, so that answering for many dates (a query
/// over millions of rows) computes each year's bounds and periods once. Answers exactly what
/// [`period_of`] answers.
#[derive(Debug, Clone, Default)]
pub struct YearCache {
    /// sorted by start, never overlapping
    years: Vec<CachedYear>,
}

impl YearCache {
    pub fn period_of(
        &mut self,
        spec: &Spec,
        grain: Grain,
        d: NaiveDate,
    ) -> Result<Period, CalendarError> {
        let y = self.year_of(spec, d)?;
        Self::period_in(y, grain, d)
    }

    /// The label of the period of `grain` containing `d` (what `period_of(..).label()` gives),
    /// formatted once per period of a year for the year, quarter and period grains.
    pub fn label_of(
        &mut self,
        spec: &Spec,
        grain: Grain,
        d: NaiveDate,
    ) -> Result<String, CalendarError> {
        let y = self.year_of(spec, d)?;
        let p = Self::period_in(y, grain, d)?;
        if matches!(grain, Grain::Week | Grain::Day) {
            return Ok(p.label());
        }
        if let Some((_, _, l)) = y
            .labels
            .iter()
            .find(|(g, n, _)| *g == grain && *n == p.index)
        {
            return Ok(l.clone());
        }
        let l = p.label();
        y.labels.push((grain, p.index, l.clone()));
        Ok(l)
    }

    /// The cached fiscal year containing `d`, computed and kept the first time it is met.
    fn year_of(&mut self, spec: &Spec, d: NaiveDate) -> Result<&mut CachedYear, CalendarError> {
        check_range(d)?;
        let i = self.years.partition_point(|y| y.end < d);
        let hit = self.years.get(i).is_some_and(|y| y.start <= d);
        if !hit {
            let (year, start, end) = year_of(spec, d)?;
            let periods = months(spec, year, start, end);
            // bounded: a calendar has at most MAX_YEAR - MIN_YEAR + 2 fiscal years
            self.years.insert(
                i,
                CachedYear {
                    year,
                    start,
                    end,
                    periods,
                    labels: Vec::new(),
                },
            );
        }
        self.years.get_mut(i).ok_or(CalendarError::OutOfRange(d))
    }

    fn period_in(y: &CachedYear, grain: Grain, d: NaiveDate) -> Result<Period, CalendarError> {
        let periods = match grain {
            Grain::Period | Grain::Quarter => Some(y.periods.as_deref().map_err(Clone::clone)?),
            _ => None,
        };
        in_year(grain, d, y.year, y.start, y.end, periods)
    }
}

/// The twelve periods of a fiscal year (months, or retail periods of 4/5 weeks).
fn months(
    spec: &Spec,
    year: i32,
    ystart: NaiveDate,
    yend: NaiveDate,
) -> Result<Vec<(NaiveDate, NaiveDate)>, CalendarError> {
    match spec {
        Spec::Retail(r) => Ok(retail::periods(r, ystart, yend)),
        Spec::IsoWeek => Err(CalendarError::UnsupportedGrain {
            calendar: "ISO week",
            grain: Grain::Period,
            year,
        }),
        Spec::GregorianFiscal { .. } => {
            let mut out = Vec::with_capacity(12);
            let mut s = ystart;
            for _ in 0..12 {
                let next = if s.month() == 12 {
                    ymd(s.year() + 1, 1, 1)?
                } else {
                    ymd(s.year(), s.month() + 1, 1)?
                };
                out.push((s, next - Duration::days(1)));
                s = next;
            }
            Ok(out)
        }
    }
}

/// Every period of `grain` overlapping [from, to], in order (backfill scaffolding, date spines).
pub fn periods_between(
    spec: &Spec,
    grain: Grain,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Period>, CalendarError> {
    if to < from {
        return Err(CalendarError::InvalidRange { from, to });
    }
    check_range(to)?;
    let mut out = Vec::new();
    let mut d = from;
    while d <= to {
        let p = period_of(spec, grain, d)?;
        d = p.end + Duration::days(1);
        out.push(p);
    }
    Ok(out)
}

/// The period of `grain` numbered `index` in fiscal year `year` (the year's label), e.g.
/// period 3 of FY2024; None when the year has no such period (a 53rd week in a 52-week year).
pub fn period_by_label(
    spec: &Spec,
    grain: Grain,
    year: i32,
    index: u32,
) -> Result<Option<Period>, CalendarError> {
    if !(MIN_YEAR + 1..=MAX_YEAR - 1).contains(&year) {
        return Err(CalendarError::OutOfRange(
            NaiveDate::from_ymd_opt(year.clamp(MIN_YEAR - 1, MAX_YEAR + 1), 1, 1)
                .unwrap_or(NaiveDate::MIN),
        ));
    }
    // a fiscal year labelled `year` starts somewhere from a year before to a year after
    let mut d = NaiveDate::from_ymd_opt(year - 1, 1, 1).ok_or(CalendarError::InvalidRange {
        from: NaiveDate::MIN,
        to: NaiveDate::MIN,
    })?;
    for _ in 0..4 {
        let (label, start, end) = year_of(spec, d)?;
        if label == year {
            return Ok(periods_between(spec, grain, start, end)?
                .into_iter()
                .find(|p| p.year == year && p.index == index));
        }
        if label > year {
            return Ok(None);
        }
        d = end + Duration::days(1);
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
