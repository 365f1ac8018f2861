//! Contract evolution from SQL: compatibility modes checked on registration,
//! `contract_set_compatibility`, `contract_diff`, `contract_unsupported_fields`.

use crate::errors::{OrRaise, SqlError};
use crate::{ledger, privilege, tenant};
use barecount_core::compat::{diff_schema, Change, Mode, UnknownMode};
use barecount_core::contract::Contract;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::collections::BTreeMap;

impl From<UnknownMode> for SqlError {
    fn from(e: UnknownMode) -> Self {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
        )
    }
}

/// Row schemas per dataset of one registered version.
fn schemas_of(
    client: &SpiClient<'_>,
    tenant_id: &str,
    contract: &str,
    version: &str,
) -> Result<BTreeMap<String, Value>, SqlError> {
    let mut out = BTreeMap::new();
    for r in client.select(
        "SELECT dataset, row_schema FROM barecount.contract_datasets \
          WHERE tenant_id = $1 AND contract = $2 AND contract_version = $3",
        None,
        &[tenant_id.into(), contract.into(), version.into()],
    )? {
        if let (Some(d), Some(s)) = (r.get::<String>(1)?, r.get::<JsonB>(2)?) {
            out.insert(d, s.0);
        }
    }
    Ok(out)
}

/// Changes between two versions' schema objects; a dataset dropped from the contract breaks
/// both directions, a dataset added breaks neither.
fn diff_versions(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> Vec<(String, Change)> {
    let mut out = Vec::new();
    for (dataset, o) in old {
        match new.get(dataset) {
            Some(n) => out.extend(
                diff_schema(dataset, o, n)
                    .into_iter()
                    .map(|c| (dataset.clone(), c)),
            ),
            None => out.push((
                dataset.clone(),
                Change {
                    path: format!("/{dataset}"),
                    kind: "dataset_removed".into(),
                    old: Some(o.clone()),
                    new: None,
                    narrows: true,
                    widens: true,
                },
            )),
        }
    }
    for (dataset, n) in new {
        if !old.contains_key(dataset) {
            out.push((
                dataset.clone(),
                Change {
                    path: format!("/{dataset}"),
                    kind: "dataset_added".into(),
                    old: None,
                    new: Some(n.clone()),
                    narrows: false,
                    widens: false,
                },
            ));
        }
    }
    out
}

pub fn mode_of(client: &SpiClient<'_>, tenant_id: &str, contract: &str) -> Result<Mode, SqlError> {
    let m = client
        .select(
            "SELECT compatibility FROM barecount.contract_settings WHERE tenant_id = $1 AND contract = $2",
            Some(1),
            &[tenant_id.into(), contract.into()],
        )?
        .first()
        .get::<String>(1)
        .unwrap_or(None);
    Ok(match m {
        Some(m) => Mode::parse(&m)?,
        None => Mode::Backward,
    })
}

/// Refuses (42P15) a new version that breaks the contract's compatibility mode against the
/// latest earlier version (or every earlier one, for `_TRANSITIVE` modes), listing every
/// breaking change. Runs inside a privileged section.
pub fn check_registration(
    client: &SpiClient<'_>,
    tenant_id: &str,
    c: &Contract,
) -> Result<(), SqlError> {
    let mode = mode_of(client, tenant_id, &c.name)?;
    if mode == Mode::None {
        return Ok(());
    }
    let sort = vec![
        c.version.major as i64,
        c.version.minor as i64,
        c.version.patch as i64,
        i64::from(c.version.pre.is_none()),
    ];
    let mut earlier = Vec::new();
    for r in client.select(
        "SELECT version FROM barecount.contracts WHERE tenant_id = $1 AND contract = $2 AND version_sort < $3 \
          ORDER BY version_sort DESC",
        None,
        &[tenant_id.into(), c.name.as_str().into(), sort.into()],
    )? {
        earlier.push(r.get::<String>(1)?.unwrap_or_default());
    }
    if !mode.transitive() {
        earlier.truncate(1);
    }
    let new: BTreeMap<String, Value> = c
        .schemas
        .iter()
        .map(|s| (s.name.clone(), s.row_schema.clone()))
        .collect();
    let mut breaking = Vec::new();
    for v in &earlier {
        let old = schemas_of(client, tenant_id, &c.name, v)?;
        for (_, ch) in diff_versions(&old, &new) {
            if mode.broken_by(&ch) {
                let show =
                    |x: &Option<Value>| x.as_ref().map_or("(none)".to_owned(), Value::to_string);
                breaking.push(format!(
                    "against {v}: {} {} (old {}, new {})",
                    ch.path,
                    ch.kind,
                    show(&ch.old),
                    show(&ch.new)
                ));
            }
        }
    }
    if breaking.is_empty() {
        return Ok(());
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_DEFINITION,
        format!(
            "contract \"{}\" version {} is not {} compatible: {} breaking change(s)",
            c.name,
            c.version,
            mode.name(),
            breaking.len()
        ),
    )
    .detail(breaking.join("\n"))
    .hint("Make the change compatible, or register it as a new contract, or change the mode with barecount.contract_set_compatibility(...)."))
}

/// Set a contract's compatibility mode: BACKWARD (default), FORWARD, FULL, NONE and their
/// _TRANSITIVE variants.
#[pg_extern(volatile, parallel_unsafe)]
fn contract_set_compatibility(contract: &str, mode: &str) -> String {
    let mode = Mode::parse(mode).or_raise();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let known = client.select(
                "SELECT 1 FROM barecount.contracts WHERE tenant_id = $1 AND contract = $2 LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), contract.into()],
            )?;
            if known.is_empty() {
                return Err(SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("contract \"{contract}\" is not registered"),
                ));
            }
            ledger::append(
                client,
                &tenant_id,
                "contract_compatibility",
                &format!("contract:{contract}"),
                &json!({"inputs": [], "outputs": [], "mode": mode.name()}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.contract_settings (tenant_id, contract, compatibility) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, contract) DO UPDATE SET compatibility = excluded.compatibility, \
                   updated_by = session_user, updated_at = now()",
                None,
                &[tenant_id.as_str().into(), contract.into(), mode.name().into()],
            )?;
            Ok(mode.name().to_owned())
        })
    })
    .or_raise()
}

fn require_version(
    client: &SpiClient<'_>,
    tenant_id: &str,
    contract: &str,
    version: &str,
) -> Result<(), SqlError> {
    let t = client.select(
        "SELECT 1 FROM barecount.contracts WHERE tenant_id = $1 AND contract = $2 AND version = $3",
        Some(1),
        &[tenant_id.into(), contract.into(), version.into()],
    )?;
    if t.is_empty() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("contract \"{contract}\" has no version {version}"),
        ));
    }
    Ok(())
}

// Parallel safety (audited for issue 13): contract_diff and contract_unsupported_fields read
// registered versions through pgrx's SPI, which runs read-write (a new command) once the
// transaction has written, and Postgres refuses that anywhere in a parallel operation, its
// leader included: PARALLEL UNSAFE (they are not hot paths).
/// Every change between two registered versions of a contract, and which modes it breaks.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_unsafe)]
fn contract_diff(
    contract: &str,
    from_version: &str,
    to_version: &str,
) -> TableIterator<
    'static,
    (
        name!(dataset, String),
        name!(path, String),
        name!(kind, String),
        name!(old, Option<JsonB>),
        name!(new, Option<JsonB>),
        name!(breaks_backward, bool),
        name!(breaks_forward, bool),
    ),
> {
    let rows = Spi::connect(|client| {
        let tenant_id = tenant::current(client)?;
        require_version(client, &tenant_id, contract, from_version)?;
        require_version(client, &tenant_id, contract, to_version)?;
        let old = schemas_of(client, &tenant_id, contract, from_version)?;
        let new = schemas_of(client, &tenant_id, contract, to_version)?;
        Ok::<_, SqlError>(
            diff_versions(&old, &new)
                .into_iter()
                .map(|(d, c)| {
                    (
                        d,
                        c.path,
                        c.kind,
                        c.old.map(JsonB),
                        c.new.map(JsonB),
                        c.narrows,
                        c.widens,
                    )
                })
                .collect::<Vec<_>>(),
        )
    })
    .or_raise();
    TableIterator::new(rows)
}

/// Fields of a contract version that BareCount keeps verbatim but does not interpret.
#[pg_extern(stable, parallel_unsafe)]
fn contract_unsupported_fields(
    contract: Option<&str>,
    version: default!(Option<&str>, "NULL"),
) -> SetOfIterator<'static, String> {
    let contract = crate::errors::required(contract, "contract_unsupported_fields", "contract");
    let fields = Spi::connect(|client| {
        let tenant_id = tenant::current(client)?;
        let t = client.select(
            "SELECT unsupported FROM barecount.contracts WHERE tenant_id = $1 AND contract = $2 \
               AND ($3::text IS NULL OR version = $3) ORDER BY version_sort DESC LIMIT 1",
            Some(1),
            &[tenant_id.as_str().into(), contract.into(), version.into()],
        )?;
        if t.is_empty() {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                match version {
                    Some(v) => format!("contract \"{contract}\" has no version {v}"),
                    None => format!("contract \"{contract}\" is not registered"),
                },
            ));
        }
        Ok::<_, SqlError>(t.first().get::<Vec<String>>(1)?.unwrap_or_default())
    })
    .or_raise();
    SetOfIterator::new(fields)
}
