//! Calendar definitions as JSON, and the errors calendar functions report.

use chrono::{NaiveDate, Weekday};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Year,
    Quarter,
    Period,
    Week,
    Day,
}

impl Grain {
    pub fn parse(s: &str) -> Result<Grain, CalendarError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "year" => Grain::Year,
            "quarter" => Grain::Quarter,
            "period" | "month" => Grain::Period,
            "week" => Grain::Week,
            "day" => Grain::Day,
            other => return Err(CalendarError::UnknownGrain(other.to_owned())),
        })
    }
}

impl std::fmt::Display for Grain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grain::Year => "year",
            Grain::Quarter => "quarter",
            Grain::Period => "period",
            Grain::Week => "week",
            Grain::Day => "day",
        })
    }
}

/// Which calendar year names a fiscal year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YearLabel {
    Start,
    End,
}

/// Where a retail year ends: the last `weekday` of the end month, or the one nearest its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YearEnd {
    Last,
    Nearest,
}

/// Which period receives the 53rd week of a long retail year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Week53 {
    LastPeriod,
    LastPeriodOfQuarter(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retail {
    /// Weeks of the three periods of each quarter, e.g. [4, 5, 4].
    pub pattern: [u32; 3],
    pub end_month: u32,
    pub weekday: Weekday,
    pub year_end: YearEnd,
    pub week53: Week53,
    pub label: YearLabel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    GregorianFiscal { start_month: u32, label: YearLabel },
    IsoWeek,
    Retail(Retail),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CalendarError {
    #[error("invalid calendar definition: {0}")]
    InvalidSpec(String),
    #[error("date {0} is outside the supported range (years 1900 to 2200)")]
    OutOfRange(NaiveDate),
    #[error("grain \"{0}\" is unknown (year, quarter, period, week, day)")]
    UnknownGrain(String),
    #[error("{calendar} calendars have no {grain} grain (year {year})")]
    UnsupportedGrain {
        calendar: &'static str,
        grain: Grain,
        year: i32,
    },
    #[error("range ends ({to}) before it starts ({from})")]
    InvalidRange { from: NaiveDate, to: NaiveDate },
}

fn bad(msg: impl Into<String>) -> CalendarError {
    CalendarError::InvalidSpec(msg.into())
}

fn label(v: Option<&Value>, default: YearLabel) -> Result<YearLabel, CalendarError> {
    match v {
        None => Ok(default),
        Some(Value::String(s)) if s == "start" => Ok(YearLabel::Start),
        Some(Value::String(s)) if s == "end" => Ok(YearLabel::End),
        // a non-string (1, true, null) is refused too, never silently ignored
        Some(o) => Err(bad(format!(
            "year_label must be \"start\" or \"end\", not {o}"
        ))),
    }
}

fn month(v: Option<&Value>, key: &str, default: u32) -> Result<u32, CalendarError> {
    match v {
        None => Ok(default),
        Some(x) => match x.as_u64() {
            Some(m @ 1..=12) => Ok(m as u32),
            _ => Err(bad(format!("{key} must be a month number 1 to 12"))),
        },
    }
}

impl Spec {
    /// Parses a definition such as `{"kind": "gregorian", "start_month": 4, "year_label": "end"}`,
    /// `{"kind": "iso_week"}` or `{"kind": "retail", "pattern": "4-5-4", "end_month": 1,
    /// "weekday": "sat", "year_end": "nearest", "week53": "last_period", "year_label": "start"}`
    /// (`retail_454`, `retail_445` and `retail_544` name the pattern in the kind).
    pub fn parse(v: &Value) -> Result<Spec, CalendarError> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("a calendar definition is a JSON object"))?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("\"kind\" is missing"))?;
        match kind {
            "gregorian" | "fiscal" => Ok(Spec::GregorianFiscal {
                start_month: month(obj.get("start_month"), "start_month", 1)?,
                label: label(obj.get("year_label"), YearLabel::End)?,
            }),
            "iso_week" | "iso" => Ok(Spec::IsoWeek),
            "retail" | "retail_454" | "retail_445" | "retail_544" => {
                let pattern_text = match kind {
                    "retail_454" => "4-5-4",
                    "retail_445" => "4-4-5",
                    "retail_544" => "5-4-4",
                    _ => obj.get("pattern").and_then(Value::as_str).ok_or_else(|| {
                        bad("retail calendars need \"pattern\" (4-4-5, 4-5-4 or 5-4-4)")
                    })?,
                };
                let pattern = match pattern_text {
                    "4-4-5" => [4, 4, 5],
                    "4-5-4" => [4, 5, 4],
                    "5-4-4" => [5, 4, 4],
                    o => return Err(bad(format!("pattern \"{o}\" is not 4-4-5, 4-5-4 or 5-4-4"))),
                };
                let weekday = super::working::weekday(
                    obj.get("weekday").and_then(Value::as_str).unwrap_or("sat"),
                )?;
                let year_end = match obj
                    .get("year_end")
                    .and_then(Value::as_str)
                    .unwrap_or("nearest")
                {
                    "nearest" => YearEnd::Nearest,
                    "last" => YearEnd::Last,
                    o => return Err(bad(format!("year_end \"{o}\" is not nearest or last"))),
                };
                let week53 = match obj.get("week53") {
                    None => Week53::LastPeriod,
                    Some(Value::String(s)) if s == "last_period" => Week53::LastPeriod,
                    Some(Value::Object(q)) => match q.get("quarter").and_then(Value::as_u64) {
                        Some(n @ 1..=4) => Week53::LastPeriodOfQuarter(n as u32),
                        _ => return Err(bad("week53 {\"quarter\": n} needs n from 1 to 4")),
                    },
                    Some(_) => return Err(bad("week53 is \"last_period\" or {\"quarter\": n}")),
                };
                Ok(Spec::Retail(Retail {
                    pattern,
                    end_month: month(obj.get("end_month"), "end_month", 1)?,
                    weekday,
                    year_end,
                    week53,
                    label: label(obj.get("year_label"), YearLabel::Start)?,
                }))
            }
            o => Err(bad(format!(
                "kind \"{o}\" is not gregorian, iso_week or retail"
            ))),
        }
    }
}
