//! SQL over published datasets with DataFusion. Each request gets a session whose only schema,
//! `published`, holds exactly the caller's tenant's datasets: `<dataset>` is the latest version,
//! `<dataset>__v<N>` pins one. Tables load lazily, on first reference.
//!
//! Every SQL text a client sends — statement queries, prepared statements, GetSchema, export
//! queries — is planned by [`plan`] and nowhere else: it is read-only. The statement is planned
//! without being run, and a plan that holds DDL (`CREATE [EXTERNAL] TABLE`, `CREATE VIEW`,
//! `DROP`, …), DML (`INSERT`, `COPY … TO`), or a statement (`SET`, `BEGIN`, `PREPARE`, …)
//! anywhere — under `EXPLAIN` or a subquery too — is refused with `PERMISSION_DENIED` before
//! anything is executed, so nothing is written or read from the host. The session has no
//! file, object-store or URL tables to begin with.

use crate::catalog::{Catalog, VersionInfo};
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::prepared;
use crate::store::{arrow_schema, Store};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use std::sync::Arc;

pub use crate::catalog::{CATALOG_NAME, SCHEMA_NAME};

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
        if !self.store.is_present(v) {
            // Not loaded yet: the query that scans it loads it and is served as it loads.
            let partition = LoadingPartition {
                schema: arrow_schema(v),
                version: v.clone(),
                db: self.db.clone(),
                store: self.store.clone(),
            };
            let table = StreamingTable::try_new(arrow_schema(v), vec![Arc::new(partition)])?;
            return Ok(Some(Arc::new(table)));
        }
        let table = self
            .store
            .table(&self.db, v)
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.resolve_table(name).is_some()
    }
}

/// A version not yet in the store, as one partition: executing it loads the version (binary
/// COPY into the cache) and streams each batch as it is decoded. If another reader loaded it
/// meanwhile, the batches come from the store instead.
#[derive(Debug)]
struct LoadingPartition {
    schema: SchemaRef,
    version: VersionInfo,
    db: Arc<Db>,
    store: Arc<Store>,
}

impl PartitionStream for LoadingPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (db, store, v) = (self.db.clone(), self.store.clone(), self.version.clone());
        let external = |e: FlightError| DataFusionError::External(Box::new(e));
        let on_panic = move |m: String| {
            Err(external(FlightError::Internal(format!(
                "loading the version failed: {m}"
            ))))
        };
        crate::error::spawn_feeder(tx.clone(), on_panic, async move {
            match store.ensure_with(&db, &v, Some(tx.clone())).await {
                Ok((_, true)) => {}
                Ok((_, false)) => match store.stream(&db, &v, 0, usize::MAX).await {
                    Ok((_, mut batches)) => {
                        while let Some(b) = batches.next().await {
                            if tx.send(b.map_err(external)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(external(e))).await;
                    }
                },
                Err(e) => {
                    let _ = tx.send(Err(external(e))).await;
                }
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }
}

/// Builds a session over one tenant's catalog snapshot.
pub fn session(catalog: Catalog, db: Arc<Db>, store: Arc<Store>) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME)
        // a read-only information_schema (tables, columns, views) over this session's one
        // catalog, so BI tools can run SHOW TABLES and information_schema queries; it lists
        // only the caller's tenant's datasets, since the session holds nothing else
        .with_information_schema(true);
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

/// What a client may not run over Flight: anything but a query.
fn refused_part(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Ddl(d) => Some(d.name().to_owned()),
        LogicalPlan::Dml(d) => Some(d.name().to_owned()),
        LogicalPlan::Copy(_) => Some("COPY".to_owned()),
        LogicalPlan::Statement(s) => Some(s.name().to_owned()),
        _ => None,
    }
}

/// The tables of the tenant's published schema a plan scans, subqueries included (SQL names:
/// `sales`, `sales__v3`), once each: what policies decide reads and exports on.
pub fn scanned_tables(df: &DataFrame) -> Vec<String> {
    let mut out = Vec::new();
    let _ = df.logical_plan().apply_with_subqueries(|p| {
        if let LogicalPlan::TableScan(scan) = p {
            let t = &scan.table_name;
            if t.schema().is_none_or(|s| s == SCHEMA_NAME)
                && t.catalog().is_none_or(|c| c == CATALOG_NAME)
            {
                out.push(t.table().to_owned());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.sort();
    out.dedup();
    out
}

/// Plans `sql` read-only: the one entry for client SQL (see the module comment).
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let state = ctx.state();
    let plan = state.create_logical_plan(sql).await?;
    let mut refused = None;
    plan.apply_with_subqueries(|p| {
        Ok(match refused_part(p) {
            Some(what) => {
                refused = Some(what);
                TreeNodeRecursion::Stop
            }
            None => TreeNodeRecursion::Continue,
        })
    })?;
    if let Some(what) = refused {
        return Err(FlightError::PermissionDenied(format!(
            "Flight SQL is read-only: {what} is not allowed; only queries over your published datasets run"
        )));
    }
    // DataFusion's own check as well, so a plan kind added later is refused by default.
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| FlightError::PermissionDenied(format!("Flight SQL is read-only: {e}")))?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// Plans `sql`, binding `params` (a prepared statement's encoded parameter row) if given.
pub async fn dataframe(ctx: &SessionContext, sql: &str, params: Option<&str>) -> Result<DataFrame> {
    dataframes(ctx, sql, params)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| FlightError::InvalidRequest("no parameter rows were bound".into()))
}

/// The statement planned once per bound parameter row (once when it takes none), in row order:
/// several rows (ADBC's executemany, a bound batch) run it once each.
pub async fn dataframes(
    ctx: &SessionContext,
    sql: &str,
    params: Option<&str>,
) -> Result<Vec<DataFrame>> {
    let df = plan(ctx, sql).await?;
    let expected = df.logical_plan().get_parameter_types()?;
    match params {
        Some(p) => prepared::decode_params(p, &expected)?
            .into_iter()
            .map(|row| Ok(df.clone().with_param_values(row)?))
            .collect(),
        None if !expected.is_empty() => Err(FlightError::InvalidRequest(format!(
            "the statement has {} parameter(s): prepare it and bind them first",
            expected.len()
        ))),
        None => Ok(vec![df]),
    }
}

/// The table a planned statement reads whole — every column in order, no filter, limit or
/// other operator (`SELECT * FROM sales`, `SELECT id, region, … FROM sales__v3`) — so it can be
/// served straight from the store; `None` for anything else.
pub fn whole_version(df: &DataFrame) -> Option<String> {
    whole_scan(df.logical_plan())
}

fn whole_scan(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let n = scan.source.schema().fields().len();
            let every_column = scan
                .projection
                .as_ref()
                .is_none_or(|p| p.iter().copied().eq(0..n));
            // a published dataset, not a same-named table of information_schema
            let t = &scan.table_name;
            let published = t.schema().is_none_or(|s| s == SCHEMA_NAME)
                && t.catalog().is_none_or(|c| c == CATALOG_NAME);
            (published && every_column && scan.filters.is_empty() && scan.fetch.is_none())
                .then(|| t.table().to_owned())
        }
        // a projection that hands on every input column as it is, in order
        LogicalPlan::Projection(p) => {
            let input = p.input.schema();
            let identity = p.expr.len() == input.fields().len()
                && p.expr
                    .iter()
                    .zip(input.iter())
                    .all(|(e, (qualifier, field))| {
                        matches!(e, datafusion::logical_expr::Expr::Column(c)
                        if c.name == *field.name() && c.relation.as_ref() == qualifier)
                    });
            identity.then(|| whole_scan(&p.input)).flatten()
        }
        // `FROM sales s`: a new qualifier, the same columns
        LogicalPlan::SubqueryAlias(a) => whole_scan(&a.input),
        _ => None,
    }
}

/// Plans a query and returns the schema its results will have.
pub async fn plan_schema(
    ctx: &SessionContext,
    sql: &str,
    params: Option<&str>,
) -> Result<SchemaRef> {
    let plan = dataframe(ctx, sql, params)
        .await?
        .create_physical_plan()
        .await?;
    Ok(plan.schema())
}
