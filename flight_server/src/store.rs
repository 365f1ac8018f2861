//! Published versions as Arrow data. A version is immutable, so it is read once from Postgres
//! (by the loader, which knows COPY, into a sink this module gives it) as Arrow batches of
//! `BATCH_ROWS` rows written to an Arrow IPC file, and later reads come from that file. The cache is keyed by (tenant,
//! dataset, version, content hash), so it is never stale; it has a size limit and evicts the
//! least recently used versions past it; it survives restarts (files are found again by key).
//! In front of the files sits a memory tier, also bounded and LRU: recently read versions are
//! kept as Arrow batches, so warm reads copy nothing until the wire.

use crate::catalog::VersionInfo;
use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::loader;
use crate::types::{ColumnKind, NUMERIC_KEY, PG_TYPE_KEY};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

pub use crate::loader::BATCH_ROWS;

/// Counters the metrics endpoint reports.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub loaded_rows: AtomicU64,
    pub cached_bytes: AtomicU64,
    pub memory_hits: AtomicU64,
    pub parallel_loads: AtomicU64,
    pub memory_bytes: AtomicU64,
}

/// Where a load sends its batches for the reader that started it.
pub type Tee = mpsc::Sender<std::result::Result<RecordBatch, datafusion::error::DataFusionError>>;

/// A version held in memory.
#[derive(Debug)]
pub struct Resident {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Hot {
    entries: HashMap<String, (Arc<Resident>, u64)>,
    clock: u64,
    total: u64,
}

#[derive(Debug)]
struct Entry {
    bytes: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    clock: u64,
    total: u64,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    max_bytes: u64,
    memory_max_bytes: u64,
    parallel_min_bytes: u64,
    /// The tenants' flags (`flight.parallel_load`), cached for a bounded time.
    flags: crate::flags::Flags,
    hot: std::sync::Mutex<Hot>,
    index: std::sync::Mutex<Index>,
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Per version: held while its cache file is read into memory.
    reading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub stats: StoreStats,
}

/// A version present in the cache.
#[derive(Debug, Clone)]
pub struct Cached {
    pub path: PathBuf,
    pub schema: SchemaRef,
    pub batches: usize,
    pub bytes: u64,
}

/// The Arrow schema of a version, from its catalog columns.
pub fn arrow_schema(v: &VersionInfo) -> SchemaRef {
    Arc::new(Schema::new(
        v.columns
            .iter()
            .map(|c| {
                let kind = ColumnKind::of(c);
                let mut meta = HashMap::from([(PG_TYPE_KEY.to_owned(), c.pg_type.clone())]);
                if let Some(carrier) = kind.numeric_carrier() {
                    meta.insert(NUMERIC_KEY.to_owned(), carrier.to_owned());
                }
                Field::new(&c.name, kind.arrow_type(), c.nullable).with_metadata(meta)
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
            let kind = ColumnKind::of(c);
            let (precision, scale) = match &kind {
                ColumnKind::Decimal { precision, scale }
                | ColumnKind::Decimal256 { precision, scale } => {
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
            let mut meta = f.metadata().clone();
            let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
            meta.extend([
                (
                    "ARROW:FLIGHT:SQL:CATALOG_NAME".to_owned(),
                    crate::catalog::CATALOG_NAME.to_owned(),
                ),
                (
                    "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME".to_owned(),
                    crate::catalog::SCHEMA_NAME.to_owned(),
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

/// Takes the lock of `key` in a map of per-version locks (made on first use).
async fn per_key(
    locks: &Mutex<HashMap<String, Arc<Mutex<()>>>>,
    key: &str,
) -> tokio::sync::OwnedMutexGuard<()> {
    let lock = locks
        .lock()
        .await
        .entry(key.to_owned())
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// A schema as text that is the same every time for the same schema: each field's name, type,
/// nullability and metadata with its keys sorted. (`{:?}` of a schema prints the metadata
/// maps in their hash order, which differs between two maps of the same entries: the cache
/// key then changed from one request to the next, and a stored version was loaded again from
/// Postgres as if it had never been read.)
pub fn schema_fingerprint(schema: &Schema) -> String {
    let mut out = String::new();
    for f in schema.fields() {
        let meta: std::collections::BTreeMap<_, _> = f.metadata().iter().collect();
        out.push_str(&format!(
            "{:?}\0{:?}\0{}\0{:?}\n",
            f.name(),
            f.data_type(),
            f.is_nullable(),
            meta
        ));
    }
    out
}

/// The memory batches hold, each allocation counted once. Arrays read from an IPC file are
/// slices of one buffer per batch, which `get_array_memory_size` counts again for every array
/// (many times the file's size): the memory tier then refused versions that fit it and read
/// them from their file on every request.
pub fn memory_size(batches: &[RecordBatch]) -> u64 {
    fn add(
        d: &arrow::array::ArrayData,
        seen: &mut std::collections::HashSet<usize>,
        total: &mut u64,
    ) {
        let nulls = d.nulls().map(|n| n.buffer());
        for buf in d.buffers().iter().chain(nulls) {
            if seen.insert(buf.data_ptr().as_ptr() as usize) {
                // an externally owned buffer reports no capacity: count its length
                *total += buf.capacity().max(buf.len()) as u64;
            }
        }
        for child in d.child_data() {
            add(child, seen, total);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for b in batches {
        for c in b.columns() {
            add(&c.to_data(), &mut seen, &mut total);
        }
    }
    total
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> FlightError {
    FlightError::Internal(format!("cache: cannot {what} {}: {e}", path.display()))
}

impl Store {
    /// Opens (creating) a cache directory: leftovers of interrupted loads (an hour old) are removed, cached
    /// versions from earlier runs are kept and counted against `max_bytes`.
    pub fn open(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        memory_max_bytes: u64,
        parallel_min_bytes: u64,
        flag_max_age: std::time::Duration,
    ) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let mut index = Index::default();
        for entry in std::fs::read_dir(&dir).map_err(|e| io("list", &dir, e))? {
            let entry = entry.map_err(|e| io("list", &dir, e))?;
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("arrow") => {
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        index.total += bytes;
                        index.entries.insert(
                            stem.to_owned(),
                            Entry {
                                bytes,
                                last_used: 0,
                            },
                        );
                    }
                }
                Some("tmp") => {
                    // Leftovers of interrupted loads; a fresh one may be another server's load
                    // in progress in a shared directory, so only stale ones go.
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > std::time::Duration::from_secs(3600));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                _ => {}
            }
        }
        let stats = StoreStats::default();
        stats.cached_bytes.store(index.total, Ordering::Relaxed);
        Ok(Store {
            dir,
            max_bytes,
            memory_max_bytes,
            parallel_min_bytes,
            flags: crate::flags::Flags::new(flag_max_age),
            hot: std::sync::Mutex::new(Hot::default()),
            index: std::sync::Mutex::new(index),
            loading: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
            stats,
        })
    }

    fn key(v: &VersionInfo) -> String {
        let mut h = Sha256::new();
        for part in [
            v.tenant.as_str(),
            v.dataset.as_str(),
            &v.version.to_string(),
            v.content_hash.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        // the served schema too: a file cached under another type mapping is not reused
        h.update(schema_fingerprint(&arrow_schema(v)).as_bytes());
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.arrow"))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index inconsistent in a way that
        // matters (worst case a size is off), so a poisoned lock is used as is.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hot(&self) -> std::sync::MutexGuard<'_, Hot> {
        self.hot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hot_get(&self, key: &str) -> Option<Arc<Resident>> {
        let mut hot = self.hot();
        hot.clock += 1;
        let clock = hot.clock;
        let (r, used) = hot.entries.get_mut(key)?;
        *used = clock;
        Some(r.clone())
    }

    /// Keeps a version in memory, evicting the least recently used ones past the budget; a
    /// version larger than the whole budget is not kept.
    fn hot_put(&self, key: &str, r: Arc<Resident>) {
        if r.bytes > self.memory_max_bytes {
            return;
        }
        let mut hot = self.hot();
        if hot.entries.contains_key(key) {
            return;
        }
        while hot.total + r.bytes > self.memory_max_bytes {
            let victim = hot
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some((v, _)) = hot.entries.remove(&victim) {
                hot.total = hot.total.saturating_sub(v.bytes);
            }
        }
        hot.clock += 1;
        let clock = hot.clock;
        hot.total += r.bytes;
        hot.entries.insert(key.to_owned(), (r, clock));
        self.stats.memory_bytes.store(hot.total, Ordering::Relaxed);
    }

    /// A version in memory: from the memory tier, else read from its cache file (loading it
    /// from Postgres first if needed) when it fits the memory budget; `None` when it does not.
    pub async fn resident(&self, db: &Db, v: &VersionInfo) -> Result<Option<Arc<Resident>>> {
        let key = Self::key(v);
        if let Some(r) = self.hot_get(&key) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(r));
        }
        let cached = self.ensure(db, v).await?;
        // one reader of the file at a time per version: concurrent readers (the endpoints of
        // one query, fetched in parallel) wait for it and find the version in memory
        let _reading = per_key(&self.reading, &key).await;
        if let Some(r) = self.hot_get(&key) {
            return Ok(Some(r)); // the load kept it, or another reader read it meanwhile
        }
        if cached.bytes > self.memory_max_bytes {
            return Ok(None);
        }
        let path = cached.path.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<Resident> {
            let file = std::fs::File::open(&path).map_err(|e| io("open", &path, e))?;
            let reader = FileReader::try_new(std::io::BufReader::new(file), None)?;
            let schema = reader.schema();
            let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
            let bytes = memory_size(&batches);
            Ok(Resident {
                schema,
                batches,
                bytes,
            })
        })
        .await
        .map_err(|e| FlightError::Internal(format!("cache reader: {e}")))??;
        let r = Arc::new(r);
        self.hot_put(&key, r.clone());
        Ok(Some(r))
    }

    /// Makes sure a version is in the cache (loading it on first use) and describes it.
    pub async fn ensure(&self, db: &Db, v: &VersionInfo) -> Result<Cached> {
        Ok(self.ensure_with(db, v, None).await?.0)
    }

    /// Whether a version is in memory or in a cache file, so reading it needs no load.
    pub fn is_present(&self, v: &VersionInfo) -> bool {
        let key = Self::key(v);
        self.hot().entries.contains_key(&key) || self.index().entries.contains_key(&key)
    }

    /// Like `ensure`; when this call is the one that loads the version, every batch is also
    /// sent to `tee` as it is decoded (the first reader is served while the version loads),
    /// and the answer's flag is true.
    pub async fn ensure_with(
        &self,
        db: &Db,
        v: &VersionInfo,
        tee: Option<Tee>,
    ) -> Result<(Cached, bool)> {
        let key = Self::key(v);
        let _loading = per_key(&self.loading, &key).await;
        let path = self.path(&key);
        let known = {
            let mut idx = self.index();
            idx.clock += 1;
            let clock = idx.clock;
            match idx.entries.get_mut(&key) {
                Some(e) => {
                    e.last_used = clock;
                    true
                }
                None => false,
            }
        };
        if known {
            match describe(path.clone()).await {
                Ok(c) => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((c, false));
                }
                Err(e) => {
                    // Removed or damaged behind our back: forget it and load again.
                    tracing::warn!("cache entry {} unusable, reloading: {e}", path.display());
                    self.forget(&key);
                }
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let teed = tee.is_some();
        let (cached, kept) = self.load(db, v, &path, tee).await?;
        if let Some(kept) = kept {
            self.hot_put(&key, Arc::new(kept));
        }
        self.stats
            .loaded_rows
            .fetch_add(u64::try_from(v.row_count).unwrap_or(0), Ordering::Relaxed);
        {
            let mut idx = self.index();
            idx.clock += 1;
            let clock = idx.clock;
            idx.total += cached.bytes;
            idx.entries.insert(
                key.clone(),
                Entry {
                    bytes: cached.bytes,
                    last_used: clock,
                },
            );
        }
        self.evict(&key);
        Ok((cached, teed))
    }

    fn forget(&self, key: &str) {
        let mut idx = self.index();
        if let Some(e) = idx.entries.remove(key) {
            idx.total = idx.total.saturating_sub(e.bytes);
        }
        self.stats.cached_bytes.store(idx.total, Ordering::Relaxed);
    }

    /// Evicts least recently used versions (never `keep`, the one just loaded) until the cache
    /// fits its limit. Readers that have a file open keep reading it: Unix unlinks lazily.
    fn evict(&self, keep: &str) {
        let mut idx = self.index();
        while idx.total > self.max_bytes {
            let victim = idx
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                tracing::warn!(
                    "cache holds one version of {} bytes, above its limit of {}",
                    idx.total,
                    self.max_bytes
                );
                break;
            };
            if let Some(e) = idx.entries.remove(&victim) {
                idx.total = idx.total.saturating_sub(e.bytes);
            }
            let _ = std::fs::remove_file(self.path(&victim));
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.cached_bytes.store(idx.total, Ordering::Relaxed);
    }

    /// Has the loader read the version into the cache file (kept in memory too while it fits
    /// the budget; a waiting first reader is fed as batches arrive). The loader decides between
    /// parallel block ranges and one streamed COPY (`loader::Plan`).
    async fn load(
        &self,
        db: &Db,
        v: &VersionInfo,
        path: &Path,
        tee: Option<Tee>,
    ) -> Result<(Cached, Option<Resident>)> {
        let schema = arrow_schema(v);
        let tmp = path.with_extension(format!("{:016x}.tmp", rand::random::<u64>()));
        // the tenant's flight.parallel_load flag can turn parallel loads off (one COPY each)
        let parallel = self
            .flags
            .boolean(db, &v.tenant, crate::flags::PARALLEL_LOAD, true)
            .await;
        let plan = loader::Plan {
            parallel_min_bytes: if parallel {
                self.parallel_min_bytes
            } else {
                u64::MAX
            },
            parallel_max_bytes: self.memory_max_bytes,
        };
        let result = match IpcSink::create(&tmp, &schema, self.memory_max_bytes) {
            Ok(ipc) => loader::load(db, v, schema.clone(), plan, CacheSink { ipc, tee })
                .await
                .and_then(|loaded| {
                    if loaded.parallel {
                        self.stats.parallel_loads.fetch_add(1, Ordering::Relaxed);
                    }
                    let kept = loaded.sink.ipc.finish()?;
                    Ok((
                        loaded.batches,
                        kept.map(|(batches, bytes)| Resident {
                            schema: schema.clone(),
                            batches,
                            bytes,
                        }),
                    ))
                }),
            Err(e) => Err(e),
        };
        let (batches, resident) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, path).map_err(|e| io("rename", &tmp, e))?;
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok((
            Cached {
                path: path.to_owned(),
                schema,
                batches,
                bytes,
            },
            resident,
        ))
    }

    /// Batches `[first, end)` of a version: from memory when it is resident, else streamed
    /// from its cache file.
    pub async fn stream(
        &self,
        db: &Db,
        v: &VersionInfo,
        first: usize,
        end: usize,
    ) -> Result<(
        SchemaRef,
        futures::stream::BoxStream<'static, Result<RecordBatch>>,
    )> {
        if let Some(r) = self.resident(db, v).await? {
            let end = end.min(r.batches.len());
            let first = first.min(end);
            let batches: Vec<Result<RecordBatch>> =
                r.batches[first..end].iter().cloned().map(Ok).collect();
            return Ok((r.schema.clone(), futures::stream::iter(batches).boxed()));
        }
        let cached = self.ensure(db, v).await?;
        let end = end.min(cached.batches);
        let first = first.min(end);
        let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(2);
        let path = cached.path.clone();
        let on_panic = |m: String| {
            Err(FlightError::Internal(format!(
                "reading the cache failed: {m}"
            )))
        };
        crate::error::spawn_blocking_feeder(tx.clone(), on_panic, move || {
            let run = || -> Result<()> {
                let file = std::fs::File::open(&path).map_err(|e| io("open", &path, e))?;
                let mut reader = FileReader::try_new(std::io::BufReader::new(file), None)?;
                reader.set_index(first)?;
                for _ in first..end {
                    let Some(b) = reader.next() else { break };
                    if tx.blocking_send(Ok(b?)).is_err() {
                        return Ok(()); // the client went away
                    }
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok((
            cached.schema,
            tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
        ))
    }

    /// Rows and (approximate) bytes in batches `[first, end)`: exact when the version is in
    /// memory; else from the batch size, clipped to the version's rows.
    pub async fn range_size(
        &self,
        db: &Db,
        v: &VersionInfo,
        first: usize,
        end: usize,
    ) -> Result<(usize, usize)> {
        if let Some(r) = self.resident(db, v).await? {
            let end = end.min(r.batches.len());
            let first = first.min(end);
            let part = &r.batches[first..end];
            return Ok((
                part.iter().map(RecordBatch::num_rows).sum(),
                part.iter().map(RecordBatch::get_array_memory_size).sum(),
            ));
        }
        let cached = self.ensure(db, v).await?;
        let total = usize::try_from(v.row_count).unwrap_or(0);
        let rows = total
            .min(end.saturating_mul(BATCH_ROWS))
            .saturating_sub(first.saturating_mul(BATCH_ROWS));
        let bytes = (cached.bytes as f64 * rows as f64 / total.max(1) as f64) as usize;
        Ok((rows, bytes))
    }

    /// A version as a DataFusion table that scans its cache file.
    pub async fn table(&self, db: &Db, v: &VersionInfo) -> Result<Arc<dyn TableProvider>> {
        if let Some(r) = self.resident(db, v).await? {
            return Ok(Arc::new(datafusion::datasource::MemTable::try_new(
                r.schema.clone(),
                vec![r.batches.clone()],
            )?));
        }
        let cached = self.ensure(db, v).await?;
        let path = cached.path.to_str().ok_or_else(|| {
            FlightError::Internal(format!("cache path {} is not UTF-8", cached.path.display()))
        })?;
        let url = ListingTableUrl::parse(path)?;
        let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(".arrow");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(cached.schema.clone());
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

/// Writes a cache file, keeping the batches it writes while they fit `keep_budget` bytes.
struct IpcSink {
    path: PathBuf,
    writer: FileWriter<std::io::BufWriter<std::fs::File>>,
    kept: Option<(Vec<RecordBatch>, u64)>,
    keep_budget: u64,
}

impl IpcSink {
    fn create(path: &Path, schema: &SchemaRef, keep_budget: u64) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| io("create", path, e))?;
        Ok(IpcSink {
            path: path.to_owned(),
            writer: FileWriter::try_new(std::io::BufWriter::new(file), schema)?,
            kept: Some((Vec::new(), 0)),
            keep_budget,
        })
    }

    fn write_keep(&mut self, b: RecordBatch) -> Result<()> {
        self.writer.write(&b)?;
        if let Some((list, bytes)) = self.kept.as_mut() {
            *bytes += memory_size(std::slice::from_ref(&b));
            if *bytes > self.keep_budget {
                self.kept = None;
            } else {
                list.push(b);
            }
        }
        Ok(())
    }

    /// Finishes the file (no fsync: a cache file torn by a crash fails to open and is loaded
    /// again) and hands back the kept batches.
    fn finish(mut self) -> Result<Option<(Vec<RecordBatch>, u64)>> {
        self.writer.finish()?;
        self.writer
            .into_inner()
            .map_err(|e| io("write", &self.path, e))?
            .into_inner()
            .map_err(|e| io("write", &self.path, e.error()))?;
        Ok(self.kept)
    }
}

/// Where a load's batches go: the cache file (keeping them in memory while they fit) and,
/// while a first reader waits, that reader too.
struct CacheSink {
    ipc: IpcSink,
    tee: Option<Tee>,
}

impl loader::Sink for CacheSink {
    fn write(&mut self, b: RecordBatch) -> Result<()> {
        if let Some(tee) = &self.tee {
            // A reader that went away does not stop the load.
            let _ = tee.blocking_send(Ok(b.clone()));
        }
        self.ipc.write_keep(b)
    }
}

/// Reads a cached file's schema and batch count from its footer.
async fn describe(path: PathBuf) -> Result<Cached> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| io("open", &path, e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = FileReader::try_new(std::io::BufReader::new(file), None)?;
        Ok(Cached {
            schema: reader.schema(),
            batches: reader.num_batches(),
            bytes,
            path,
        })
    })
    .await
    .map_err(|e| FlightError::Internal(format!("cache reader: {e}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    /// The cache key of a version is the same on every request: numeric columns carry two
    /// metadata entries, whose hash-map order differs between two maps.
    #[test]
    fn a_versions_cache_key_is_the_same_every_time() {
        let col = |name: &str, ty: &str| crate::catalog::PgColumn {
            name: name.into(),
            pg_type: ty.into(),
            nullable: true,
            numeric_precision: None,
            numeric_scale: None,
        };
        let v = VersionInfo {
            tenant: "default".into(),
            dataset: "bench_read".into(),
            version: 1,
            relation: "published.bench_read__v1".into(),
            columns: vec![
                col("id", "bigint"),
                col("amount", "numeric(12,2)"),
                col("price", "numeric(10,4)"),
                col("total", "numeric"),
                col("region", "text"),
            ],
            row_count: 10,
            content_hash: "ab".into(),
            ledger_seq: 1,
            ledger_hash: "cd".into(),
            is_latest: true,
        };
        let first = Store::key(&v);
        for _ in 0..200 {
            assert_eq!(Store::key(&v), first);
        }
        let mut other = v.clone();
        other.columns[1].pg_type = "numeric(14,2)".into();
        assert_ne!(
            Store::key(&other),
            first,
            "another type mapping is another key"
        );
    }

    /// A version read back from its cache file is counted at about its file's size, so the
    /// memory tier keeps what fits it (it was counted many times over, and refused).
    #[test]
    fn batches_read_from_a_cache_file_count_their_memory_once() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", arrow::datatypes::DataType::Int64, false),
            Field::new("a", arrow::datatypes::DataType::Utf8, true),
            Field::new("b", arrow::datatypes::DataType::Utf8, true),
            Field::new("n", arrow::datatypes::DataType::Int64, true),
        ]));
        let dir =
            std::env::temp_dir().join(format!("bc-store-test-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.arrow");
        let mut sink = IpcSink::create(&path, &schema, u64::MAX).unwrap();
        for part in 0..8i64 {
            let ids: Vec<i64> = (0..65_536).map(|i| part * 65_536 + i).collect();
            let a: Vec<Option<String>> = ids
                .iter()
                .map(|i| (i % 5 != 0).then(|| format!("customer_{}", i % 5000)))
                .collect();
            let b: Vec<Option<&str>> = ids
                .iter()
                .map(|i| Some(if i % 2 == 0 { "east" } else { "west" }))
                .collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from(a)),
                    Arc::new(StringArray::from(b)),
                    Arc::new(Int64Array::from(
                        ids.iter().map(|i| Some(i * 3)).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap();
            sink.write_keep(batch).unwrap();
        }
        let (kept, kept_bytes) = sink.finish().unwrap().unwrap();
        let file = std::fs::metadata(&path).unwrap().len();
        let read: Vec<RecordBatch> = FileReader::try_new(std::fs::File::open(&path).unwrap(), None)
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let counted = memory_size(&read);
        let naive: u64 = read.iter().map(|b| b.get_array_memory_size() as u64).sum();
        assert!(
            counted >= file / 2 && counted <= file * 3 / 2,
            "read back: {counted} bytes for a {file}-byte file"
        );
        assert!(
            naive > 2 * counted,
            "get_array_memory_size counts shared buffers again: {naive} vs {counted}"
        );
        // built batches own their buffers: the same either way
        let built: u64 = kept.iter().map(|b| b.get_array_memory_size() as u64).sum();
        assert_eq!(kept_bytes, memory_size(&kept));
        assert!(
            kept_bytes <= built && kept_bytes * 2 >= built,
            "{kept_bytes} vs {built}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
