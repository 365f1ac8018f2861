//! Lineage obligations: `obligation_define`, and their enforcement before an event.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::{ledger, lineage, privilege, tenant};
use barecount_core::lineage::{upstream, Step};
use barecount_core::obligation::{self, Evidence, ObligationError, Rule};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};

impl From<ObligationError> for SqlError {
    fn from(e: ObligationError) -> Self {
        SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid obligation: {e}"))
            .hint("For example '{\"require\": \"validated_batches\"}' or '{\"require\": \"receipt\", \"event_type\": \"model_run\", \"subject\": \"gdp.orders\"}'.")
    }
}

/// Define (or replace) an obligation for the current tenant: before `event_type` on `subject`
/// (a dataset name, or '*' for all), the evidence `rule` asks for must exist.
#[pg_extern(volatile, parallel_unsafe)]
fn obligation_define(
    name: &str,
    event_type: &str,
    subject: &str,
    rule: JsonbArg,
    severity: default!(&str, "'error'"),
) -> i64 {
    Rule::parse(&rule.0).or_raise();
    obligation::check_severity(severity).or_raise();
    if event_type != "publish" {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("obligations on \"{event_type}\" events are not supported yet"),
        )
        .hint("Obligations apply to publish events.")
        .raise()
    }
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let receipt = ledger::append(
                client,
                &tenant_id,
                "obligation_define",
                &format!("obligation:{name}"),
                &json!({"inputs": [], "outputs": [], "event_type": event_type, "subject": subject,
                        "rule": rule.0, "severity": severity}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.obligations (tenant_id, name, event_type, subject, rule, severity, ledger_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET event_type = excluded.event_type, \
                   subject = excluded.subject, rule = excluded.rule, severity = excluded.severity, \
                   ledger_seq = excluded.ledger_seq, defined_by = session_user, defined_at = now()",
                None,
                &[
                    tenant_id.as_str().into(),
                    name.into(),
                    event_type.into(),
                    subject.into(),
                    JsonB(rule.0.clone()).into(),
                    severity.into(),
                    receipt.seq.into(),
                ],
            )?;
            Ok(receipt.seq)
        })
    })
    .or_raise()
}

/// Checks the tenant's obligations for an event about to be recorded as `subject` with
/// `inputs`. Refuses (55000) listing every missing item of every `error` obligation; returns
/// the missing items of `warning` obligations for the receipt. Runs in a privileged section.
pub fn enforce(
    client: &SpiClient<'_>,
    tenant_id: &str,
    event_type: &str,
    dataset: &str,
    subject: &str,
    inputs: &[String],
) -> Result<Vec<String>, SqlError> {
    let rules = client.select(
        "SELECT name, rule, severity FROM barecount.obligations \
          WHERE tenant_id = $1 AND event_type = $2 AND subject IN ($3, '*') ORDER BY name",
        None,
        &[tenant_id.into(), event_type.into(), dataset.into()],
    )?;
    let mut defined = Vec::new();
    for r in rules {
        defined.push((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<JsonB>(2)?.map(|j| j.0).unwrap_or(Value::Null),
            r.get::<String>(3)?.unwrap_or_default(),
        ));
    }
    if defined.is_empty() {
        return Ok(Vec::new());
    }
    let (mut steps, quarantined) = lineage::load(client, tenant_id)?;
    let next = steps.last().map_or(1, |s| s.seq + 1);
    steps.push(Step {
        seq: next,
        event_type: event_type.to_owned(),
        subject: subject.to_owned(),
        inputs: inputs.to_vec(),
        outputs: Vec::new(),
    });
    let hops = upstream(&steps, subject, 64);
    let evidence = Evidence {
        dataset,
        upstream: &hops,
        steps: &steps,
        quarantined: &quarantined,
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (name, rule, severity) in defined {
        let rule = Rule::parse(&rule)?;
        for item in obligation::missing(&rule, &evidence) {
            let line = format!("{name}: {item}");
            if severity == "error" {
                errors.push(line);
            } else {
                warnings.push(line);
            }
        }
    }
    if !errors.is_empty() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{event_type} of \"{dataset}\" lacks required evidence: {}", errors.join("; ")),
        )
        .detail(errors.join("\n"))
        .hint("Provide the missing evidence, or change the obligation with barecount.obligation_define(...)."));
    }
    Ok(warnings)
}
