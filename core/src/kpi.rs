//! KPI definitions and the SQL that materializes them per period.
//!
//! ```json
//! {"source": "gdp.orders", "time": "order_date",
//!  "grain": "month",                                  // day, week (ISO), month, quarter, year
//!  "calendar": "nrf",                                 // optional: grain is then a calendar grain
//!  "dimensions": ["region"],
//!  "measures": {"net_sales": "sum(amount)", "orders": "count(*)",
//!               "avg_ticket": {"ratio": ["sum(amount)", "count(*)"]}},
//!  "filter": "amount > 0"}
//! ```
//!
//! A ratio is the ratio of the two aggregates per period and dimension values (never an
//! average of per-row ratios).

use crate::ident::quote_ident;
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid KPI definition: {0}")]
pub struct KpiError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    Aggregate(String),
    Ratio(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kpi {
    pub source: String,
    pub time: String,
    pub grain: String,
    pub calendar: Option<String>,
    pub dimensions: Vec<String>,
    pub measures: Vec<(String, Measure)>,
    pub filter: Option<String>,
    pub thresholds: Vec<Threshold>,
    /// Anomaly detection run on each materialization (new anomalies become events).
    pub anomaly: Option<Watch>,
    /// A forecast run on each materialization: a threshold crossed within the horizon is an event.
    pub forecast: Option<Watch>,
}

/// An anomaly detector or forecast a KPI runs on each materialization, on one measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub measure: String,
    pub method: String,
    /// anomaly options (threshold, max_share, alpha, season) or forecast options (horizon, season)
    pub options: serde_json::Map<String, Value>,
}

/// A threshold on a measure: `below` breaches when the value falls under a level, `above`
/// when it rises over it; `critical` is the further level.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub measure: String,
    pub above: bool,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
}

impl Threshold {
    /// The level ('ok', 'warn', 'critical') of a value, as [`Threshold::level_sql`] computes it.
    pub fn level_of(&self, v: f64) -> &'static str {
        let past = |l: f64| if self.above { v > l } else { v < l };
        if self.critical.is_some_and(past) {
            "critical"
        } else if self.warn.is_some_and(past) {
            "warn"
        } else {
            "ok"
        }
    }

    /// SQL for the level ('ok', 'warn', 'critical') of the measure column.
    pub fn level_sql(&self) -> String {
        let col = quote_ident(&self.measure);
        let cmp = if self.above { ">" } else { "<" };
        let mut case = String::from("CASE");
        if let Some(c) = self.critical {
            case.push_str(&format!(" WHEN ({col})::float8 {cmp} {c} THEN 'critical'"));
        }
        if let Some(w) = self.warn {
            case.push_str(&format!(" WHEN ({col})::float8 {cmp} {w} THEN 'warn'"));
        }
        case.push_str(" ELSE 'ok' END");
        case
    }
}

fn ident(s: &str, what: &str) -> Result<String, KpiError> {
    if !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(s.to_owned())
    } else {
        Err(KpiError(format!(
            "{what} \"{s}\" must be a lower-case identifier"
        )))
    }
}

impl Kpi {
    /// The season length of the KPI's grain: 7 days, 52 weeks (a 53-week retail year's extra
    /// week falls to the next season's first), 12 months or periods, 4 quarters, none for years.
    pub fn season_length(&self) -> usize {
        match self.grain.as_str() {
            "day" => 7,
            "week" => 52,
            "month" | "period" => 12,
            "quarter" => 4,
            _ => 1,
        }
    }

    pub fn parse(v: &Value) -> Result<Kpi, KpiError> {
        let o = v
            .as_object()
            .ok_or_else(|| KpiError("a KPI definition is a JSON object".into()))?;
        let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        let source = text("source")
            .ok_or_else(|| KpiError("\"source\" (a gdp or kpi table) is missing".into()))?;
        let (schema, table) = source
            .split_once('.')
            .ok_or_else(|| KpiError("\"source\" is schema.table".into()))?;
        if crate::layer::layer_of(schema).is_none() {
            return Err(KpiError(format!(
                "source schema \"{schema}\" is not gdp, kpi, raw or published (or a tenant's gdp_<tenant>, kpi_<tenant>, published_<tenant>)"
            )));
        }
        ident(table, "source table")?;
        let time = ident(
            &text("time")
                .ok_or_else(|| KpiError("\"time\" (the date column) is missing".into()))?,
            "time column",
        )?;
        let calendar = text("calendar");
        let grain = text("grain").unwrap_or_else(|| "month".into());
        let known = if calendar.is_some() {
            ["year", "quarter", "period", "week", "day"].contains(&grain.as_str())
        } else {
            ["day", "week", "month", "quarter", "year"].contains(&grain.as_str())
        };
        if !known {
            return Err(KpiError(format!(
                "grain \"{grain}\" is not known{}",
                if calendar.is_some() {
                    " for a calendar"
                } else {
                    ""
                }
            )));
        }
        let dimensions = match o.get("dimensions") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_str()
                        .ok_or_else(|| KpiError("dimensions are column names".into()))
                        .and_then(|d| ident(d, "dimension"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(KpiError("\"dimensions\" is a list".into())),
        };
        let mut measures = Vec::new();
        match o.get("measures") {
            Some(Value::Object(m)) if !m.is_empty() => {
                // by name, whatever order the definition wrote them in (serde_json keeps
                // insertion order where a dependency asks for it): the columns' order is stable
                let mut named: Vec<(&String, &Value)> = m.iter().collect();
                named.sort_by(|a, b| a.0.cmp(b.0));
                for (name, def) in named {
                    let name = ident(name, "measure")?;
                    let measure = match def {
                        Value::String(s) => Measure::Aggregate(s.clone()),
                        Value::Object(r) => match r.get("ratio").and_then(Value::as_array).map(Vec::as_slice) {
                            Some([Value::String(a), Value::String(b)]) => Measure::Ratio(a.clone(), b.clone()),
                            _ => return Err(KpiError(format!("measure \"{name}\": a ratio is {{\"ratio\": [numerator, denominator]}}"))),
                        },
                        _ => return Err(KpiError(format!("measure \"{name}\" is an aggregate expression or a ratio"))),
                    };
                    measures.push((name, measure));
                }
            }
            _ => {
                return Err(KpiError(
                    "\"measures\" is a non-empty object of name: aggregate".into(),
                ))
            }
        }
        for (n, _) in &measures {
            if dimensions.contains(n)
                || ["period", "period_start", "period_end", "tenant_id"].contains(&n.as_str())
            {
                return Err(KpiError(format!(
                    "measure \"{n}\" clashes with a column name"
                )));
            }
        }
        let mut thresholds = Vec::new();
        if let Some(t) = o.get("thresholds") {
            for th in t
                .as_array()
                .ok_or_else(|| KpiError("\"thresholds\" is a list".into()))?
            {
                let measure = th
                    .get("measure")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if !measures.iter().any(|(n, _)| *n == measure) {
                    return Err(KpiError(format!(
                        "threshold on unknown measure \"{measure}\""
                    )));
                }
                let above = match th.get("direction").and_then(Value::as_str) {
                    Some("above") => true,
                    Some("below") => false,
                    _ => {
                        return Err(KpiError(
                            "a threshold's \"direction\" is above or below".into(),
                        ))
                    }
                };
                let (warn, critical) = (
                    th.get("warn").and_then(Value::as_f64),
                    th.get("critical").and_then(Value::as_f64),
                );
                if warn.is_none() && critical.is_none() {
                    return Err(KpiError(
                        "a threshold needs \"warn\" or \"critical\"".into(),
                    ));
                }
                thresholds.push(Threshold {
                    measure,
                    above,
                    warn,
                    critical,
                });
            }
        }
        let watch = |key: &str,
                     methods: &[&str],
                     allowed: &[&str]|
         -> Result<Option<Watch>, KpiError> {
            let Some(w) = o.get(key) else { return Ok(None) };
            let w = w.as_object().ok_or_else(|| {
                KpiError(format!(
                    "\"{key}\" is an object: {{\"measure\": …, \"method\": …}}"
                ))
            })?;
            if let Some(k) = w
                .keys()
                .find(|k| !allowed.contains(&k.as_str()) && *k != "measure" && *k != "method")
            {
                return Err(KpiError(format!(
                    "{key}: unknown key \"{k}\" (allowed: measure, method, {})",
                    allowed.join(", ")
                )));
            }
            let measure = match w.get("measure").and_then(Value::as_str) {
                Some(m) if measures.iter().any(|(n, _)| n == m) => m.to_owned(),
                Some(m) => return Err(KpiError(format!("{key}: unknown measure \"{m}\""))),
                None if measures.len() == 1 => measures[0].0.clone(),
                None => {
                    return Err(KpiError(format!(
                        "{key}: name the \"measure\" (the KPI has several)"
                    )))
                }
            };
            let method = w
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or(methods[0])
                .to_owned();
            // a forecast's method may also be any ETS model by its letters (ets_mam, ...)
            let ets_model = key == "forecast"
                && method.starts_with("ets_")
                && crate::timeseries::ets::Method::parse(&method, 12).is_ok();
            if !methods.contains(&method.as_str()) && !ets_model {
                return Err(KpiError(format!(
                    "{key}: unknown method \"{method}\" (methods: {}{})",
                    methods.join(", "),
                    if key == "forecast" {
                        ", or any ETS model as ets_<error><trend><season>: ets_mam, ets_madn, ..."
                    } else {
                        ""
                    }
                )));
            }
            for (k, v) in w.iter().filter(|(k, _)| allowed.contains(&k.as_str())) {
                if !v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0) {
                    return Err(KpiError(format!("{key}.{k}: a positive number, not {v}")));
                }
            }
            let mut options = w.clone();
            options.remove("measure");
            options.remove("method");
            Ok(Some(Watch {
                measure,
                method,
                options,
            }))
        };
        let anomaly = watch(
            "anomaly",
            &["seasonal", "mad", "esd"],
            &["threshold", "max_share", "alpha", "season"],
        )?;
        let forecast = watch(
            "forecast",
            &[
                "auto",
                "ses",
                "holt",
                "holt_damped",
                "holt_winters_additive",
                "holt_winters_multiplicative",
                "holt_winters_damped",
                "seasonal_naive",
                "naive",
                "drift",
            ],
            &["horizon", "season"],
        )?;
        if let Some(f) = &forecast {
            if !thresholds.iter().any(|t| t.measure == f.measure) {
                return Err(KpiError(format!(
                    "forecast: measure \"{}\" has no threshold to watch for",
                    f.measure
                )));
            }
        }
        Ok(Kpi {
            source,
            time,
            grain,
            calendar,
            dimensions,
            measures,
            filter: text("filter"),
            thresholds,
            anomaly,
            forecast,
        })
    }

    /// SQL for the period of a row: (its label, from a column `period_start`; its first day,
    /// from the time column; its last day, from `period_start`). The first day is all that is
    /// computed per source row; the label and last day once per period.
    fn period_exprs(&self, calendar_literal: &str) -> (String, String, String) {
        let t = format!("({}::date)", quote_ident(&self.time));
        let g = &self.grain;
        match &self.calendar {
            Some(_) => (
                format!("barecount.period_label(period_start, {calendar_literal}, '{g}')"),
                format!("barecount.period_start({t}, {calendar_literal}, '{g}')"),
                format!("barecount.period_end(period_start, {calendar_literal}, '{g}')"),
            ),
            None => {
                let fmt = match g.as_str() {
                    "day" => "YYYY-MM-DD",
                    "week" => "IYYY-\"W\"IW",
                    "month" => "YYYY-MM",
                    "quarter" => "YYYY-\"Q\"Q",
                    _ => "YYYY",
                };
                (
                    format!("to_char(period_start, '{fmt}')"),
                    if g == "day" {
                        t
                    } else {
                        format!("(date_trunc('{g}', {t}))::date")
                    },
                    // Postgres has no '1 quarter' interval
                    format!(
                        "((period_start + interval '{}') - interval '1 day')::date",
                        if g == "quarter" {
                            "3 months".to_owned()
                        } else {
                            format!("1 {g}")
                        }
                    ),
                )
            }
        }
    }

    /// SQL for the first day of the period containing the time column.
    pub fn period_start_sql(&self, calendar_literal: &str) -> String {
        self.period_exprs(calendar_literal).1
    }

    /// SQL for the `$2` periods after the one starting on `$1`: (label, first day as text,
    /// first day), in order, from the same period expressions the KPI is materialized with
    /// (a retail calendar's 53rd week included where its year has one).
    pub fn next_periods_sql(&self, calendar_literal: &str) -> String {
        let (label, _, end) = self.period_exprs(calendar_literal);
        format!(
            "WITH RECURSIVE p(n, period_start) AS (
                SELECT 1, ({end}) + 1 FROM (SELECT $1::date AS period_start) s
              UNION ALL
                SELECT n + 1, ({end}) + 1 FROM p WHERE n < $2)
             SELECT {label}, period_start::text, period_start FROM p ORDER BY n"
        )
    }

    /// The materializing query for periods whose start lies in [$1, $2]; `calendar_literal`
    /// is the quoted calendar name (or anything when there is none).
    ///
    /// The source's rows are aggregated by period start and dimensions first, with the period
    /// computed once per row; the label and last day are computed once per group after. Rows
    /// are read where the time column lies in [$1, $2 + the longest period of the grain]:
    /// the rows of every period starting by $2 and few others (a date time column can use its
    /// index), and groups of periods outside [$1, $2] are dropped after.
    pub fn query(&self, calendar_literal: &str) -> String {
        let t = format!("({}::date)", quote_ident(&self.time));
        let (label, start, end) = self.period_exprs(calendar_literal);
        let dims: Vec<String> = self.dimensions.iter().map(|d| quote_ident(d)).collect();
        let names: Vec<String> = self.measures.iter().map(|(n, _)| quote_ident(n)).collect();
        let measures: Vec<String> = self
            .measures
            .iter()
            .map(|(n, m)| match m {
                Measure::Aggregate(e) => format!("({e}) AS {}", quote_ident(n)),
                Measure::Ratio(a, b) => format!(
                    "(({a})::numeric / nullif(({b})::numeric, 0)) AS {}",
                    quote_ident(n)
                ),
            })
            .collect();
        let (schema, table) = self.source.split_once('.').unwrap_or(("gdp", &self.source));
        let mut inner = vec![format!("{start} AS period_start")];
        inner.extend(dims.iter().cloned());
        inner.extend(measures);
        let mut outer = vec![
            format!("{label} AS period"),
            "period_start".to_owned(),
            format!("{end} AS period_end"),
        ];
        outer.extend(dims.iter().cloned());
        outer.extend(names);
        let group: Vec<String> = (1..=1 + dims.len()).map(|i| i.to_string()).collect();
        format!(
            "SELECT {} FROM (SELECT {} FROM {}.{} WHERE {t} BETWEEN $1 AND $2 + {}{} GROUP BY {}) k \
             WHERE period_start BETWEEN $1 AND $2",
            outer.join(", "),
            inner.join(", "),
            quote_ident(schema),
            quote_ident(table),
            self.longest_period_days() - 1,
            self.filter
                .as_ref()
                .map(|f| format!(" AND ({f})"))
                .unwrap_or_default(),
            group.join(", ")
        )
    }

    /// The most days one period of the KPI's grain has, in any calendar BareCount knows
    /// (retail periods: 5 weeks, 6 with a 53rd week; retail quarters: 14 weeks).
    fn longest_period_days(&self) -> u32 {
        match self.grain.as_str() {
            "day" => 1,
            "week" => 7,
            "month" => 31,
            "period" => 42,
            "quarter" => 98,
            _ => 371,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_quarter_ends_three_months_on_and_next_periods_use_the_same_expressions() {
        let q = Kpi::parse(&json!({"source": "gdp.orders", "time": "d", "grain": "quarter", "measures": {"n": "count(*)"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        // Postgres has no '1 quarter' interval: the period's end is three months on
        assert!(
            q.query("NULL").contains("interval '3 months'"),
            "{}",
            q.query("NULL")
        );
        assert!(!q.query("NULL").contains("1 quarter"));
        let next = q.next_periods_sql("NULL");
        assert!(
            next.contains("to_char(period_start, 'YYYY-\"Q\"Q')")
                && next.contains("interval '3 months'"),
            "{next}"
        );
        let nrf = Kpi::parse(&json!({"source": "gdp.orders", "time": "d", "calendar": "nrf", "grain": "week", "measures": {"n": "count(*)"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let next = nrf.next_periods_sql("'nrf'");
        assert!(
            next.contains("barecount.period_end(period_start, 'nrf', 'week')")
                && next.contains("barecount.period_label(period_start, 'nrf', 'week')"),
            "{next}"
        );
    }

    #[test]
    fn anomaly_and_forecast_watches_are_checked() {
        let base = |extra: Value| {
            let mut v = json!({"source": "gdp.orders", "time": "d", "grain": "month", "measures": {"net": "sum(a)", "n": "count(*)"},
                               "thresholds": [{"measure": "net", "direction": "below", "warn": 10, "critical": 5}]});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            Kpi::parse(&v)
        };
        let k = base(
            json!({"anomaly": {"measure": "net", "method": "esd", "alpha": 0.01}, "forecast": {"measure": "net", "horizon": 6}}),
        );
        let k = k.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.anomaly.as_ref().map(|w| w.method.as_str()), Some("esd"));
        assert_eq!(k.forecast.as_ref().map(|w| w.method.as_str()), Some("auto"));
        assert_eq!(k.season_length(), 12);
        let mam = base(json!({"forecast": {"measure": "net", "method": "ets_madm"}}));
        assert_eq!(
            mam.ok().and_then(|k| k.forecast).map(|w| w.method),
            Some("ets_madm".to_owned())
        );
        for bad in [
            json!({"anomaly": {"measure": "nope"}}),
            json!({"anomaly": {"method": "mad"}}),
            json!({"anomaly": {"measure": "net", "method": "prophet"}}),
            json!({"anomaly": {"measure": "net", "threshold": -1}}),
            json!({"anomaly": {"measure": "net", "colour": 1}}),
            json!({"forecast": {"measure": "n"}}),
            json!({"forecast": "auto"}),
            json!({"forecast": {"measure": "net", "method": "ets_mxm"}}),
            json!({"forecast": {"measure": "net", "method": "ets_<error><trend><season>"}}),
            json!({"anomaly": {"measure": "net", "method": "ets_mam"}}),
        ] {
            assert!(base(bad.clone()).is_err(), "{bad}");
        }
        let t = &k.thresholds[0];
        assert_eq!(
            (t.level_of(12.0), t.level_of(7.0), t.level_of(4.0)),
            ("ok", "warn", "critical")
        );
    }

    #[test]
    fn parses_and_builds_sql() {
        let k = Kpi::parse(&json!({"source": "gdp.orders", "time": "order_date", "grain": "month",
            "dimensions": ["region"], "measures": {"net": "sum(amount)", "aov": {"ratio": ["sum(amount)", "count(*)"]}}})).unwrap();
        let q = k.query("NULL");
        assert_eq!(
            q,
            "SELECT to_char(period_start, 'YYYY-MM') AS period, period_start, \
             ((period_start + interval '1 month') - interval '1 day')::date AS period_end, \"region\", \"aov\", \"net\" \
             FROM (SELECT (date_trunc('month', (\"order_date\"::date)))::date AS period_start, \"region\", \
             ((sum(amount))::numeric / nullif((count(*))::numeric, 0)) AS \"aov\", (sum(amount)) AS \"net\" \
             FROM \"gdp\".\"orders\" WHERE (\"order_date\"::date) BETWEEN $1 AND $2 + 30 GROUP BY 1, 2) k \
             WHERE period_start BETWEEN $1 AND $2"
        );
        let c = Kpi::parse(&json!({"source": "gdp.orders", "time": "d", "grain": "period", "calendar": "nrf", "measures": {"n": "count(*)"}})).unwrap();
        assert!(c
            .query("'nrf'")
            .contains("barecount.period_start((\"d\"::date), 'nrf', 'period') AS period_start"));
        for bad in [
            json!({"time": "d", "measures": {"n": "count(*)"}}),
            json!({"source": "pg_catalog.pg_authid", "time": "d", "measures": {"n": "count(*)"}}),
            json!({"source": "gdp.orders", "time": "d", "grain": "fortnight", "measures": {"n": "count(*)"}}),
            json!({"source": "gdp.orders", "time": "d", "measures": {}}),
            json!({"source": "gdp.orders", "time": "d", "measures": {"period": "count(*)"}}),
            json!({"source": "gdp.orders", "time": "D;drop", "measures": {"n": "count(*)"}}),
        ] {
            assert!(Kpi::parse(&bad).is_err(), "{bad}");
        }
    }
}
