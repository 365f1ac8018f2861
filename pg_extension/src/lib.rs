//! The `barecount` Postgres extension: a thin SQL layer over `barecount-core`.
//!
//! Catalog objects are in `sql/catalog.sql`; each module here holds the functions of one area.

use pgrx::prelude::*;

mod access;
mod actions;
mod calendars;
mod connectors;
mod contracts;
mod errors;
mod evidence;
mod evolution;
mod gateway;
mod govern;
mod ingest;
mod jsonarg;
mod kpis;
mod ledger;
mod lifecycle;
mod lineage;
mod models;
mod obligations;
mod periods;
mod pipelines;
mod privilege;
mod publish;
mod readonly;
mod replay;
mod schemas;
mod series;
mod settings;
mod staging;
mod subxact;
mod tenant;
mod usersql;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!(
    "../sql/ledger.sql",
    name = "ledger",
    requires = [
        "catalog",
        ledger::_ledger_seq,
        ledger::_ledger_field,
        ledger::_ledger_at,
        ledger::_ledger_inputs
    ]
);
extension_sql_file!(
    "../sql/tenancy.sql",
    name = "tenancy",
    requires = ["ledger", privilege::_outer_role]
);
extension_sql_file!(
    "../sql/evidence.sql",
    name = "evidence",
    requires = ["tenancy"]
);
extension_sql_file!(
    "../sql/schemas.sql",
    name = "schemas",
    requires = ["tenancy"]
);
extension_sql_file!(
    "../sql/pipelines.sql",
    name = "pipelines",
    requires = ["evidence"]
);
extension_sql_file!(
    "../sql/actions.sql",
    name = "actions",
    requires = ["pipelines", actions::_playbooks_fire]
);
// 0.2.0's additions: the same file is the 0.1.0 -> 0.2.0 update script (cargo pgrx install
// copies sql/barecount--*--*.sql), so a fresh install and an upgraded one share one source.
extension_sql_file!(
    "../sql/barecount--0.1.0--0.2.0.sql",
    name = "v0_2_0",
    requires = [
        "actions",
        "schemas",
        ledger::_ledger_append,
        series::kpi_forecast
    ]
);
extension_sql_file!("../sql/functions.sql", name = "functions", finalize);

/// Called when the library loads: registers BareCount's settings.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // A Rust backtrace is for the server log at most, never for a client: with RUST_BACKTRACE
    // in the server's environment, pgrx would put one into the DETAIL of every error it passes
    // on. RUST_LIB_BACKTRACE takes precedence for std::backtrace::Backtrace::capture, and no
    // backtrace has been captured in this process before its library is loaded.
    // (_PG_init runs on the backend's only thread, so changing the environment is sound.)
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    settings::init();
}

// Parallel safety: a constant.
/// BareCount extension version.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    barecount_core::VERSION
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
