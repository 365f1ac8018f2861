//! SQL over published datasets with DataFusion. Each request gets a session whose only schema,
//! `published`, holds exactly the caller's tenant's datasets: `<dataset>` is the latest version,
//! `<dataset>__v<N>` pins one. Tables load lazily, on first reference.

use crate::catalog::Catalog;
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::store::Store;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

pub const CATALOG_NAME: &str = "barecount";
pub const SCHEMA_NAME: &str = "published";

/// A tenant's published datasets as a DataFusion schema.
#[derive(Debug)]
struct PublishedSchema {
    catalog: Catalog,
    db: Arc<Db>,
    store: Arc<Store>,
}

#[tonic::async_trait]
impl SchemaProvider for PublishedSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        let Some(v) = self.catalog.resolve_table(name) else {
            return Ok(None);
        };
        let loaded = self
            .store
            .get(&self.db, v)
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let table = MemTable::try_new(loaded.schema.clone(), vec![loaded.batches.clone()])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.resolve_table(name).is_some()
    }
}

/// Builds a session over one tenant's catalog snapshot.
pub fn session(catalog: Catalog, db: Arc<Db>, store: Arc<Store>) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    let cat = ctx
        .catalog(CATALOG_NAME)
        .ok_or_else(|| FlightError::Internal("default catalog missing".into()))?;
    // The tenant's published schema is the only one with tables.
    cat.register_schema(
        SCHEMA_NAME,
        Arc::new(PublishedSchema { catalog, db, store }),
    )?;
    Ok(ctx)
}

/// Plans a query and returns the schema its results will have.
pub async fn plan_schema(ctx: &SessionContext, sql: &str) -> Result<SchemaRef> {
    let df = ctx.sql(sql).await?;
    let plan = df.create_physical_plan().await?;
    Ok(plan.schema())
}

/// Runs a query and collects its batches.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await?;
    Ok(df.collect().await?)
}
