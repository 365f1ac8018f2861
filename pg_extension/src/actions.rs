//! Actions: the catalog (`action_define`), playbooks (`playbook_define`) and their decisions on
//! every outbox event (`_playbooks_fire`, from a trigger on `barecount.events`), deliveries with
//! their attempts (the worker's `gateway_delivery_report`; `delivery_replay`), `sql` actions run
//! by the tenant's own role (`actions_run`), and encrypted secrets (`webhook_secret_rotate`,
//! `secret_set`, `secrets_rewrap`). The pure rules live in `barecount_core::{action, webhook,
//! secrets}`; here are the SPI, the privileged sections and the receipts.

use crate::errors::{OrRaise, SqlError};
use crate::jsonarg::JsonbArg;
use crate::{ledger, privilege, settings, tenant};
use barecount_core::action::{
    check_triggers, dedup_key, is_name, trigger_of, Action, ActionError, When,
};
use barecount_core::secrets::{self, Keyring, SecretError};
use barecount_core::webhook::{decide, new_secret, Next, Outcome, DEFAULT_SCHEDULE};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

impl From<ActionError> for SqlError {
    fn from(e: ActionError) -> Self {
        SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.0)
    }
}

impl From<SecretError> for SqlError {
    fn from(e: SecretError) -> Self {
        let code = match e {
            SecretError::BadKeyring { .. } | SecretError::EmptyKeyring => {
                PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR
            }
            SecretError::UnknownKey(_) | SecretError::Open => {
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED
            }
            SecretError::Random(_) => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        };
        SqlError::new(code, format!("secrets: {e}"))
            .hint("Check the file barecount.secrets_keyring names: one <id>:<base64 of 32 bytes> per line, the current key first, earlier keys kept until secrets_rewrap has run.")
    }
}

fn check_name(what: &str, name: &str) -> Result<(), SqlError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_NAME, format!("{what} name {name:?} is invalid"))
            .hint("Use 1 to 63 lower-case letters, digits and underscores, starting with a letter or underscore."))
    }
}

fn interval_secs(client: &SpiClient<'_>, i: &Interval) -> Result<f64, SqlError> {
    Ok(client
        .select(
            "SELECT extract(epoch FROM $1::interval)::float8",
            Some(1),
            &[(*i).into()],
        )?
        .first()
        .get::<f64>(1)?
        .unwrap_or(0.0))
}

/// An interval option's length in seconds, refused unless it is from 0 to 30 days.
fn window_secs(client: &SpiClient<'_>, i: &Interval, what: &str) -> Result<f64, SqlError> {
    let s = interval_secs(client, i)?;
    if (0.0..=30.0 * 86400.0).contains(&s) {
        Ok(s)
    } else {
        Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} must be from 0 to 30 days"),
        ))
    }
}

/// The latest version of a tenant's action: (version, kind, config), if it exists.
fn latest_action(
    client: &SpiClient<'_>,
    tenant_id: &str,
    name: &str,
) -> Result<Option<(i32, String, Value)>, SqlError> {
    let r = client.select(
        "SELECT version, kind, config FROM barecount.actions WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
        Some(1),
        &[tenant_id.into(), name.into()],
    )?;
    if r.is_empty() {
        return Ok(None);
    }
    let row = r.first();
    Ok(Some((
        row.get::<i32>(1)?.unwrap_or(0),
        row.get::<String>(2)?.unwrap_or_default(),
        row.get::<JsonB>(3)?.map(|j| j.0).unwrap_or(Value::Null),
    )))
}

/// A delivery's final outcome as a ledger receipt, its seq kept on the delivery.
fn outcome_receipt(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    delivery_id: i64,
    action: &str,
    inputs: Value,
) -> Result<(), SqlError> {
    let receipt = ledger::append(
        client,
        tenant_id,
        "delivery",
        &format!("action:{action}"),
        &inputs,
        None,
    )?;
    client.update(
        "UPDATE barecount.deliveries SET ledger_seq = $2 WHERE delivery_id = $1",
        None,
        &[delivery_id.into(), receipt.seq.into()],
    )?;
    Ok(())
}

/// Define an action or a new version of it; the same definition again returns its version.
#[pg_extern(volatile, parallel_unsafe)]
fn action_define(name: &str, kind: &str, config: JsonbArg) -> i32 {
    check_name("action", name).or_raise();
    Action::parse(kind, &config.0).or_raise();
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            tenant::lock_object(client, "action", &tenant_id, name)?;
            let t = client.select(
                "SELECT version, kind = $3 AND config = $4 FROM barecount.actions WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), kind.into(), JsonB(config.0.clone()).into()],
            )?;
            let (v, same) = if t.is_empty() { (0, false) } else { let r = t.first(); (r.get::<i32>(1)?.unwrap_or(0), r.get::<bool>(2)?.unwrap_or(false)) };
            if same {
                return Ok(v);
            }
            let version = v + 1;
            let receipt = ledger::append(client, &tenant_id, "action_define", &format!("action:{name}@{version}"),
                &json!({"inputs": [], "outputs": [], "kind": kind, "config": config.0}), None)?;
            client.update(
                "INSERT INTO barecount.actions (tenant_id, name, version, kind, config, ledger_seq) VALUES ($1, $2, $3, $4, $5, $6)",
                None,
                &[tenant_id.as_str().into(), name.into(), version.into(), kind.into(), JsonB(config.0.clone()).into(), receipt.seq.into()],
            )?;
            Ok(version)
        })
    })
    .or_raise()
}

/// Define a playbook or a new version of it; the same definition again returns its version.
#[pg_extern(volatile, parallel_unsafe)]
fn playbook_define(
    name: &str,
    on: Vec<String>,
    when: JsonbArg,
    actions: Vec<String>,
    dedup_window: default!(Interval, "'1 hour'"),
    cooldown: default!(Interval, "'0'"),
) -> i32 {
    check_name("playbook", name).or_raise();
    check_triggers(&on).or_raise();
    When::parse(&when.0).or_raise();
    if actions.is_empty() {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("playbook \"{name}\" names no action"),
        )
        .raise()
    }
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let dedup_s = window_secs(client, &dedup_window, &format!("playbook \"{name}\": dedup_window"))?;
        let cooldown_s = window_secs(client, &cooldown, &format!("playbook \"{name}\": cooldown"))?;
        privilege::as_owner(|| {
            for a in &actions {
                if latest_action(client, &tenant_id, a)?.is_none() {
                    return Err(SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("playbook \"{name}\": action \"{a}\" does not exist"))
                        .hint("Define it first with barecount.action_define(name, kind, config)."));
                }
            }
            tenant::lock_object(client, "playbook", &tenant_id, name)?;
            let t = client.select(
                "SELECT version, triggers = $3 AND conditions = $4 AND actions = $5 AND dedup_window = $6 AND cooldown = $7
                   FROM barecount.playbooks WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
                Some(1),
                &[tenant_id.as_str().into(), name.into(), on.clone().into(), JsonB(when.0.clone()).into(), actions.clone().into(), dedup_window.into(), cooldown.into()],
            )?;
            let (v, same) = if t.is_empty() { (0, false) } else { let r = t.first(); (r.get::<i32>(1)?.unwrap_or(0), r.get::<bool>(2)?.unwrap_or(false)) };
            if same {
                return Ok(v);
            }
            let version = v + 1;
            let receipt = ledger::append(client, &tenant_id, "playbook_define", &format!("playbook:{name}@{version}"),
                &json!({"inputs": [], "outputs": [], "on": on, "when": when.0, "actions": actions,
                        "dedup_window_s": dedup_s, "cooldown_s": cooldown_s}), None)?;
            client.update(
                "INSERT INTO barecount.playbooks (tenant_id, name, version, triggers, conditions, actions, dedup_window, cooldown, ledger_seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                None,
                &[tenant_id.as_str().into(), name.into(), version.into(), on.clone().into(), JsonB(when.0.clone()).into(), actions.clone().into(), dedup_window.into(), cooldown.into(), receipt.seq.into()],
            )?;
            Ok(version)
        })
    })
    .or_raise()
}

struct Playbook {
    name: String,
    version: i32,
    triggers: Vec<String>,
    when: When,
    actions: Vec<String>,
    dedup_s: f64,
    cooldown_s: f64,
}

fn playbooks(client: &SpiClient<'_>, tenant_id: &str) -> Result<Vec<Playbook>, SqlError> {
    let rows = client.select(
        "SELECT DISTINCT ON (name) name, version, triggers, conditions, actions,
                extract(epoch FROM dedup_window)::float8, extract(epoch FROM cooldown)::float8, enabled
           FROM barecount.playbooks WHERE tenant_id = $1 ORDER BY name, version DESC",
        None,
        &[tenant_id.into()],
    )?;
    let mut out = Vec::new();
    for r in rows {
        if !r.get::<bool>(8)?.unwrap_or(false) {
            continue;
        }
        out.push(Playbook {
            name: r.get::<String>(1)?.unwrap_or_default(),
            version: r.get::<i32>(2)?.unwrap_or(0),
            triggers: r.get::<Vec<String>>(3)?.unwrap_or_default(),
            when: When::parse(&r.get::<JsonB>(4)?.map(|j| j.0).unwrap_or(Value::Null))
                .unwrap_or_default(),
            actions: r.get::<Vec<String>>(5)?.unwrap_or_default(),
            dedup_s: r.get::<f64>(6)?.unwrap_or(0.0),
            cooldown_s: r.get::<f64>(7)?.unwrap_or(0.0),
        });
    }
    Ok(out)
}

/// Internal: runs the playbooks of the events' tenants over the events (called by the trigger
/// on barecount.events, as barecount_owner). Each match is a decision with a receipt: fired,
/// with its deliveries, or suppressed by the de-duplication window or the cool-down.
#[pg_extern(volatile, parallel_unsafe)]
fn _playbooks_fire(event_ids: Vec<i64>) -> i64 {
    Spi::connect_mut(|client| {
        let me = client
            .select("SELECT current_user::text", Some(1), &[])?
            .first()
            .get::<String>(1)?
            .unwrap_or_default();
        if me != privilege::OWNER_ROLE {
            return Err(crate::access::denied("fire playbooks")
                .hint("Playbooks run from the trigger on barecount.events only."));
        }
        privilege::as_owner(|| fire(client, &event_ids))
    })
    .or_raise()
}

/// The playbook's latest firing within the last `secs` seconds (for one de-duplication key,
/// or any): its event and when. None without looking when `secs` is 0.
fn last_fired(
    client: &SpiClient<'_>,
    tenant_id: &str,
    playbook: &str,
    key: Option<&str>,
    secs: f64,
) -> Result<Option<(i64, String)>, SqlError> {
    if secs <= 0.0 {
        return Ok(None);
    }
    let r = client.select(
        "SELECT event_id, to_char(decided_at, 'YYYY-MM-DD HH24:MI:SS TZ') FROM barecount.playbook_decisions
          WHERE tenant_id = $1 AND playbook = $2 AND ($3::text IS NULL OR dedup_key = $3) AND decision = 'fired'
            AND decided_at > clock_timestamp() - make_interval(secs => $4)
          ORDER BY decided_at DESC LIMIT 1",
        Some(1),
        &[tenant_id.into(), playbook.into(), key.into(), secs.into()],
    )?;
    if r.is_empty() {
        return Ok(None);
    }
    let row = r.first();
    Ok(Some((
        row.get::<i64>(1)?.unwrap_or(0),
        row.get::<String>(2)?.unwrap_or_default(),
    )))
}

fn fire(client: &mut SpiClient<'_>, event_ids: &[i64]) -> Result<i64, SqlError> {
    let events = client.select(
        "SELECT event_id, tenant_id, kind, subject, payload, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
           FROM barecount.events WHERE event_id = ANY($1) ORDER BY event_id",
        None,
        &[event_ids.to_vec().into()],
    )?;
    let mut rows = Vec::new();
    for r in events {
        rows.push((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
            r.get::<String>(4)?.unwrap_or_default(),
            r.get::<JsonB>(5)?.map(|j| j.0).unwrap_or(Value::Null),
            r.get::<String>(6)?.unwrap_or_default(),
        ));
    }
    let mut cache: HashMap<String, Vec<Playbook>> = HashMap::new();
    let (mut decisions, mut webhooks) = (0i64, 0i64);
    for (event_id, tenant_id, kind, subject, payload, at) in rows {
        let Some(trigger) = trigger_of(&kind, &payload) else {
            continue;
        };
        if !cache.contains_key(&tenant_id) {
            let p = playbooks(client, &tenant_id)?;
            cache.insert(tenant_id.clone(), p);
        }
        let books = cache.get(&tenant_id).map(Vec::as_slice).unwrap_or_default();
        for pb in books
            .iter()
            .filter(|p| p.triggers.iter().any(|t| t == trigger) && p.when.matches(&payload))
        {
            let key = dedup_key(trigger, &subject, &payload);
            // the same event identity fired within the window, else any firing within the
            // cool-down (each looked up only when its window is open)
            let suppressed = if let Some((id, at)) =
                last_fired(client, &tenant_id, &pb.name, Some(&key), pb.dedup_s)?
            {
                Some(format!(
                    "duplicate of event {id} fired at {at}, within the de-duplication window of {} s",
                    pb.dedup_s
                ))
            } else if let Some((id, at)) =
                last_fired(client, &tenant_id, &pb.name, None, pb.cooldown_s)?
            {
                Some(format!(
                    "cool-down: fired for event {id} at {at}, quiet for {} s",
                    pb.cooldown_s
                ))
            } else {
                None
            };
            let mut made: Vec<i64> = Vec::new();
            let mut actions_json = Vec::new();
            if suppressed.is_none() {
                let body = json!({"type": format!("barecount.{trigger}"), "timestamp": at,
                                  "data": {"event_id": event_id, "kind": kind, "subject": subject, "playbook": pb.name,
                                           "tenant": tenant_id, "payload": payload}});
                for a in &pb.actions {
                    let Some((version, akind, config)) = latest_action(client, &tenant_id, a)?
                    else {
                        continue;
                    };
                    // the tenant's policies decide the delivery (a denied one is a dead letter
                    // with the reasons, never sent)
                    let denied =
                        crate::govern::policy::deliver_denied(client, &tenant_id, &pb.name, a)?;
                    let state = if denied.is_some() {
                        "dead"
                    } else if akind == "notify" {
                        "delivered"
                    } else {
                        "pending"
                    };
                    let id = client
                        .update(
                            "INSERT INTO barecount.deliveries (tenant_id, webhook_id, action, action_version, kind, playbook, event_id, payload, state, finished_at, last_error)
                             VALUES ($1, 'msg_' || replace(gen_random_uuid()::text, '-', ''), $2, $3, $4, $5, $6, $7, $8,
                                     CASE WHEN $8 <> 'pending' THEN clock_timestamp() END, $9)
                             RETURNING delivery_id",
                            Some(1),
                            &[tenant_id.as_str().into(), a.as_str().into(), version.into(), akind.as_str().into(), pb.name.as_str().into(),
                              event_id.into(), JsonB(body.clone()).into(), state.into(), denied.clone().into()],
                        )?
                        .first()
                        .get::<i64>(1)?
                        .unwrap_or(0);
                    if akind == "notify" && denied.is_none() {
                        // LISTEN is open to every role: the payload carries ids, never data
                        let channel = config
                            .get("channel")
                            .and_then(Value::as_str)
                            .unwrap_or("barecount_actions");
                        client.update(
                            "SELECT pg_notify($1, $2)",
                            None,
                            &[
                                channel.into(),
                                json!({"delivery_id": id, "event_id": event_id})
                                    .to_string()
                                    .into(),
                            ],
                        )?;
                    }
                    if akind == "webhook" && denied.is_none() {
                        webhooks += 1;
                    }
                    made.push(id);
                    actions_json.push(
                        json!({"action": a, "version": version, "kind": akind, "delivery_id": id}),
                    );
                }
            }
            let (decision, reason) = match &suppressed {
                Some(r) => ("suppressed", r.clone()),
                None => (
                    "fired",
                    format!("event {event_id} ({trigger}) met the conditions"),
                ),
            };
            let receipt = ledger::append(
                client,
                &tenant_id,
                "playbook_decision",
                &format!("playbook:{}@{}", pb.name, pb.version),
                &json!({"inputs": [], "outputs": [], "event_id": event_id, "trigger": trigger, "decision": decision,
                        "reason": reason, "deliveries": actions_json}),
                None,
            )?;
            client.update(
                "INSERT INTO barecount.playbook_decisions (tenant_id, playbook, playbook_version, event_id, trigger, dedup_key, decision, reason, deliveries, ledger_seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                None,
                &[tenant_id.as_str().into(), pb.name.as_str().into(), pb.version.into(), event_id.into(), trigger.into(), key.as_str().into(),
                  decision.into(), reason.as_str().into(), made.clone().into(), receipt.seq.into()],
            )?;
            decisions += 1;
        }
    }
    if webhooks > 0 {
        client.update("SELECT pg_notify('barecount_deliveries', '')", None, &[])?;
    }
    Ok(decisions)
}

/// The operator's keyring, from the file barecount.secrets_keyring names.
fn keyring() -> Result<Keyring, SqlError> {
    let path = settings::SECRETS_KEYRING
        .get()
        .and_then(|c| c.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    if path.is_empty() {
        return Err(SqlError::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "secrets: no keyring is configured")
            .hint("A superuser sets barecount.secrets_keyring to a file of <id>:<base64 of 32 bytes> lines readable by the server (e.g. made with: echo k1:$(openssl rand -base64 32))."));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            format!("secrets: the keyring file {path} cannot be read: {e}"),
        )
        .hint("The file must exist and be readable by the server's operating-system user.")
    })?;
    Ok(Keyring::parse(&text)?)
}

/// The tenant's data-encryption key, made (and wrapped by the current KEK) on first use.
fn tenant_dek(
    client: &mut SpiClient<'_>,
    ring: &Keyring,
    tenant_id: &str,
) -> Result<secrets::KeyBytes, SqlError> {
    tenant::lock_object(client, "tenant_key", tenant_id, "dek")?;
    let r = client.select(
        "SELECT kek_id, wrapped_dek FROM barecount.tenant_keys WHERE tenant_id = $1",
        Some(1),
        &[tenant_id.into()],
    )?;
    if !r.is_empty() {
        let row = r.first();
        let kek = row.get::<String>(1)?.unwrap_or_default();
        let wrapped = row.get::<Vec<u8>>(2)?.unwrap_or_default();
        return Ok(secrets::unwrap_dek(ring, tenant_id, &kek, &wrapped)?);
    }
    let dek = secrets::new_key()?;
    let (kek, wrapped) = secrets::wrap_dek(ring, tenant_id, &dek)?;
    client.update(
        "INSERT INTO barecount.tenant_keys (tenant_id, kek_id, wrapped_dek) VALUES ($1, $2, $3)",
        None,
        &[tenant_id.into(), kek.as_str().into(), wrapped.into()],
    )?;
    Ok(dek)
}

fn fingerprint(v: &[u8]) -> String {
    hex::encode(&Sha256::digest(v)[..8])
}

/// Seals `value` as a new secret (name, purpose); earlier ones of the same name expire at
/// `expire_old` seconds from now. Returns the fingerprint. Privileged section.
fn store_secret(
    client: &mut SpiClient<'_>,
    tenant_id: &str,
    name: &str,
    purpose: &str,
    value: &[u8],
    expire_old: f64,
) -> Result<String, SqlError> {
    let ring = keyring()?;
    let dek = tenant_dek(client, &ring, tenant_id)?;
    client.update(
        "UPDATE barecount.secrets SET expires_at = least(coalesce(expires_at, 'infinity'), clock_timestamp() + make_interval(secs => $4))
          WHERE tenant_id = $1 AND name = $2 AND purpose = $3 AND (expires_at IS NULL OR expires_at > clock_timestamp())",
        None,
        &[tenant_id.into(), name.into(), purpose.into(), expire_old.into()],
    )?;
    // the row's id is part of the sealed value's additional data: take it first
    let id = client
        .select(
            "SELECT nextval(pg_get_serial_sequence('barecount.secrets', 'secret_id'))",
            Some(1),
            &[],
        )?
        .first()
        .get::<i64>(1)?
        .unwrap_or(0);
    let sealed = secrets::seal(&dek, value, &secrets::secret_aad(tenant_id, id))?;
    let fp = fingerprint(value);
    client.update(
        "INSERT INTO barecount.secrets (tenant_id, secret_id, name, purpose, sealed, fingerprint) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
        None,
        &[tenant_id.into(), id.into(), name.into(), purpose.into(), sealed.into(), fp.as_str().into()],
    )?;
    ledger::append(
        client,
        tenant_id,
        "secret_set",
        &format!("secret:{purpose}/{name}"),
        &json!({"inputs": [], "outputs": [], "fingerprint": fp, "old_expire_in_s": expire_old}),
        None,
    )?;
    Ok(fp)
}

/// A new signing secret for a webhook action: returned once (`whsec_…`), stored encrypted.
/// The previous one keeps signing for `overlap`, so receivers can switch without a gap.
#[pg_extern(volatile, parallel_unsafe)]
fn webhook_secret_rotate(action: &str, overlap: default!(Interval, "'24 hours'")) -> String {
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let secs = window_secs(client, &overlap, "webhook_secret_rotate: the overlap")?;
        privilege::as_owner(|| {
            match latest_action(client, &tenant_id, action)?
                .map(|(_, kind, _)| kind)
                .as_deref()
            {
                Some("webhook") => {}
                Some(other) => {
                    return Err(SqlError::new(
                        PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                        format!(
                            "action \"{action}\" is a {other} action; only webhooks are signed"
                        ),
                    ))
                }
                None => {
                    return Err(SqlError::new(
                        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                        format!("action \"{action}\" does not exist"),
                    ))
                }
            }
            tenant::lock_object(client, "secret", &tenant_id, action)?;
            let (text, key) = new_secret().map_err(|e| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                    format!("no random bytes: {e}"),
                )
            })?;
            store_secret(client, &tenant_id, action, "signing", &key, secs)?;
            Ok(text)
        })
    })
    .or_raise()
}

/// Store a credential an action uses (e.g. a webhook's Authorization header, named by its
/// `auth_secret`), encrypted; the previous value of the name stops at once. Returns its fingerprint.
#[pg_extern(volatile, parallel_unsafe)]
fn secret_set(name: &str, value: &str) -> String {
    check_name("secret", name).or_raise();
    if value.is_empty() || value.len() > 8192 {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("secret \"{name}\": the value must be 1 to 8192 bytes"),
        )
        .raise()
    }
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            tenant::lock_object(client, "secret", &tenant_id, name)?;
            store_secret(
                client,
                &tenant_id,
                name,
                "credential",
                value.as_bytes(),
                0.0,
            )
        })
    })
    .or_raise()
}

/// Re-wrap every tenant's data-encryption key with the keyring's current key (after the
/// operator put a new key first). Secrets' ciphertexts are left as they are. Returns how many
/// keys were re-wrapped. For barecount_admin.
#[pg_extern(volatile, parallel_unsafe)]
fn secrets_rewrap() -> i64 {
    Spi::connect_mut(|client| {
        if !crate::access::session_has_role(client, "barecount_admin")? {
            return Err(crate::access::denied("re-wrap the tenants' keys").hint("Run it as a member of barecount_admin."));
        }
        let ring = keyring()?;
        let current = ring.current().0.to_owned();
        privilege::as_owner(|| {
            let rows = client.update(
                "SELECT tenant_id, kek_id, wrapped_dek FROM barecount.tenant_keys WHERE kek_id <> $1 ORDER BY tenant_id FOR UPDATE",
                None,
                &[current.as_str().into()],
            )?;
            let mut todo = Vec::new();
            for r in rows {
                todo.push((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default(), r.get::<Vec<u8>>(3)?.unwrap_or_default()));
            }
            for (tenant_id, old, wrapped) in &todo {
                let dek = secrets::unwrap_dek(&ring, tenant_id, old, wrapped)?;
                let (kek, rewrapped) = secrets::wrap_dek(&ring, tenant_id, &dek)?;
                client.update(
                    "UPDATE barecount.tenant_keys SET kek_id = $2, wrapped_dek = $3, rewrapped_at = now() WHERE tenant_id = $1",
                    None,
                    &[tenant_id.as_str().into(), kek.as_str().into(), rewrapped.into()],
                )?;
                ledger::append(client, tenant_id, "key_rewrap", "tenant_key", &json!({"inputs": [], "outputs": [], "from": old, "to": kek}), None)?;
            }
            Ok(todo.len() as i64)
        })
    })
    .or_raise()
}

/// For the delivery worker: what an attempt came to. A report for the attempt the delivery is
/// leased for decides its next state (delivered; retried after the schedule's wait, or the
/// receiver's Retry-After; or dead); a late report (the lease passed and the delivery was
/// leased again) is recorded only. A final outcome is a ledger receipt. Returns the state.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn gateway_delivery_report(
    delivery_id: Option<i64>,
    attempt: Option<i32>,
    worker: Option<&str>,
    started_at: Option<TimestampWithTimeZone>,
    outcome: Option<&str>,
    status_code: Option<i32>,
    error: Option<&str>,
    retry_after_s: Option<f64>,
) -> String {
    let f = "gateway_delivery_report";
    let delivery_id = crate::errors::required(delivery_id, f, "delivery_id");
    let attempt = crate::errors::required(attempt, f, "attempt");
    let worker = crate::errors::required(worker, f, "worker");
    let started_at = crate::errors::required(started_at, f, "started_at");
    let outcome = crate::errors::required(outcome, f, "outcome");
    let out = match (outcome, status_code) {
        ("status", Some(code)) if (100..=599).contains(&code) => Outcome::Status { code: code as u16, retry_after: retry_after_s },
        ("timeout", _) => Outcome::Timeout,
        ("connection", _) | ("error", _) => Outcome::Connection,
        _ => SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("delivery {delivery_id}: outcome {outcome:?} with status {status_code:?} is not a report"))
            .hint("outcome is status (with an HTTP status code), timeout, connection or error.")
            .raise(),
    };
    let error: Option<String> = error.map(|e| e.chars().take(2000).collect());
    Spi::connect_mut(|client| {
        if !crate::access::session_has_role(client, "barecount_admin")? {
            return Err(crate::access::denied("report deliveries").hint("The delivery worker connects as a member of barecount_admin."));
        }
        privilege::as_owner(|| {
            let d = client.update(
                "SELECT d.tenant_id, d.state, d.attempts, d.leased_by, d.schedule_from, a.config, d.webhook_id, d.action, d.event_id, d.playbook, d.kind
                   FROM barecount.deliveries d JOIN barecount.actions a ON a.tenant_id = d.tenant_id AND a.name = d.action AND a.version = d.action_version
                  WHERE d.delivery_id = $1 FOR UPDATE OF d",
                None,
                &[delivery_id.into()],
            )?;
            if d.is_empty() {
                return Err(SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("delivery {delivery_id} does not exist")));
            }
            let row = d.first();
            let tenant_id = row.get::<String>(1)?.unwrap_or_default();
            let state = row.get::<String>(2)?.unwrap_or_default();
            let attempts = row.get::<i32>(3)?.unwrap_or(0);
            let leased_by = row.get::<String>(4)?.unwrap_or_default();
            let from = row.get::<i32>(5)?.unwrap_or(0);
            let config = row.get::<JsonB>(6)?.map(|j| j.0).unwrap_or(Value::Null);
            let webhook_id = row.get::<String>(7)?.unwrap_or_default();
            let action = row.get::<String>(8)?.unwrap_or_default();
            let event_id = row.get::<i64>(9)?;
            let playbook = row.get::<String>(10)?;
            let kind = row.get::<String>(11)?.unwrap_or_default();
            let applies = state == "pending" && attempts == attempt && leased_by == worker;
            let code = match &out {
                Outcome::Status { code, .. } => Some(i32::from(*code)),
                _ => status_code,
            };
            client.update(
                "INSERT INTO barecount.delivery_attempts (tenant_id, delivery_id, attempt, worker, started_at, status_code, outcome, error, applied)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (delivery_id, attempt) DO NOTHING",
                None,
                &[tenant_id.as_str().into(), delivery_id.into(), attempt.into(), worker.into(), started_at.into(), code.into(), outcome.into(), error.clone().into(), applies.into()],
            )?;
            if !applies {
                return Ok(state);
            }
            let schedule: Vec<f64> = Action::parse(&kind, &config).map(|a| a.schedule()).unwrap_or_else(|_| DEFAULT_SCHEDULE.to_vec());
            let jitter = client.select("SELECT random()", Some(1), &[])?.first().get::<f64>(1)?.unwrap_or(0.5);
            let n = (attempt - from).max(1) as u32;
            let detail = |base: String| match &error {
                Some(e) if !e.is_empty() => format!("{base}: {e}"),
                _ => base,
            };
            let next = decide(n, &out, &schedule, jitter);
            let (new_state, wait, reason) = match &next {
                Next::Delivered => ("delivered", 0.0, None),
                Next::Retry(w) => ("pending", *w, Some(detail(format!("attempt {attempt} failed ({outcome}{})", code.map(|c| format!(" {c}")).unwrap_or_default())))),
                Next::Dead(r) => ("dead", 0.0, Some(detail(r.clone()))),
            };
            client.update(
                "UPDATE barecount.deliveries SET state = $2, lease_until = NULL, leased_by = NULL, last_error = $3,
                        next_attempt_at = clock_timestamp() + make_interval(secs => $4),
                        finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE clock_timestamp() END
                  WHERE delivery_id = $1",
                None,
                &[delivery_id.into(), new_state.into(), reason.clone().into(), wait.into()],
            )?;
            if new_state != "pending" {
                outcome_receipt(client, &tenant_id, delivery_id, &action,
                    json!({"inputs": [], "outputs": [], "delivery_id": delivery_id, "webhook_id": webhook_id, "outcome": new_state,
                           "attempts": attempt, "status": code, "reason": reason, "event_id": event_id, "playbook": playbook}))?;
            }
            Ok(new_state.to_owned())
        })
    })
    .or_raise()
}

/// Replay dead letters: one delivery (`delivery_id`) or every dead delivery of an action
/// (`action`), sent again with the same webhook-id and a fresh retry schedule. Returns how
/// many were replayed; each replay is a receipt.
#[pg_extern(volatile, parallel_unsafe)]
fn delivery_replay(
    delivery_id: default!(Option<i64>, "NULL"),
    action: default!(Option<&str>, "NULL"),
) -> i64 {
    if delivery_id.is_none() == action.is_none() {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "delivery_replay: give a delivery_id or an action, not both or neither",
        )
        .raise()
    }
    Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        privilege::as_owner(|| {
            let rows = client.update(
                "UPDATE barecount.deliveries SET state = 'pending', schedule_from = attempts, next_attempt_at = clock_timestamp(),
                        lease_until = NULL, leased_by = NULL, finished_at = NULL
                  WHERE tenant_id = $1 AND state = 'dead' AND kind IN ('webhook', 'export') AND (delivery_id = $2 OR action = $3)
                  RETURNING delivery_id, webhook_id, action",
                None,
                &[tenant_id.as_str().into(), delivery_id.into(), action.into()],
            )?;
            let mut done = Vec::new();
            for r in rows {
                done.push((r.get::<i64>(1)?.unwrap_or(0), r.get::<String>(2)?.unwrap_or_default(), r.get::<String>(3)?.unwrap_or_default()));
            }
            if done.is_empty() {
                if let Some(id) = delivery_id {
                    let s = client.select("SELECT state FROM barecount.deliveries WHERE tenant_id = $1 AND delivery_id = $2", Some(1), &[tenant_id.as_str().into(), id.into()])?;
                    return Err(match s.first().get::<String>(1).ok().flatten() {
                        None => SqlError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("delivery {id} does not exist"))
                            .hint("See barecount.deliveries for the current tenant's deliveries."),
                        Some(st) => SqlError::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, format!("delivery {id} is {st}, not a dead letter")),
                    });
                }
            }
            for (id, webhook_id, action) in &done {
                ledger::append(client, &tenant_id, "delivery_replay", &format!("action:{action}"),
                    &json!({"inputs": [], "outputs": [], "delivery_id": id, "webhook_id": webhook_id}), None)?;
            }
            if !done.is_empty() {
                client.update("SELECT pg_notify('barecount_deliveries', '')", None, &[])?;
            }
            Ok(done.len() as i64)
        })
    })
    .or_raise()
}

/// Run the current tenant's pending `sql` actions: each calls its function with the event
/// (jsonb) as the calling role — never as BareCount's owner — in a subtransaction; an error
/// makes that delivery dead with the SQLSTATE and message. Returns each delivery's outcome.
#[pg_extern(volatile, parallel_unsafe)]
fn actions_run(
    max_deliveries: default!(i32, 100),
) -> TableIterator<
    'static,
    (
        name!(delivery_id, i64),
        name!(action, String),
        name!(state, String),
        name!(error, Option<String>),
    ),
> {
    if !(1..=10_000).contains(&max_deliveries) {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("actions_run: max_deliveries must be from 1 to 10000, not {max_deliveries}"),
        )
        .raise()
    }
    let rows = Spi::connect_mut(|client| {
        let tenant_id = tenant::current(client)?;
        let due = privilege::as_owner(|| {
            let r = client.update(
                "SELECT d.delivery_id, d.action, a.config->>'function', d.payload, d.attempts
                   FROM barecount.deliveries d JOIN barecount.actions a ON a.tenant_id = d.tenant_id AND a.name = d.action AND a.version = d.action_version
                  WHERE d.tenant_id = $1 AND d.kind = 'sql' AND d.state = 'pending'
                  ORDER BY d.delivery_id LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
                None,
                &[tenant_id.as_str().into(), (max_deliveries as i64).into()],
            )?;
            let mut v = Vec::new();
            for row in r {
                v.push((
                    row.get::<i64>(1)?.unwrap_or(0),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<JsonB>(4)?.map(|j| j.0).unwrap_or(Value::Null),
                    row.get::<i32>(5)?.unwrap_or(0),
                ));
            }
            Ok(v)
        })?;
        let mut out = Vec::new();
        for (id, action, function, payload, attempts) in due {
            let (schema, name) = function.split_once('.').unwrap_or(("", ""));
            let call = format!("SELECT {}.{}($1::jsonb)", barecount_core::ident::quote_ident(schema), barecount_core::ident::quote_ident(name));
            // the tenant's own function, run as the caller (outside any privileged section)
            let result = crate::subxact::attempt(|| {
                client
                    .update(&call, None, &[JsonB(payload.clone()).into()])
                    .map(|_| ())
                    .map_err(|e| crate::subxact::Caught { sqlstate: "XX000".into(), message: e.to_string() })
            });
            let (state, error) = match result {
                Ok(()) => ("delivered", None),
                Err(c) => ("dead", Some(format!("{}: {}", c.sqlstate, c.message))),
            };
            privilege::as_owner(|| {
                client.update(
                    "UPDATE barecount.deliveries SET state = $2, attempts = attempts + 1, last_error = $3, finished_at = clock_timestamp() WHERE delivery_id = $1",
                    None,
                    &[id.into(), state.into(), error.clone().into()],
                )?;
                client.update(
                    "INSERT INTO barecount.delivery_attempts (tenant_id, delivery_id, attempt, worker, started_at, outcome, error, applied)
                     VALUES ($1, $2, $3, session_user, clock_timestamp(), $4, $5, true)",
                    None,
                    &[tenant_id.as_str().into(), id.into(), (attempts + 1).into(), if error.is_some() { "error" } else { "status" }.into(), error.clone().into()],
                )?;
                outcome_receipt(client, &tenant_id, id, &action,
                    json!({"inputs": [], "outputs": [], "delivery_id": id, "outcome": state, "function": function, "error": error}))
            })?;
            out.push((id, action, state.to_owned(), error));
        }
        Ok::<_, SqlError>(out)
    })
    .or_raise();
    TableIterator::new(rows)
}
