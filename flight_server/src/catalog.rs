//! The published catalog as the Flight server sees it: read from Postgres per request, filtered
//! to the caller's tenant, never cached (it is small and changes with every publish).

use crate::db::Db;
use crate::error::{FlightError, Result};
use serde::Deserialize;

/// The column of every published table that names its tenant.
pub const TENANT_COLUMN: &str = "tenant_id";

/// The one catalog and schema a tenant's datasets appear in over Flight SQL.
pub const CATALOG_NAME: &str = "barecount";
pub const SCHEMA_NAME: &str = "published";

/// One column of a published version, as `barecount.dataset_versions.columns` records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PgColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub pg_type: String,
    pub nullable: bool,
    /// For an unconstrained numeric: the digits and the digits after the point its values
    /// need, measured when the version was published (absent in older versions).
    #[serde(default, rename = "precision")]
    pub numeric_precision: Option<u32>,
    #[serde(default, rename = "scale")]
    pub numeric_scale: Option<u32>,
}

/// One published version of a dataset, with the columns Flight serves (all but tenant_id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub tenant: String,
    pub dataset: String,
    pub version: i32,
    pub relation: String,
    pub columns: Vec<PgColumn>,
    pub row_count: i64,
    pub content_hash: String,
    pub ledger_seq: i64,
    pub ledger_hash: String,
    pub is_latest: bool,
}

impl VersionInfo {
    /// The SQL table name that pins this version: `<dataset>__v<N>`.
    pub fn pinned_name(&self) -> String {
        format!("{}__v{}", self.dataset, self.version)
    }
}

/// The versions a tenant may read: every version that is not retired.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub versions: Vec<VersionInfo>,
}

impl Catalog {
    pub async fn load(db: &Db, tenant: &str) -> Result<Self> {
        let rows = db
            .run(|c| async move {
                c.query(
                "SELECT v.dataset, v.version, v.relation, v.columns::text, v.row_count, v.content_hash, \
                        v.ledger_seq, coalesce(l.entry_hash, ''), (d.latest_version = v.version) \
                   FROM barecount.dataset_versions v \
                   JOIN barecount.datasets d ON d.tenant_id = v.tenant_id AND d.dataset = v.dataset \
                   LEFT JOIN barecount.ledger l ON l.seq = v.ledger_seq \
                  WHERE v.tenant_id = $1 AND v.status <> 'retired' \
                  ORDER BY v.dataset, v.version",
                &[&tenant],
            )
            .await
            })
            .await?;
        let mut versions = Vec::with_capacity(rows.len());
        for r in rows {
            let columns_text: String = r.try_get(3)?;
            let mut columns: Vec<PgColumn> = serde_json::from_str(&columns_text)
                .map_err(|e| FlightError::Internal(format!("bad column list in catalog: {e}")))?;
            // Every published row carries tenant_id; the tenant is implied by the caller, so
            // Flight serves the other columns and filters on it.
            columns.retain(|c| c.name != TENANT_COLUMN);
            versions.push(VersionInfo {
                tenant: tenant.to_owned(),
                dataset: r.try_get(0)?,
                version: r.try_get(1)?,
                relation: r.try_get(2)?,
                columns,
                row_count: r.try_get(4)?,
                content_hash: r.try_get(5)?,
                ledger_seq: r.try_get(6)?,
                ledger_hash: r.try_get(7)?,
                is_latest: r.try_get(8)?,
            });
        }
        Ok(Catalog { versions })
    }

    pub fn latest(&self) -> impl Iterator<Item = &VersionInfo> {
        self.versions.iter().filter(|v| v.is_latest)
    }

    /// Resolves `dataset` (latest) or `dataset` + `version`.
    pub fn find(&self, dataset: &str, version: Option<i32>) -> Result<&VersionInfo> {
        match version {
            None => self
                .latest()
                .find(|v| v.dataset == dataset)
                .ok_or_else(|| FlightError::UnknownDataset(dataset.to_owned())),
            Some(n) => {
                if !self.versions.iter().any(|v| v.dataset == dataset) {
                    return Err(FlightError::UnknownDataset(dataset.to_owned()));
                }
                self.versions
                    .iter()
                    .find(|v| v.dataset == dataset && v.version == n)
                    .ok_or_else(|| FlightError::UnknownVersion {
                        dataset: dataset.to_owned(),
                        version: n,
                    })
            }
        }
    }

    /// Resolves a SQL table name: `<dataset>` (latest) or `<dataset>__v<N>` (pinned).
    pub fn resolve_table(&self, name: &str) -> Option<&VersionInfo> {
        if let Some((ds, n)) = name.rsplit_once("__v") {
            let n: i32 = n.parse().ok()?;
            return self
                .versions
                .iter()
                .find(|v| v.dataset == ds && v.version == n);
        }
        self.latest().find(|v| v.dataset == name)
    }

    /// Every SQL table name the tenant can query.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.latest().map(|v| v.dataset.clone()).collect();
        names.extend(self.versions.iter().map(VersionInfo::pinned_name));
        names
    }
}
