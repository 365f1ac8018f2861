//! Published versions as Arrow data, loaded once from Postgres and kept: versions are
//! immutable, so a cached copy never goes stale (the key includes the content hash).

use crate::catalog::{VersionInfo, TENANT_COLUMN};
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::types::{parse_decimal, ColumnKind};
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use barecount_core::ident::quote_ident;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::Row;

/// Rows per Arrow batch when loading.
pub const BATCH_ROWS: usize = 65_536;

/// A loaded version: its Arrow schema and batches.
#[derive(Debug, Clone)]
pub struct LoadedVersion {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

type Key = (String, String, i32, String);

#[derive(Debug, Default)]
pub struct Store {
    loaded: Mutex<HashMap<Key, Arc<LoadedVersion>>>,
}

/// The Arrow schema of a version, from its catalog columns.
pub fn arrow_schema(v: &VersionInfo) -> SchemaRef {
    Arc::new(Schema::new(
        v.columns
            .iter()
            .map(|c| {
                Field::new(
                    &c.name,
                    ColumnKind::from_pg(&c.pg_type).arrow_type(),
                    c.nullable,
                )
            })
            .collect::<Vec<_>>(),
    ))
}

/// The schema GetTables describes: the served schema plus the `ARROW:FLIGHT:SQL:*` column
/// metadata of the Flight SQL specification.
pub fn described_schema(v: &VersionInfo, table_name: &str) -> Schema {
    let fields: Vec<Field> = arrow_schema(v)
        .fields()
        .iter()
        .zip(&v.columns)
        .map(|(f, c)| {
            let kind = ColumnKind::from_pg(&c.pg_type);
            let (precision, scale) = match &kind {
                ColumnKind::Decimal { precision, scale } => {
                    (i64::from(*precision), i64::from(*scale))
                }
                ColumnKind::Int16 => (5, 0),
                ColumnKind::Int32 => (10, 0),
                ColumnKind::Int64 => (19, 0),
                ColumnKind::Float32 => (24, 0),
                ColumnKind::Float64 | ColumnKind::NumericFloat => (53, 0),
                _ => (0, 0),
            };
            let text = matches!(kind, ColumnKind::Text | ColumnKind::OtherAsText);
            let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
            let meta = HashMap::from([
                (
                    "ARROW:FLIGHT:SQL:CATALOG_NAME".to_owned(),
                    crate::query::CATALOG_NAME.to_owned(),
                ),
                (
                    "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME".to_owned(),
                    crate::query::SCHEMA_NAME.to_owned(),
                ),
                (
                    "ARROW:FLIGHT:SQL:TABLE_NAME".to_owned(),
                    table_name.to_owned(),
                ),
                ("ARROW:FLIGHT:SQL:TYPE_NAME".to_owned(), c.pg_type.clone()),
                (
                    "ARROW:FLIGHT:SQL:PRECISION".to_owned(),
                    precision.to_string(),
                ),
                ("ARROW:FLIGHT:SQL:SCALE".to_owned(), scale.to_string()),
                ("ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT".to_owned(), flag(false)),
                ("ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE".to_owned(), flag(text)),
                ("ARROW:FLIGHT:SQL:IS_READ_ONLY".to_owned(), flag(true)),
                ("ARROW:FLIGHT:SQL:IS_SEARCHABLE".to_owned(), flag(true)),
            ]);
            f.as_ref().clone().with_metadata(meta)
        })
        .collect();
    Schema::new(fields)
}

impl Store {
    /// Batches `[first, end)` of a version (each batch holds `BATCH_ROWS` rows, the last fewer).
    pub async fn batches(
        &self,
        db: &Db,
        v: &VersionInfo,
        first: usize,
        end: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let loaded = self.get(db, v).await?;
        let end = end.min(loaded.batches.len());
        let first = first.min(end);
        Ok((loaded.schema.clone(), loaded.batches[first..end].to_vec()))
    }

    /// A version as a DataFusion table.
    pub async fn table(
        &self,
        db: &Db,
        v: &VersionInfo,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let loaded = self.get(db, v).await?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            loaded.schema.clone(),
            vec![loaded.batches.clone()],
        )?))
    }

    pub async fn get(&self, db: &Db, v: &VersionInfo) -> Result<Arc<LoadedVersion>> {
        let key = (
            v.tenant.clone(),
            v.dataset.clone(),
            v.version,
            v.content_hash.clone(),
        );
        let mut loaded = self.loaded.lock().await;
        if let Some(hit) = loaded.get(&key) {
            return Ok(hit.clone());
        }
        let fresh = Arc::new(load(db, v).await?);
        loaded.insert(key, fresh.clone());
        Ok(fresh)
    }
}

fn quote_relation(relation: &str) -> String {
    relation
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

async fn load(db: &Db, v: &VersionInfo) -> Result<LoadedVersion> {
    let kinds: Vec<ColumnKind> = v
        .columns
        .iter()
        .map(|c| ColumnKind::from_pg(&c.pg_type))
        .collect();
    let exprs: Vec<String> = v
        .columns
        .iter()
        .zip(&kinds)
        .map(|(c, k)| k.select_expr(&quote_ident(&c.name)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1",
        exprs.join(", "),
        quote_relation(&v.relation),
        quote_ident(TENANT_COLUMN)
    );
    let client = db.client().await?;
    let rows = client.query(&sql, &[&v.tenant]).await?;
    let schema = arrow_schema(v);
    let mut batches = Vec::new();
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            arrays.push(
                column(chunk, i, kind).map_err(|message| FlightError::Conversion {
                    dataset: v.dataset.clone(),
                    column: v.columns[i].name.clone(),
                    pg_type: v.columns[i].pg_type.clone(),
                    message,
                })?,
            );
        }
        batches.push(RecordBatch::try_new(schema.clone(), arrays)?);
    }
    Ok(LoadedVersion { schema, batches })
}

fn column(rows: &[Row], i: usize, kind: &ColumnKind) -> std::result::Result<ArrayRef, String> {
    macro_rules! build {
        ($builder:expr, $t:ty, $conv:expr) => {{
            let mut b = $builder;
            for r in rows {
                let v: Option<$t> = r.try_get(i).map_err(|e| e.to_string())?;
                b.append_option(v.map($conv));
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match kind {
        ColumnKind::Bool => build!(BooleanBuilder::new(), bool, |x| x),
        ColumnKind::Int16 => build!(Int16Builder::new(), i16, |x| x),
        ColumnKind::Int32 => build!(Int32Builder::new(), i32, |x| x),
        ColumnKind::Int64 => build!(Int64Builder::new(), i64, |x| x),
        ColumnKind::Float32 => build!(Float32Builder::new(), f32, |x| x),
        ColumnKind::Float64 | ColumnKind::NumericFloat => build!(Float64Builder::new(), f64, |x| x),
        ColumnKind::Text | ColumnKind::OtherAsText => build!(StringBuilder::new(), &str, |x| x),
        ColumnKind::Date => build!(Date32Builder::new(), i32, |x| x),
        ColumnKind::Timestamp => build!(TimestampMicrosecondBuilder::new(), i64, |x| x),
        ColumnKind::TimestampTz => {
            build!(
                TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                i64,
                |x| x
            )
        }
        ColumnKind::Decimal { precision, scale } => {
            let mut b = Decimal128Builder::new()
                .with_precision_and_scale(*precision, *scale)
                .map_err(|e| e.to_string())?;
            for r in rows {
                let v: Option<&str> = r.try_get(i).map_err(|e| e.to_string())?;
                match v {
                    None => b.append_null(),
                    Some(text) => b.append_value(
                        parse_decimal(text, *scale)
                            .ok_or_else(|| format!("value {text} does not fit"))?,
                    ),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }
    })
}
