//! The governance family: policies (and, in SQL, flags, master data and the tenant lifecycle:
//! sql/barecount--0.1.0--0.2.0.sql).

pub mod policy;
