//! `quarantine_replay`: re-validate quarantined rows against the current contract version and
//! release those that now pass, with a ledger receipt naming each released row.

use crate::contracts::governing;
use crate::errors::OrRaise;
use crate::{ledger, privilege, tenant};
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Re-validate the dataset's pending quarantined rows (all, or one batch's) against the latest
/// contract version; release those that pass. Returns counts and the replay's receipt.
#[pg_extern(volatile, parallel_unsafe)]
fn quarantine_replay(
    dataset: Option<&str>,
    batch_id: default!(Option<i64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(released, i64),
        name!(still_quarantined, i64),
        name!(ledger_seq, i64),
    ),
> {
    let dataset = crate::errors::required(dataset, "quarantine_replay", "dataset");
    let row = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let g = governing(&tenant_id, dataset)?;
            let pending = client.select(
                "SELECT quarantine_id, batch_id, row_no, payload FROM barecount.quarantine \
                  WHERE tenant_id = $1 AND dataset = $2 AND released_at IS NULL \
                    AND ($3::bigint IS NULL OR batch_id = $3) \
                  ORDER BY batch_id, row_no",
                None,
                &[tenant_id.as_str().into(), dataset.into(), batch_id.into()],
            )?;
            let mut release_ids: Vec<i64> = Vec::new();
            let mut released: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            let mut batches: Vec<String> = Vec::new();
            let mut still = 0_i64;
            for r in pending {
                let id = r.get::<i64>(1)?.unwrap_or_default();
                let batch = format!("batch:{}", r.get::<i64>(2)?.unwrap_or_default());
                let row_no = r.get::<i32>(3)?.unwrap_or_default();
                // a row serde_json cannot hold (a number beyond double precision, nesting past
                // 127 levels) stays in quarantine; the rest are validated in place, as ingest does
                let payload = r.get::<crate::jsonarg::JsonbDatum>(4)?;
                let valid = payload.as_ref().is_some_and(|p| {
                    p.node()
                        .ok()
                        .and_then(|n| g.validator.is_valid_jsonb(n).ok())
                        .unwrap_or(false)
                });
                if !batches.contains(&batch) {
                    batches.push(batch.clone());
                }
                pgrx::check_for_interrupts!();
                if valid {
                    release_ids.push(id);
                    released.entry(batch).or_default().push(row_no);
                } else {
                    still += 1;
                }
            }
            let mut inputs = vec![format!("contract:{}@{}", g.contract, g.version)];
            inputs.extend(batches);
            let released_json: Map<String, Value> =
                released.iter().map(|(b, rows)| (b.clone(), json!(rows))).collect();
            let receipt = ledger::append(
                client,
                &tenant_id,
                "replay",
                &format!("replay:{dataset}"),
                &json!({
                    "inputs": inputs,
                    "outputs": [format!("raw.{dataset}")],
                    "dataset": dataset,
                    "contract": g.contract,
                    "contract_version": g.version,
                    "released": released_json,
                    "released_count": release_ids.len(),
                    "still_quarantined": still,
                }),
                None,
            )?;
            if !release_ids.is_empty() {
                client.update(
                    "UPDATE barecount.quarantine SET released_at = now(), released_by_contract_version = $2, \
                            released_seq = $3 WHERE quarantine_id = ANY($1)",
                    None,
                    &[release_ids.clone().into(), g.version.as_str().into(), receipt.seq.into()],
                )?;
            }
            Ok((release_ids.len() as i64, still, receipt.seq))
        })
    })
    .or_raise();
    TableIterator::once(row)
}
