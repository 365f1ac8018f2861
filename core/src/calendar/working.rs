//! Working days: weekends, holiday sets computed from rules (fixed dates, nth or last weekday of
//! a month, Easter-relative days, observed-day shifting) plus explicit dates, and company
//! calendars that add closures and extra working days to a base set.
//!
//! A calendar definition may carry, besides its period kind:
//! `"holidays": "us_federal" | "de_national"`, `"holiday_rules": [...]`,
//! `"closures": ["2024-12-24"]`, `"working_days": ["2024-12-28"]`,
//! `"weekend": ["sat", "sun"]` (the default). Rules: `{"fixed": "12-25", "observed": true}`,
//! `{"nth": 3, "weekday": "mon", "month": 1}`, `{"last": "mon", "month": 5}`,
//! `{"easter": -2}`; `"from"`/`"to"` years bound a rule (Juneteenth from 2021).

use super::spec::CalendarError;
use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum When {
    Fixed {
        month: u32,
        day: u32,
        observed: bool,
    },
    Nth {
        n: u32,
        weekday: Weekday,
        month: u32,
    },
    Last {
        weekday: Weekday,
        month: u32,
    },
    Easter(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    when: When,
    from: i32,
    to: i32,
}

/// A working-day calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingDays {
    weekend: Vec<Weekday>,
    rules: Vec<Rule>,
    closures: BTreeSet<NaiveDate>,
    working: BTreeSet<NaiveDate>,
}

fn bad(msg: impl Into<String>) -> CalendarError {
    CalendarError::InvalidSpec(msg.into())
}

pub(crate) fn weekday(s: &str) -> Result<Weekday, CalendarError> {
    Ok(match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        o => return Err(bad(format!("weekday \"{o}\" is not mon..sun"))),
    })
}

fn fixed(month: u32, day: u32, observed: bool) -> Rule {
    Rule {
        when: When::Fixed {
            month,
            day,
            observed,
        },
        from: i32::MIN,
        to: i32::MAX,
    }
}

fn nth(n: u32, weekday: Weekday, month: u32) -> Rule {
    Rule {
        when: When::Nth { n, weekday, month },
        from: i32::MIN,
        to: i32::MAX,
    }
}

fn builtin(name: &str) -> Result<Vec<Rule>, CalendarError> {
    use Weekday::*;
    Ok(match name {
        // 5 U.S.C. 6103, with the observance rule for Saturdays and Sundays
        "us_federal" => vec![
            fixed(1, 1, true),
            nth(3, Mon, 1),
            nth(3, Mon, 2),
            Rule {
                when: When::Last {
                    weekday: Mon,
                    month: 5,
                },
                from: i32::MIN,
                to: i32::MAX,
            },
            Rule {
                when: When::Fixed {
                    month: 6,
                    day: 19,
                    observed: true,
                },
                from: 2021,
                to: i32::MAX,
            },
            fixed(7, 4, true),
            nth(1, Mon, 9),
            nth(2, Mon, 10),
            fixed(11, 11, true),
            nth(4, Thu, 11),
            fixed(12, 25, true),
        ],
        // Germany's nationwide public holidays (no observed-day shifting)
        "de_national" => vec![
            fixed(1, 1, false),
            Rule {
                when: When::Easter(-2),
                from: i32::MIN,
                to: i32::MAX,
            },
            Rule {
                when: When::Easter(1),
                from: i32::MIN,
                to: i32::MAX,
            },
            fixed(5, 1, false),
            Rule {
                when: When::Easter(39),
                from: i32::MIN,
                to: i32::MAX,
            },
            Rule {
                when: When::Easter(50),
                from: i32::MIN,
                to: i32::MAX,
            },
            fixed(10, 3, false),
            fixed(12, 25, false),
            fixed(12, 26, false),
        ],
        o => {
            return Err(bad(format!(
                "holiday set \"{o}\" is unknown (us_federal, de_national)"
            )))
        }
    })
}

fn parse_rule(v: &Value) -> Result<Rule, CalendarError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad("a holiday rule is an object"))?;
    let month = |k: &str| match o.get(k).and_then(Value::as_u64) {
        Some(m @ 1..=12) => Ok(m as u32),
        _ => Err(bad("a holiday rule needs \"month\" 1 to 12")),
    };
    let when = if let Some(f) = o.get("fixed").and_then(Value::as_str) {
        let (m, d) = f
            .split_once('-')
            .ok_or_else(|| bad("\"fixed\" is \"MM-DD\""))?;
        let (m, d): (u32, u32) = (
            m.parse().map_err(|_| bad("bad month"))?,
            d.parse().map_err(|_| bad("bad day"))?,
        );
        NaiveDate::from_ymd_opt(2024, m, d).ok_or_else(|| bad(format!("no day {f}")))?;
        When::Fixed {
            month: m,
            day: d,
            observed: o.get("observed").and_then(Value::as_bool).unwrap_or(false),
        }
    } else if let Some(n) = o.get("nth").and_then(Value::as_u64) {
        if !(1..=5).contains(&n) {
            return Err(bad("\"nth\" is 1 to 5"));
        }
        let wd = weekday(
            o.get("weekday")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("\"nth\" needs \"weekday\""))?,
        )?;
        When::Nth {
            n: n as u32,
            weekday: wd,
            month: month("month")?,
        }
    } else if let Some(w) = o.get("last").and_then(Value::as_str) {
        When::Last {
            weekday: weekday(w)?,
            month: month("month")?,
        }
    } else if let Some(e) = o.get("easter") {
        // an offset from Easter Sunday within the same year or so: anything larger would move
        // the holiday years away (or overflow the date arithmetic)
        match e.as_i64() {
            Some(e) if (-MAX_EASTER_OFFSET..=MAX_EASTER_OFFSET).contains(&e) => When::Easter(e),
            _ => {
                return Err(bad(format!(
                    "holiday rule {{\"easter\": {e}}}: the offset must be an integer of days between -{MAX_EASTER_OFFSET} and {MAX_EASTER_OFFSET}"
                )))
            }
        }
    } else {
        return Err(bad("a holiday rule is fixed, nth, last or easter"));
    };
    let year = |k: &str, d: i32| o.get(k).and_then(Value::as_i64).map_or(d, |y| y as i32);
    Ok(Rule {
        when,
        from: year("from", i32::MIN),
        to: year("to", i32::MAX),
    })
}

fn dates(v: Option<&Value>, key: &str) -> Result<BTreeSet<NaiveDate>, CalendarError> {
    let mut out = BTreeSet::new();
    if let Some(v) = v {
        let list = v
            .as_array()
            .ok_or_else(|| bad(format!("\"{key}\" is a list of dates")))?;
        for d in list {
            let s = d
                .as_str()
                .ok_or_else(|| bad(format!("\"{key}\" holds YYYY-MM-DD strings")))?;
            out.insert(
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|_| bad(format!("\"{s}\" in \"{key}\" is not a date")))?,
            );
        }
    }
    Ok(out)
}

/// Western (Gregorian) Easter Sunday (anonymous Gregorian algorithm).
pub fn easter(y: i32) -> Option<NaiveDate> {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(y, month as u32, day as u32)
}

/// Largest Easter offset a holiday rule may have, in days.
pub const MAX_EASTER_OFFSET: i64 = 200;

/// Bounds of every working-day search: the supported date range.
fn lowest() -> NaiveDate {
    NaiveDate::from_ymd_opt(super::MIN_YEAR, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn highest() -> NaiveDate {
    NaiveDate::from_ymd_opt(super::MAX_YEAR, 12, 31).unwrap_or(NaiveDate::MAX)
}

/// Called every [`INTERRUPT_EVERY`] steps of a search, so a caller (Postgres) can cancel it.
pub type Interrupt<'a> = &'a mut dyn FnMut();

/// Steps between two interrupt checks.
pub const INTERRUPT_EVERY: u32 = 1024;

impl WorkingDays {
    /// Reads the working-day part of a calendar definition.
    pub fn parse(v: &Value) -> Result<WorkingDays, CalendarError> {
        let mut rules = match v.get("holidays").and_then(Value::as_str) {
            Some(name) => builtin(name)?,
            None => Vec::new(),
        };
        if let Some(list) = v.get("holiday_rules") {
            for r in list
                .as_array()
                .ok_or_else(|| bad("\"holiday_rules\" is a list"))?
            {
                rules.push(parse_rule(r)?);
            }
        }
        let weekend = match v.get("weekend") {
            None => vec![Weekday::Sat, Weekday::Sun],
            Some(Value::Array(days)) => days
                .iter()
                .map(|d| {
                    d.as_str()
                        .ok_or_else(|| bad("\"weekend\" lists weekday names"))
                        .and_then(weekday)
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("\"weekend\" lists weekday names")),
        };
        if (0..7u8).all(|i| Weekday::try_from(i).is_ok_and(|w| weekend.contains(&w))) {
            // searches for the next working day would only ever find the listed extra days
            return Err(bad(
                "\"weekend\" holds every day of the week: a calendar needs at least one working weekday",
            ));
        }
        Ok(WorkingDays {
            weekend,
            rules,
            closures: dates(v.get("closures"), "closures")?,
            working: dates(v.get("working_days"), "working_days")?,
        })
    }

    /// The holidays of calendar year `y` from the rules (observed dates where shifted).
    pub fn holidays(&self, y: i32) -> BTreeSet<NaiveDate> {
        let mut out = BTreeSet::new();
        for r in self.rules.iter().filter(|r| r.from <= y && y <= r.to) {
            let d = match r.when {
                When::Fixed {
                    month,
                    day,
                    observed,
                } => NaiveDate::from_ymd_opt(y, month, day).map(|d| {
                    if !observed {
                        return d;
                    }
                    match d.weekday() {
                        Weekday::Sat => d - Duration::days(1),
                        Weekday::Sun => d + Duration::days(1),
                        _ => d,
                    }
                }),
                When::Nth { n, weekday, month } => {
                    NaiveDate::from_weekday_of_month_opt(y, month, weekday, n as u8)
                }
                When::Last { weekday, month } => {
                    let first_next = if month == 12 {
                        NaiveDate::from_ymd_opt(y + 1, 1, 1)
                    } else {
                        NaiveDate::from_ymd_opt(y, month + 1, 1)
                    };
                    first_next.map(|f| {
                        let last = f - Duration::days(1);
                        let back = (last.weekday().num_days_from_monday() as i64
                            - weekday.num_days_from_monday() as i64)
                            .rem_euclid(7);
                        last - Duration::days(back)
                    })
                }
                When::Easter(offset) => easter(y).map(|e| e + Duration::days(offset)),
            };
            if let Some(d) = d {
                out.insert(d);
            }
        }
        out
    }

    pub fn is_holiday(&self, d: NaiveDate) -> bool {
        self.closures.contains(&d)
            || self.holidays(d.year()).contains(&d)
            // a 1 January holiday observed on the previous 31 December
            || (d.month() == 12 && self.holidays(d.year() + 1).contains(&d))
    }

    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        self.working.contains(&d) || (!self.weekend.contains(&d.weekday()) && !self.is_holiday(d))
    }

    /// The first working day on or after `d`, within the supported range.
    pub fn next_working_day(&self, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.next_working_day_with(d, &mut || {})
    }

    /// [`Self::next_working_day`], calling `interrupt` as it goes.
    pub fn next_working_day_with(
        &self,
        d: NaiveDate,
        interrupt: Interrupt<'_>,
    ) -> Result<NaiveDate, CalendarError> {
        let (mut x, mut steps) = (d, 0u32);
        while !self.is_working_day(x) {
            steps = steps.wrapping_add(1);
            if steps % INTERRUPT_EVERY == 0 {
                interrupt();
            }
            x = x
                .succ_opt()
                .filter(|n| *n <= highest())
                .ok_or(CalendarError::OutOfRange(d))?;
        }
        Ok(x)
    }

    /// The last working day on or before `d`, within the supported range.
    pub fn previous_working_day(&self, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.previous_working_day_with(d, &mut || {})
    }

    /// [`Self::previous_working_day`], calling `interrupt` as it goes.
    pub fn previous_working_day_with(
        &self,
        d: NaiveDate,
        interrupt: Interrupt<'_>,
    ) -> Result<NaiveDate, CalendarError> {
        let (mut x, mut steps) = (d, 0u32);
        while !self.is_working_day(x) {
            steps = steps.wrapping_add(1);
            if steps % INTERRUPT_EVERY == 0 {
                interrupt();
            }
            x = x
                .pred_opt()
                .filter(|p| *p >= lowest())
                .ok_or(CalendarError::OutOfRange(d))?;
        }
        Ok(x)
    }

    /// Working days in [from, to): zero when `to` <= `from`.
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> i64 {
        self.working_days_between_with(from, to, &mut || {})
    }

    /// [`Self::working_days_between`], calling `interrupt` as it goes.
    pub fn working_days_between_with(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        interrupt: Interrupt<'_>,
    ) -> i64 {
        let (mut n, mut steps) = (0, 0u32);
        let mut x = from;
        while x < to {
            steps = steps.wrapping_add(1);
            if steps % INTERRUPT_EVERY == 0 {
                interrupt();
            }
            if self.is_working_day(x) {
                n += 1;
            }
            x += Duration::days(1);
        }
        n
    }

    /// The working day with exactly `n` working days between the first working day on or after
    /// `d` and it; negative `n` counts backwards. So `add_working_days(d,
    /// working_days_between(d, e))` is the first working day on or after `e`. A result outside
    /// the supported range is an error, never an answer the other functions would refuse.
    pub fn add_working_days(&self, d: NaiveDate, n: i64) -> Result<NaiveDate, CalendarError> {
        self.add_working_days_with(d, n, &mut || {})
    }

    /// [`Self::add_working_days`], calling `interrupt` as it goes.
    pub fn add_working_days_with(
        &self,
        d: NaiveDate,
        n: i64,
        interrupt: Interrupt<'_>,
    ) -> Result<NaiveDate, CalendarError> {
        // more working days than there are days in the supported range: no answer, at once
        let span = (highest() - lowest()).num_days() + 1;
        if n.unsigned_abs() > span.unsigned_abs() {
            return Err(CalendarError::OutOfRange(d));
        }
        let step = |i: i64| i % i64::from(INTERRUPT_EVERY) == 0;
        if n >= 0 {
            let mut x = self.next_working_day_with(d, interrupt)?;
            for i in 0..n {
                if step(i) {
                    interrupt();
                }
                let after = x
                    .succ_opt()
                    .filter(|a| *a <= highest())
                    .ok_or(CalendarError::OutOfRange(d))?;
                x = self.next_working_day_with(after, interrupt)?;
            }
            Ok(x)
        } else {
            let mut x = self.previous_working_day_with(d, interrupt)?;
            for i in 0..(-n) {
                if step(i) {
                    interrupt();
                }
                let before = x
                    .pred_opt()
                    .filter(|b| *b >= lowest())
                    .ok_or(CalendarError::OutOfRange(d))?;
                x = self.previous_working_day_with(before, interrupt)?;
            }
            Ok(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn us_federal_holidays_match_the_published_dates() {
        let us = WorkingDays::parse(&json!({"holidays": "us_federal"})).unwrap();
        let h2024: Vec<String> = us.holidays(2024).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            h2024,
            [
                "2024-01-01",
                "2024-01-15",
                "2024-02-19",
                "2024-05-27",
                "2024-06-19",
                "2024-07-04",
                "2024-09-02",
                "2024-10-14",
                "2024-11-11",
                "2024-11-28",
                "2024-12-25"
            ]
        );
        // observed: 4 July 2026 is a Saturday -> Friday 3 July; 25 Dec 2022 a Sunday -> Monday 26
        assert!(us.is_holiday(d("2026-07-03")) && us.is_holiday(d("2022-12-26")));
        // 1 Jan 2022 (Saturday) was observed on Friday 31 Dec 2021
        assert!(us.is_holiday(d("2021-12-31")));
        assert!(
            !us.holidays(2020).iter().any(|h| h.month() == 6),
            "Juneteenth from 2021"
        );
    }

    #[test]
    fn german_holidays_follow_easter() {
        assert_eq!(easter(2024), Some(d("2024-03-31")));
        assert_eq!(easter(2025), Some(d("2025-04-20")));
        assert_eq!(easter(2000), Some(d("2000-04-23")));
        let de = WorkingDays::parse(&json!({"holidays": "de_national"})).unwrap();
        let h: Vec<String> = de.holidays(2024).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            h,
            [
                "2024-01-01",
                "2024-03-29",
                "2024-04-01",
                "2024-05-01",
                "2024-05-09",
                "2024-05-20",
                "2024-10-03",
                "2024-12-25",
                "2024-12-26"
            ]
        );
    }

    #[test]
    fn company_calendars_and_weekends() {
        let co = WorkingDays::parse(&json!({"holidays": "us_federal", "closures": ["2024-12-24"],
                                            "working_days": ["2024-12-28"], "weekend": ["fri", "sat"]}))
        .unwrap();
        assert!(!co.is_working_day(d("2024-12-24")));
        assert!(
            co.is_working_day(d("2024-12-28")),
            "an extra working Saturday"
        );
        assert!(!co.is_working_day(d("2024-12-27")), "Friday is weekend");
        assert!(co.is_working_day(d("2024-12-29")), "Sunday is not");
        assert!(WorkingDays::parse(&json!({"holidays": "mars"})).is_err());
        assert!(WorkingDays::parse(
            &json!({"holiday_rules": [{"nth": 9, "weekday": "mon", "month": 1}]})
        )
        .is_err());
        // a week without a working weekday is refused when defined, extra working days or not
        for v in [
            json!({"weekend": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}),
            json!({"weekend": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "working_days": ["2024-01-01"]}),
        ] {
            assert!(
                matches!(WorkingDays::parse(&v), Err(CalendarError::InvalidSpec(m)) if m.contains("weekend")),
                "{v}"
            );
        }
        // Easter offsets that would overflow the date arithmetic are refused with the rule
        for e in [1_000_000_000_i64, -201, 201] {
            assert!(
                matches!(WorkingDays::parse(&json!({"holiday_rules": [{"easter": e}]})),
                         Err(CalendarError::InvalidSpec(m)) if m.contains("easter")),
                "{e}"
            );
        }
        assert!(WorkingDays::parse(&json!({"holiday_rules": [{"easter": "x"}]})).is_err());
        assert!(WorkingDays::parse(&json!({"holiday_rules": [{"easter": 200}]})).is_ok());
    }

    #[test]
    fn searches_stay_in_range_and_can_be_interrupted() {
        let us = WorkingDays::parse(&json!({"holidays": "us_federal"})).unwrap();
        // no answer past 2200, at once, for any count
        for n in [
            1_000_000_i64,
            i64::from(i32::MAX),
            -1_000_000,
            i64::from(i32::MIN),
        ] {
            assert!(
                matches!(
                    us.add_working_days(d("2024-01-01"), n),
                    Err(CalendarError::OutOfRange(_))
                ),
                "{n}"
            );
        }
        // the last answer in range is given, the first past it refused
        let last = us.previous_working_day(d("2200-12-31")).unwrap();
        let to_last = us.working_days_between(d("2200-01-01"), last);
        assert_eq!(us.add_working_days(d("2200-01-01"), to_last).unwrap(), last);
        assert!(us.add_working_days(d("2200-01-01"), to_last + 1).is_err());
        let first = us.next_working_day(d("1900-01-01")).unwrap();
        assert!(us.add_working_days(first, -1).is_err());
        // the interrupt hook is called while a long search runs
        let mut calls = 0;
        let n = us.working_days_between_with(d("1900-01-01"), d("2200-12-31"), &mut || calls += 1);
        assert!(n > 70_000, "{n}");
        assert!(calls >= 100, "{calls}");
        let mut calls = 0;
        us.add_working_days_with(d("1900-01-02"), 70_000, &mut || calls += 1)
            .unwrap();
        assert!(calls >= 60, "{calls}");
    }

    #[test]
    fn working_day_arithmetic_is_consistent() {
        let us = WorkingDays::parse(&json!({"holidays": "us_federal", "closures": ["2024-12-24"]}))
            .unwrap();
        let start = d("2024-11-01");
        for i in 0..120 {
            let a = start + Duration::days(i % 37);
            let e = start + Duration::days(i);
            let n = us.working_days_between(a, e);
            assert_eq!(
                us.add_working_days(a, n).unwrap(),
                us.next_working_day(e).unwrap(),
                "{a} .. {e}"
            );
        }
        assert_eq!(
            us.add_working_days(d("2024-11-27"), 1).unwrap(),
            d("2024-11-29"),
            "over Thanksgiving"
        );
        assert_eq!(
            us.add_working_days(d("2024-11-29"), -1).unwrap(),
            d("2024-11-27")
        );
        assert_eq!(
            us.working_days_between(d("2024-12-23"), d("2024-12-27")),
            2,
            "23rd and 26th"
        );
    }
}
