//! barecount-flight: an Arrow Flight SQL server over BareCount's published datasets.
//!
//! Layers: `catalog`/`store`/`query` hold the data logic (what a tenant may read, loading
//! versions into Arrow, SQL in DataFusion); `sql_service` speaks Flight SQL; `flight_service`
//! is the tonic service (plain Flight paths, delegation); `app` builds and runs it.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod client;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod export;
pub mod exporter;
pub mod flight_service;
pub mod loader;
pub mod metrics;
pub mod pgcopy;
pub mod pgtls;
pub mod prepared;
pub mod query;
pub mod session_options;
pub mod sql_info;
pub mod sql_service;
pub mod state;
pub mod store;
pub mod ticket;
pub mod types;
pub mod xdbc;

pub use app::Application;
pub use config::Config;
