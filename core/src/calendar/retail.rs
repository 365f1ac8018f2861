//! Retail 52/53-week years.

use super::spec::{CalendarError, Retail, Week53, YearEnd, YearLabel};
use chrono::{Datelike, Duration, NaiveDate};

/// The last day of the retail year that ends in calendar year `y`.
fn year_end(r: &Retail, y: i32) -> Result<NaiveDate, CalendarError> {
    let first_next = if r.end_month == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, r.end_month + 1, 1)
    }
    .ok_or_else(|| CalendarError::InvalidSpec(format!("no end month in {y}")))?;
    let last = first_next - Duration::days(1);
    let back = (last.weekday().num_days_from_monday() as i64
        - r.weekday.num_days_from_monday() as i64)
        .rem_euclid(7);
    let last_weekday = last - Duration::days(back);
    Ok(match r.year_end {
        YearEnd::Last => last_weekday,
        // the nearest is the last one on or before, unless the next one is closer
        YearEnd::Nearest if back > 3 => last_weekday + Duration::days(7),
        YearEnd::Nearest => last_weekday,
    })
}

pub(super) fn year_of(
    r: &Retail,
    d: NaiveDate,
) -> Result<(i32, NaiveDate, NaiveDate), CalendarError> {
    let mut y = d.year();
    let mut end = year_end(r, y)?;
    if d > end {
        y += 1;
        end = year_end(r, y)?;
    } else if d <= year_end(r, y - 1)? {
        y -= 1;
        end = year_end(r, y)?;
    }
    let start = year_end(r, y - 1)? + Duration::days(1);
    let name = match r.label {
        YearLabel::Start => start.year(),
        YearLabel::End => end.year(),
    };
    Ok((name, start, end))
}

/// The twelve periods of a retail year, the 53rd week (if any) in its configured period.
pub(super) fn periods(
    r: &Retail,
    ystart: NaiveDate,
    yend: NaiveDate,
) -> Vec<(NaiveDate, NaiveDate)> {
    let weeks_in_year = ((yend - ystart).num_days() + 1) / 7;
    let long_period = match r.week53 {
        Week53::LastPeriod => 12,
        Week53::LastPeriodOfQuarter(q) => q * 3,
    };
    let mut out = Vec::with_capacity(12);
    let mut s = ystart;
    for p in 1..=12u32 {
        let mut weeks = r.pattern[((p - 1) % 3) as usize] as i64;
        if weeks_in_year == 53 && p == long_period {
            weeks += 1;
        }
        let e = s + Duration::days(weeks * 7 - 1);
        out.push((s, e));
        s = e + Duration::days(1);
    }
    out
}
