//! Pipelines: a declared chain of steps from a source to published data, run in dependency
//! order, with a retry policy for transient errors.
//!
//! ```json
//! {"calendar": "nrf", "grain": "period",
//!  "retry": {"attempts": 3, "backoff_ms": 200, "max_backoff_ms": 10000},
//!  "steps": [
//!    {"name": "load",  "kind": "ingest", "dataset": "orders",
//!     "source": {"table": "staging.orders_feed"},          // or {"file": "orders.csv", "format": "csv"}
//!     "quarantine": {"max_share": 0.05, "on_breach": "fail"}},
//!    {"name": "clean", "kind": "model", "model": "orders_clean", "after": ["load"]},
//!    {"name": "sales", "kind": "kpi", "kpi": "sales", "after": ["clean"]},
//!    {"name": "pub",   "kind": "publish", "dataset": "sales", "source": "kpi.sales", "after": ["sales"]},
//!    {"name": "tell",  "kind": "hook", "event": "sales_ready", "after": ["pub"]}]}
//! ```
//!
//! Everything here is checked without a database: the shape, names, references between steps,
//! cycles and the order. What the steps name (contracts, models, KPIs, calendars) is checked
//! against the catalog through [`Catalog`].

use crate::calendar::Grain;
use crate::dag::{dependency_order, OrderError};
use crate::ident::check_dataset_name;
use serde_json::{Map, Value};
use thiserror::Error;

/// Why a pipeline definition or run request is refused. Each names the step at fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PipelineError {
    #[error("invalid pipeline definition: {0}")]
    Shape(String),
    #[error("pipeline step \"{step}\": {problem}")]
    Step { step: String, problem: String },
    #[error("pipeline steps depend on each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("pipeline step \"{step}\" names {what} \"{name}\", which does not exist")]
    Unknown {
        step: String,
        what: &'static str,
        name: String,
    },
    #[error("pipeline step \"{step}\": {problem}")]
    GrainMismatch { step: String, problem: String },
    #[error("invalid period range: {0}")]
    Period(String),
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Land a source's rows under the contract governing `dataset`.
    Ingest {
        dataset: String,
        source: Source,
        quarantine: Option<QuarantineRule>,
    },
    /// Run a GDP model (after the models it reads).
    Model { model: String },
    /// Materialize a KPI's periods in the run's range.
    Kpi { kpi: String },
    /// Publish a relation as the next version of a dataset.
    Publish { dataset: String, source: String },
    /// Put an event in the outbox for actions to consume.
    Hook { event: String },
}

impl StepKind {
    pub fn label(&self) -> &'static str {
        match self {
            StepKind::Ingest { .. } => "ingest",
            StepKind::Model { .. } => "model",
            StepKind::Kpi { .. } => "kpi",
            StepKind::Publish { .. } => "publish",
            StepKind::Hook { .. } => "hook",
        }
    }
}

/// Where an ingest step reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A table, view or foreign table (postgres_fdw), read with the caller's privileges.
    Table(String),
    /// A file under the directory the administrator allows (`barecount.load_directory`).
    File { path: String, format: FileFormat },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    JsonLines,
    Parquet,
}

impl FileFormat {
    pub fn parse(s: &str) -> Option<FileFormat> {
        match s {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "jsonlines" => Some(FileFormat::JsonLines),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// What to do when a batch quarantines more than `max_share` of its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRule {
    pub max_share: f64,
    pub fail: bool,
}

impl QuarantineRule {
    /// Whether `quarantined` of `total` rows is above the rule's share.
    pub fn breached(&self, quarantined: i64, total: i64) -> bool {
        total > 0 && (quarantined as f64) / (total as f64) > self.max_share
    }
}

/// Attempts and exponential backoff with jitter for transient errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff_ms: 100,
            max_backoff_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2, 3, ...): `backoff_ms · 2^(next-2)`, capped at
    /// `max_backoff_ms`, then "equal jitter": half of it fixed, half scaled by `unit` ∈ [0, 1).
    pub fn delay_ms(&self, next: u32, unit: f64) -> u64 {
        let exp = next.saturating_sub(2).min(32);
        let base = self
            .backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        base / 2 + ((base - base / 2) as f64 * unit) as u64
    }

    fn parse(v: &Value, at: &str) -> Result<RetryPolicy, PipelineError> {
        let o = v
            .as_object()
            .ok_or_else(|| PipelineError::Shape(format!("{at}: retry must be an object")))?;
        only(
            o,
            &["attempts", "backoff_ms", "max_backoff_ms"],
            &format!("{at}: retry"),
        )?;
        let d = RetryPolicy::default();
        let num = |k: &str, dflt: u64, max: u64| -> Result<u64, PipelineError> {
            match o.get(k) {
                None => Ok(dflt),
                Some(v) => v.as_u64().filter(|n| *n <= max).ok_or_else(|| {
                    PipelineError::Shape(format!(
                        "{at}: retry.{k} must be a whole number from 0 to {max}"
                    ))
                }),
            }
        };
        let attempts = num("attempts", u64::from(d.attempts), 10)?;
        if attempts == 0 {
            return Err(PipelineError::Shape(format!(
                "{at}: retry.attempts must be at least 1"
            )));
        }
        let backoff_ms = num("backoff_ms", d.backoff_ms, 3_600_000)?;
        let max_backoff_ms = num(
            "max_backoff_ms",
            d.max_backoff_ms.max(backoff_ms),
            3_600_000,
        )?;
        Ok(RetryPolicy {
            attempts: attempts as u32,
            backoff_ms,
            max_backoff_ms,
        })
    }
}

/// Whether an error with this SQLSTATE is worth another attempt: serialization failures,
/// deadlocks, lock timeouts and lost connections (a foreign source's). A cancel (57014) never is.
pub fn is_transient(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01" | "55P03") || sqlstate.starts_with("08")
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub after: Vec<String>,
    pub kind: StepKind,
    pub retry: RetryPolicy,
}

/// A parsed, checked pipeline; `steps` are in dependency order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub calendar: Option<String>,
    pub grain: Option<String>,
    pub steps: Vec<Step>,
}

fn only(o: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), PipelineError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(PipelineError::Shape(format!(
            "{at}: unknown field \"{k}\" (expected one of {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn text(o: &Map<String, Value>, key: &str, step: &str) -> Result<String, PipelineError> {
    match o.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(PipelineError::Step {
            step: step.to_owned(),
            problem: format!("\"{key}\" must be a non-empty string"),
        }),
    }
}

impl Pipeline {
    /// Parses and checks a definition: shape, step names, references, cycles. Steps come out
    /// in dependency order (declaration order among independent steps).
    pub fn parse(v: &Value) -> Result<Pipeline, PipelineError> {
        let o = v
            .as_object()
            .ok_or_else(|| PipelineError::Shape("the definition must be a JSON object".into()))?;
        only(
            o,
            &["calendar", "grain", "retry", "steps", "description"],
            "the definition",
        )?;
        let opt_text = |k: &str| -> Result<Option<String>, PipelineError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(PipelineError::Shape(format!("\"{k}\" must be a string"))),
            }
        };
        let calendar = opt_text("calendar")?;
        let grain = opt_text("grain")?;
        if let Some(g) = &grain {
            if calendar.is_some() && Grain::parse(g).is_err() {
                return Err(PipelineError::Shape(format!(
                    "grain \"{g}\" is not a calendar grain (year, quarter, period, week, day)"
                )));
            }
        }
        if calendar.is_some() && grain.is_none() {
            return Err(PipelineError::Shape(
                "a pipeline with a calendar needs its grain (year, quarter, period, week, day)"
                    .into(),
            ));
        }
        let retry = match o.get("retry") {
            None => RetryPolicy::default(),
            Some(r) => RetryPolicy::parse(r, "the definition")?,
        };
        let steps_v = o
            .get("steps")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| PipelineError::Shape("\"steps\" must be a non-empty array".into()))?;
        if steps_v.len() > 200 {
            return Err(PipelineError::Shape(format!(
                "a pipeline has at most 200 steps, this one {}",
                steps_v.len()
            )));
        }
        let mut steps: Vec<Step> = Vec::with_capacity(steps_v.len());
        for (i, s) in steps_v.iter().enumerate() {
            let step = Self::parse_step(s, i + 1, retry)?;
            if steps.iter().any(|x| x.name == step.name) {
                return Err(PipelineError::Step {
                    step: step.name,
                    problem: "two steps have this name".into(),
                });
            }
            steps.push(step);
        }
        for s in &steps {
            for a in &s.after {
                if !steps.iter().any(|x| &x.name == a) {
                    return Err(PipelineError::Unknown {
                        step: s.name.clone(),
                        what: "step (in \"after\")",
                        name: a.clone(),
                    });
                }
            }
        }
        let ordered = order(&steps)?;
        Ok(Pipeline {
            calendar,
            grain,
            steps: ordered,
        })
    }

    fn parse_step(v: &Value, n: usize, retry: RetryPolicy) -> Result<Step, PipelineError> {
        let at = format!("step {n}");
        let o = v
            .as_object()
            .ok_or_else(|| PipelineError::Shape(format!("{at} must be an object")))?;
        let name = match o.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(PipelineError::Shape(format!(
                    "{at} needs a \"name\" (a string)"
                )))
            }
        };
        check_dataset_name("pipeline step", &name).map_err(|e| PipelineError::Step {
            step: name.clone(),
            problem: e.to_string(),
        })?;
        let kind_s = text(o, "kind", &name)?;
        let common = ["name", "kind", "after", "retry"];
        let extra: &[&str] = match kind_s.as_str() {
            "ingest" => &["dataset", "source", "quarantine"][..],
            "model" => &["model"][..],
            "kpi" => &["kpi"][..],
            "publish" => &["dataset", "source"][..],
            "hook" => &["event"][..],
            other => {
                return Err(PipelineError::Step {
                    step: name,
                    problem: format!(
                        "unknown kind \"{other}\" (expected ingest, model, kpi, publish or hook)"
                    ),
                })
            }
        };
        let allowed: Vec<&str> = common.iter().chain(extra).copied().collect();
        only(o, &allowed, &format!("step \"{name}\""))?;
        let after = match o.get("after") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| PipelineError::Step {
                            step: name.clone(),
                            problem: "\"after\" must be an array of step names".into(),
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(PipelineError::Step {
                    step: name,
                    problem: "\"after\" must be an array of step names".into(),
                })
            }
        };
        let retry = match o.get("retry") {
            None => retry,
            Some(r) => RetryPolicy::parse(r, &format!("step \"{name}\""))?,
        };
        let kind = match kind_s.as_str() {
            "ingest" => StepKind::Ingest {
                dataset: text(o, "dataset", &name)?,
                source: Self::parse_source(o.get("source"), &name)?,
                quarantine: match o.get("quarantine") {
                    None => None,
                    Some(q) => Some(Self::parse_quarantine(q, &name)?),
                },
            },
            "model" => StepKind::Model {
                model: text(o, "model", &name)?,
            },
            "kpi" => StepKind::Kpi {
                kpi: text(o, "kpi", &name)?,
            },
            "publish" => StepKind::Publish {
                dataset: text(o, "dataset", &name)?,
                source: text(o, "source", &name)?,
            },
            _ => StepKind::Hook {
                event: text(o, "event", &name)?,
            },
        };
        Ok(Step {
            name,
            after,
            kind,
            retry,
        })
    }

    fn parse_source(v: Option<&Value>, step: &str) -> Result<Source, PipelineError> {
        let bad = |p: &str| PipelineError::Step {
            step: step.to_owned(),
            problem: p.to_owned(),
        };
        let o = v.and_then(Value::as_object).ok_or_else(|| {
            bad("\"source\" must be {\"table\": \"schema.name\"} or {\"file\": \"name\", \"format\": \"csv\"}")
        })?;
        if let Some(t) = o.get("table") {
            only(o, &["table"], &format!("step \"{step}\": source"))?;
            return match t.as_str() {
                Some(s) if !s.is_empty() => Ok(Source::Table(s.to_owned())),
                _ => Err(bad("source.table must be a relation name")),
            };
        }
        if let Some(f) = o.get("file") {
            only(o, &["file", "format"], &format!("step \"{step}\": source"))?;
            let path = f
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("source.file must be a file name"))?;
            check_relative_path(path).map_err(|p| bad(&p))?;
            let fmt = o.get("format").and_then(Value::as_str).unwrap_or("");
            let format = FileFormat::parse(fmt).ok_or_else(|| {
                bad(&format!(
                    "source.format \"{fmt}\" is not csv, jsonl or parquet"
                ))
            })?;
            return Ok(Source::File {
                path: path.to_owned(),
                format,
            });
        }
        Err(bad("\"source\" needs \"table\" or \"file\""))
    }

    fn parse_quarantine(v: &Value, step: &str) -> Result<QuarantineRule, PipelineError> {
        let bad = |p: &str| PipelineError::Step {
            step: step.to_owned(),
            problem: p.to_owned(),
        };
        let o = v
            .as_object()
            .ok_or_else(|| bad("\"quarantine\" must be an object"))?;
        only(
            o,
            &["max_share", "on_breach"],
            &format!("step \"{step}\": quarantine"),
        )?;
        let max_share = o
            .get("max_share")
            .and_then(Value::as_f64)
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or_else(|| bad("quarantine.max_share must be a number from 0 to 1"))?;
        let fail = match o.get("on_breach").and_then(Value::as_str) {
            None | Some("fail") => true,
            Some("warn") => false,
            Some(x) => {
                return Err(bad(&format!(
                    "quarantine.on_breach \"{x}\" is not fail or warn"
                )))
            }
        };
        Ok(QuarantineRule { max_share, fail })
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Whether `ancestor` runs before `step` because `step` (transitively) comes after it.
    pub fn depends_on(&self, step: &str, ancestor: &str) -> bool {
        let mut todo = vec![step.to_owned()];
        let mut seen: Vec<String> = Vec::new();
        while let Some(s) = todo.pop() {
            if seen.contains(&s) {
                continue;
            }
            if let Some(st) = self.step(&s) {
                for a in &st.after {
                    if a == ancestor {
                        return true;
                    }
                    todo.push(a.clone());
                }
            }
            seen.push(s);
        }
        false
    }

    /// Checks what the steps name against the catalog: contracts, models, KPIs, calendars; a
    /// KPI's calendar and grain must be the pipeline's; a step reading what another step of
    /// the pipeline builds must come after it.
    pub fn check_objects(&self, catalog: &dyn Catalog) -> Result<(), PipelineError> {
        if let Some(c) = &self.calendar {
            if !catalog.calendar_exists(c) {
                return Err(PipelineError::Shape(format!(
                    "calendar \"{c}\" does not exist"
                )));
            }
        }
        // which step builds a relation (gdp.<model>, kpi.<kpi>, raw.<dataset>)
        let builds = |rel: &str| -> Option<&Step> {
            let (schema, name) = rel.split_once('.')?;
            self.steps.iter().find(|s| match &s.kind {
                StepKind::Model { model } => schema.starts_with("gdp") && model == name,
                StepKind::Kpi { kpi } => schema.starts_with("kpi") && kpi == name,
                StepKind::Ingest { dataset, .. } => {
                    schema == "raw" && (name == dataset || name == format!("{dataset}__accepted"))
                }
                _ => false,
            })
        };
        let needs = |step: &Step, reads: &str| -> Result<(), PipelineError> {
            if let Some(b) = builds(reads) {
                if b.name != step.name && !self.depends_on(&step.name, &b.name) {
                    return Err(PipelineError::Step {
                        step: step.name.clone(),
                        problem: format!(
                            "reads {reads}, which step \"{}\" builds: add \"{}\" to its \"after\"",
                            b.name, b.name
                        ),
                    });
                }
            }
            Ok(())
        };
        for s in &self.steps {
            match &s.kind {
                StepKind::Ingest { dataset, .. } => {
                    if !catalog.contract_exists(dataset) {
                        return Err(PipelineError::Unknown {
                            step: s.name.clone(),
                            what: "dataset (no contract governs it)",
                            name: dataset.clone(),
                        });
                    }
                }
                StepKind::Model { model } => match catalog.model_reads(model) {
                    None => {
                        return Err(PipelineError::Unknown {
                            step: s.name.clone(),
                            what: "model",
                            name: model.clone(),
                        })
                    }
                    Some(reads) => {
                        for r in reads {
                            needs(s, &r)?;
                        }
                    }
                },
                StepKind::Kpi { kpi } => {
                    let k = catalog.kpi(kpi).ok_or_else(|| PipelineError::Unknown {
                        step: s.name.clone(),
                        what: "KPI",
                        name: kpi.clone(),
                    })?;
                    let theirs = (k.calendar.as_deref(), k.grain.as_str());
                    let ours = (self.calendar.as_deref(), self.grain.as_deref());
                    let mismatch = match ours {
                        (Some(_), Some(g)) => theirs != (self.calendar.as_deref(), g),
                        (None, Some(g)) => theirs.0.is_some() || theirs.1 != g,
                        _ => false,
                    };
                    if mismatch {
                        return Err(PipelineError::GrainMismatch {
                            step: s.name.clone(),
                            problem: format!(
                                "KPI \"{kpi}\" is by {} but the pipeline runs by {}",
                                describe(theirs.0, Some(theirs.1)),
                                describe(ours.0, ours.1)
                            ),
                        });
                    }
                    needs(s, &k.source)?;
                }
                StepKind::Publish { source, .. } => needs(s, source)?,
                StepKind::Hook { .. } => {}
            }
        }
        Ok(())
    }
}

fn describe(calendar: Option<&str>, grain: Option<&str>) -> String {
    match (calendar, grain) {
        (Some(c), Some(g)) => format!("{g} of calendar \"{c}\""),
        (None, Some(g)) => format!("{g} (no calendar)"),
        _ => "no grain".into(),
    }
}

/// A file name relative to the allowed directory: no absolute path, no `..`, no empty or
/// hidden parts, no backslashes or NULs.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(format!(
            "file \"{path}\" must be a name relative to the load directory"
        ));
    }
    if path.len() > 1024 {
        return Err("the file name is longer than 1024 bytes".into());
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.starts_with('.') {
            return Err(format!(
                "file \"{path}\": no empty, \".\", \"..\" or hidden parts are allowed"
            ));
        }
    }
    Ok(())
}

/// Steps in dependency order: each after everything in its `after`, ties in declaration order.
fn order(steps: &[Step]) -> Result<Vec<Step>, PipelineError> {
    let mut done: Vec<String> = Vec::new();
    for s in steps {
        let part = dependency_order(&s.name, |n| {
            Ok::<_, ()>(
                steps
                    .iter()
                    .find(|x| x.name == n)
                    .map(|x| x.after.clone())
                    .unwrap_or_default(),
            )
        })
        .map_err(|e| match e {
            OrderError::Cycle(c) => PipelineError::Cycle(c),
            OrderError::Lookup(()) => PipelineError::Shape("lookup failed".into()),
        })?;
        for n in part {
            if !done.contains(&n) {
                done.push(n);
            }
        }
    }
    Ok(done
        .iter()
        .filter_map(|n| steps.iter().find(|s| &s.name == n).cloned())
        .collect())
}

/// What a KPI step needs to know of a KPI.
#[derive(Debug, Clone)]
pub struct KpiInfo {
    pub source: String,
    pub calendar: Option<String>,
    pub grain: String,
}

/// The catalog, as a pipeline's check sees it.
pub trait Catalog {
    fn contract_exists(&self, dataset: &str) -> bool;
    /// The relations a model reads, or None when there is no such model.
    fn model_reads(&self, model: &str) -> Option<Vec<String>>;
    fn kpi(&self, name: &str) -> Option<KpiInfo>;
    fn calendar_exists(&self, name: &str) -> bool;
}

/// A calendar period label such as `FY2024-P03` (year, quarter, period, week, day grains):
/// its grain, fiscal year and index.
pub fn parse_period_label(label: &str) -> Result<(Grain, i32, u32), PipelineError> {
    let bad = || {
        PipelineError::Period(format!(
            "\"{label}\" is neither a date (YYYY-MM-DD) nor a period label such as FY2024-P03"
        ))
    };
    let rest = label.trim().strip_prefix("FY").ok_or_else(bad)?;
    let (year, part) = match rest.split_once('-') {
        Some((y, p)) => (y, Some(p)),
        None => (rest, None),
    };
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let year: i32 = year.parse().map_err(|_| bad())?;
    let Some(part) = part else {
        return Ok((Grain::Year, year, 1));
    };
    let (grain, digits) = match part.split_at_checked(1) {
        Some(("Q", d)) => (Grain::Quarter, d),
        Some(("P", d)) => (Grain::Period, d),
        Some(("W", d)) => (Grain::Week, d),
        Some(("D", d)) => (Grain::Day, d),
        _ => return Err(bad()),
    };
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let index: u32 = digits.parse().map_err(|_| bad())?;
    if index == 0 {
        return Err(bad());
    }
    Ok((grain, year, index))
}

#[cfg(test)]
mod tests;
