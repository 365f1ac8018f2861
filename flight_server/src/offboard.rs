//! Offboarding a tenant (`barecount-flight offboard`): a complete export of its data and
//! evidence, then its deletion. Into a new directory `<out>/<tenant>-<unix millis>/`:
//! - `published/<dataset>__v<n>.parquet`: every published version it still has;
//! - `rows/<relation>.jsonl`: its rows of every catalog and raw table
//!   (`barecount.tenant_export_rows`; token hashes, secrets and keys stay behind);
//! - `ledger.jsonl`: its ledger entries (sequence number, canonical bytes in base64, hash,
//!   previous hash) and `ledger-digest.json`, the whole chain's digest at the time;
//! - `manifest.json`: every file with its SHA-256, bytes and rows, and the ledger slice's
//!   fingerprint (SHA-256 of its entry hashes, one a line).
//!
//! Then `barecount.tenant_offboard(tenant, manifest)` checks the manifest against the ledger,
//! writes the final receipt and deletes the tenant everywhere. The database refuses a tenant
//! that is not suspended, the default tenant and one with pinned versions before anything is
//! written here.

use crate::catalog::Catalog;
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::store::Store;
use datafusion::parquet;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an offboarding left: the export directory, its files and the final receipt.
#[derive(Debug)]
pub struct Offboarded {
    pub dir: PathBuf,
    pub files: usize,
    pub ledger_entries: usize,
    pub receipt_seq: i64,
    /// The login roles that mapped to the tenant: they stay, mapped to no tenant.
    pub roles: Vec<String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> FlightError {
    FlightError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

struct Files {
    root: PathBuf,
    listed: Vec<Value>,
}

impl Files {
    /// Records a written file (path relative to the root) with its hash, size and rows.
    fn add(&mut self, path: &Path, rows: u64) -> Result<()> {
        // streamed: a published version's Parquet file need not fit in memory
        let (bytes, sha256) = crate::export::sha256_file(path)?;
        let rel = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        self.listed
            .push(json!({"path": rel, "sha256": sha256, "bytes": bytes, "rows": rows}));
        Ok(())
    }
}

/// Exports everything of `tenant` under `out` and offboards it (see the module comment).
pub async fn run(database_url: &str, tenant: &str, out: &Path) -> Result<Offboarded> {
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(FlightError::InvalidRequest(format!(
            "\"{tenant}\" is not a tenant id"
        )));
    }
    let db = Db::new(database_url);
    let t = tenant.to_owned();
    // refused here, before anything is written, when the tenant cannot go yet
    db.run(|c| {
        let t = t.clone();
        async move {
            c.query("SELECT * FROM barecount.tenant_offboard_check($1)", &[&t])
                .await
        }
    })
    .await?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let root = out.join(format!("{tenant}-{millis}"));
    for sub in ["published", "rows"] {
        let d = root.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| io("create", &d, e))?;
    }
    let mut files = Files {
        root: root.clone(),
        listed: vec![],
    };

    // every published version, as Parquet, through the loader (a cache of its own, in the
    // export directory, removed after)
    let scratch = root.join(".cache");
    let store = Store::open(&scratch, u64::MAX, 0, u64::MAX, std::time::Duration::ZERO)?;
    let catalog = Catalog::load(&db, tenant).await?;
    for v in &catalog.versions {
        let path = root
            .join("published")
            .join(format!("{}__v{}.parquet", v.dataset, v.version));
        let (schema, mut batches) = store.stream(&db, v, 0, usize::MAX).await?;
        let file = std::fs::File::create(&path).map_err(|e| io("create", &path, e))?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None)
            .map_err(|e| FlightError::Internal(format!("parquet: {e}")))?;
        let mut rows = 0u64;
        while let Some(b) = batches.next().await {
            let b = b?;
            rows += b.num_rows() as u64;
            w.write(&b)
                .map_err(|e| FlightError::Internal(format!("parquet: {e}")))?;
        }
        w.close()
            .map_err(|e| FlightError::Internal(format!("parquet: {e}")))?;
        files.add(&path, rows)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);

    // its rows of every catalog and raw table, one JSON lines file per relation
    let rows = db
        .run(|c| {
            let t = t.clone();
            async move {
                c.query(
                    "SELECT relation, row_data::text FROM barecount.tenant_export_rows($1)",
                    &[&t],
                )
                .await
            }
        })
        .await?;
    let mut by_relation: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        by_relation
            .entry(r.try_get(0)?)
            .or_default()
            .push(r.try_get(1)?);
    }
    // its login roles stay (roles are the operator's): named for the operator to drop
    let roles: Vec<String> = by_relation
        .get("barecount.tenant_members")
        .into_iter()
        .flatten()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|m| m["role_name"].as_str().map(str::to_owned))
        .collect();
    for (relation, lines) in &by_relation {
        let path = root.join("rows").join(format!("{relation}.jsonl"));
        write_lines(&path, lines)?;
        files.add(&path, lines.len() as u64)?;
    }

    // the ledger slice and the chain's digest
    let slice = db
        .run(|c| {
            let t = t.clone();
            async move {
                c.query(
                    "SELECT seq, encode(canonical, 'base64'), entry_hash, prev_hash FROM barecount.tenant_ledger_slice($1)",
                    &[&t],
                )
                .await
            }
        })
        .await?;
    let mut lines = Vec::with_capacity(slice.len());
    let mut fingerprint = Sha256::new();
    let (mut first, mut last) = (None, None);
    for r in &slice {
        let seq: i64 = r.try_get(0)?;
        let canonical: String = r.try_get(1)?;
        let hash: String = r.try_get(2)?;
        let prev: String = r.try_get(3)?;
        fingerprint.update(format!("{hash}\n").as_bytes());
        first.get_or_insert(seq);
        last = Some(seq);
        lines.push(
            json!({"seq": seq, "canonical_base64": canonical.replace('\n', ""), "entry_hash": hash, "prev_hash": prev})
                .to_string(),
        );
    }
    let ledger_path = root.join("ledger.jsonl");
    write_lines(&ledger_path, &lines)?;
    files.add(&ledger_path, lines.len() as u64)?;
    let digest = db
        .run(|c| async move {
            c.query("SELECT seq, entry_hash FROM barecount.ledger_digest()", &[])
                .await
        })
        .await?;
    let digest = match digest.first() {
        Some(r) => {
            json!({"seq": r.try_get::<_, i64>(0)?, "entry_hash": r.try_get::<_, String>(1)?})
        }
        None => Value::Null,
    };
    let digest_path = root.join("ledger-digest.json");
    write_lines(&digest_path, &[digest.to_string()])?;
    files.add(&digest_path, 1)?;

    let manifest = json!({
        "tenant": tenant,
        "files": files.listed,
        "ledger": {"entries": lines.len(), "first_seq": first, "last_seq": last,
                   "slice_sha256": hex::encode(fingerprint.finalize())},
        "digest": digest,
    });
    let manifest_path = root.join("manifest.json");
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )
    .map_err(|e| io("write", &manifest_path, e))?;

    // the export is complete on disk: now the tenant goes
    // (a connection of its own: a write is never retried on a lost reply)
    let receipt_seq: i64 = db
        .dedicated()
        .await?
        .query_one("SELECT barecount.tenant_offboard($1, $2)", &[&t, &manifest])
        .await?
        .try_get(0)?;
    Ok(Offboarded {
        dir: root,
        files: files.listed.len() + 1,
        ledger_entries: lines.len(),
        receipt_seq,
        roles,
    })
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| io("create", path, e))?;
    for l in lines {
        writeln!(f, "{l}").map_err(|e| io("write", path, e))?;
    }
    f.sync_all().map_err(|e| io("sync", path, e))
}
