//! Feature flags as barecount-flight reads them: each tenant's resolved values
//! (`barecount.gateway_flags`), cached for at most `max_age` (`--flag-max-age-secs`): the bound
//! on how long a flag change takes to reach the server. A database without flags (schema 0.1.0,
//! before `ALTER EXTENSION barecount UPDATE`) or a failed read gives the caller's default.

use crate::db::Db;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether versions of the tenant may load with parallel COPYs over block ranges (the loader's
/// plan decides the rest); off, every load is one COPY.
pub const PARALLEL_LOAD: &str = "flight.parallel_load";

type Values = Arc<HashMap<String, Value>>;

#[derive(Debug)]
pub struct Flags {
    max_age: Duration,
    cache: Mutex<HashMap<String, (Instant, Values)>>,
}

impl Flags {
    pub fn new(max_age: Duration) -> Self {
        Flags {
            max_age,
            cache: Mutex::default(),
        }
    }

    /// A boolean flag's value for `tenant`, or `default` when it cannot be read.
    pub async fn boolean(&self, db: &Db, tenant: &str, name: &str, default: bool) -> bool {
        match self.values(db, tenant).await {
            Some(v) => v.get(name).and_then(Value::as_bool).unwrap_or(default),
            None => default,
        }
    }

    async fn values(&self, db: &Db, tenant: &str) -> Option<Values> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, v)) = cache.get(tenant) {
                if at.elapsed() < self.max_age {
                    return Some(v.clone());
                }
            }
        }
        let owned = tenant.to_owned();
        let rows = db
            .run(|c| {
                let t = owned.clone();
                async move {
                    c.query("SELECT name, value FROM barecount.gateway_flags($1)", &[&t])
                        .await
                }
            })
            .await;
        let values: Values = match rows {
            Ok(rows) => Arc::new(
                rows.iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect(),
            ),
            Err(e) => {
                tracing::debug!("flags of tenant {tenant} not read ({e}); defaults apply");
                return None;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(tenant.to_owned(), (Instant::now(), values.clone()));
        }
        Some(values)
    }
}
