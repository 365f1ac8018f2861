//! BareCount core: the logic shared by the Postgres extension and the Flight server.
//!
//! Nothing here talks to Postgres. Every function is tested with plain `cargo test`.

pub mod action;
pub mod calendar;
pub mod compat;
pub mod content_hash;
pub mod contract;
pub mod dag;
pub mod entitlement;
pub mod ident;
pub mod json_schema;
pub mod jsonb;
pub mod kpi;
pub mod layer;
pub mod ledger;
pub mod lineage;
pub mod obligation;
pub mod parquet_rows;
pub mod pipeline;
pub mod policy;
pub mod quality;
pub mod scram;
pub mod secrets;
pub mod source;
pub mod timeseries;
pub mod token;
pub mod version;
pub mod webhook;

/// The BareCount version, as the extension and the server report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
