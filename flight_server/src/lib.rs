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
pub mod deliver;
pub mod digest;
pub mod error;
pub mod export;
pub mod exporter;
pub mod flags;
pub mod flight_service;
pub mod ingest;
pub mod loader;
pub mod metrics;
pub mod offboard;
pub mod pgcopy;
pub mod pgtls;
pub mod policy;
pub mod prepared;
pub mod query;
pub mod session_options;
pub mod sql_info;
pub mod sql_service;
pub mod state;
pub mod store;
pub mod ticket;
pub mod types;
pub mod web;
pub mod xdbc;

pub use app::Application;
pub use config::Config;

#[cfg(test)]
mod layering {
    /// The loader reads versions out of Postgres into a sink it defines; the store gives it one
    /// and knows no COPY; the query layer uses the store and hands it nothing back.
    #[test]
    fn store_loader_and_query_depend_one_way() {
        let store = include_str!("store.rs");
        let loader = include_str!("loader.rs");
        assert!(
            !loader.contains("crate::store"),
            "the loader imports the store"
        );
        assert!(
            !loader.contains("crate::query"),
            "the loader imports the query layer"
        );
        assert!(
            !store.contains("crate::query"),
            "the store imports the query layer"
        );
        for copy in ["copy_into", "copy_sql", "read_parallel", "parallel_ranges"] {
            assert!(!store.contains(copy), "the store calls the loader's {copy}");
        }
    }
}
