//! Ledger digests kept outside the database, the way SQL Server Ledger stores its digests
//! automatically: the server reads `barecount.ledger_digest()` (the chain's last sequence
//! number and entry hash) on a schedule (`--digest-interval-secs`) and whenever an operator
//! runs `barecount-flight digest`, and appends it to `<digest-dir>/ledger-digests.jsonl` — a
//! directory of the server's own user, mode 0700, which the database's superuser (user
//! postgres on the database host) cannot rewrite. Before a new digest is appended, the chain is
//! verified against the latest one kept (`barecount.ledger_verify(seq, hash)`): a chain whose
//! digested history was rewritten or cut off is reported and never digested again.
//!
//! The window: entries appended after the latest digest are protected only once the next
//! digest is taken. A superuser who appends a well-formed forged entry at the tail, or rewrites
//! entries newer than the latest digest, goes unnoticed by verification until then — at most
//! one interval (60 s by default); after that, any change to them is detected.

use crate::db::Db;
use crate::error::{FlightError, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file digests are appended to, one JSON object a line.
pub const FILE: &str = "ledger-digests.jsonl";

/// One kept digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub seq: i64,
    pub entry_hash: String,
    /// Seconds since the Unix epoch when it was taken.
    pub taken_at: u64,
}

/// The chain checked against a kept digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub checked: i64,
    pub last_seq: i64,
    /// The digest verified against (none kept yet: the chain alone).
    pub digest: Option<Digest>,
    pub first_broken_seq: Option<i64>,
    pub reason: Option<String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> FlightError {
    FlightError::Internal(format!("{what} {}: {e}", path.display()))
}

/// Creates the digest directory, readable and writable by this server's user only.
fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("cannot restrict", dir, e))?;
    }
    Ok(())
}

/// The latest digest kept in `dir`, if any. A torn last line (a crash mid-append) is skipped.
pub fn latest(dir: &Path) -> Result<Option<Digest>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", &path, e)),
    };
    Ok(text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Digest>(l).ok()))
}

/// Verifies the chain against the latest digest kept in `dir` (or alone, if none is).
pub async fn verify_latest(db: &Db, dir: &Path) -> Result<Verification> {
    let digest = latest(dir)?;
    let (seq, hash) = match &digest {
        Some(d) => (Some(d.seq), Some(d.entry_hash.clone())),
        None => (None, None),
    };
    let row = db
        .run(|c| {
            let hash = hash.clone();
            async move {
                c.query_one(
                    "SELECT ok, checked, last_seq, first_broken_seq, reason FROM barecount.ledger_verify($1, $2)",
                    &[&seq, &hash],
                )
                .await
            }
        })
        .await?;
    Ok(Verification {
        ok: row.try_get(0)?,
        checked: row.try_get(1)?,
        last_seq: row.try_get(2)?,
        digest,
        first_broken_seq: row.try_get(3)?,
        reason: row.try_get(4)?,
    })
}

/// Verifies against the latest digest kept, then keeps a new one if the chain grew. A chain
/// that fails verification is not digested: the answer says why.
pub async fn publish(db: &Db, dir: &Path) -> Result<(Verification, Option<Digest>)> {
    ensure_dir(dir)?;
    let verification = verify_latest(db, dir).await?;
    if !verification.ok {
        return Ok((verification, None));
    }
    let row = db
        .run(|c| async move {
            c.query_one("SELECT seq, entry_hash FROM barecount.ledger_digest()", &[])
                .await
        })
        .await?;
    let digest = Digest {
        seq: row.try_get(0)?,
        entry_hash: row.try_get(1)?,
        taken_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    if verification
        .digest
        .as_ref()
        .is_some_and(|d| d.seq == digest.seq && d.entry_hash == digest.entry_hash)
    {
        return Ok((verification, None)); // nothing new to digest
    }
    let path = dir.join(FILE);
    let mut line = serde_json::to_string(&digest)
        .map_err(|e| FlightError::Internal(format!("cannot encode a digest: {e}")))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io("cannot open", &path, e))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("cannot write", &path, e))?;
    Ok((verification, Some(digest)))
}

/// Takes a digest every `interval` until the runtime stops; failures are logged and counted.
pub fn schedule(
    db: std::sync::Arc<Db>,
    dir: PathBuf,
    interval: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match publish(&db, &dir).await {
                Ok((v, _)) if !v.ok => {
                    metrics.ledger_check(false);
                    tracing::error!(
                        first_broken_seq = ?v.first_broken_seq,
                        reason = ?v.reason,
                        "the evidence ledger no longer matches its latest kept digest"
                    );
                }
                Ok((_, taken)) => {
                    metrics.ledger_check(true);
                    if let Some(d) = taken {
                        tracing::debug!(seq = d.seq, "ledger digest kept");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not take a ledger digest"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_whole_line_wins() {
        let dir = std::env::temp_dir().join(format!("bc-digest-{:08x}", rand::random::<u32>()));
        assert_eq!(latest(&dir).unwrap(), None);
        ensure_dir(&dir).unwrap();
        let a = Digest {
            seq: 3,
            entry_hash: "aa".into(),
            taken_at: 1,
        };
        let b = Digest {
            seq: 5,
            entry_hash: "bb".into(),
            taken_at: 2,
        };
        let text = format!(
            "{}\n{}\n{{\"seq\": 9, \"entry_h",
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        std::fs::write(dir.join(FILE), text).unwrap();
        assert_eq!(latest(&dir).unwrap(), Some(b));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
