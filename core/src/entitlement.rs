//! Plan limits per tenant and the usage they are checked against.

use thiserror::Error;

/// What a plan limits. `None` as a limit means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Datasets,
    PublishedVersions,
    ExportsPerDay,
    RowsServedPerDay,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::Datasets,
        Limit::PublishedVersions,
        Limit::ExportsPerDay,
        Limit::RowsServedPerDay,
    ];

    /// The column of `barecount.entitlements` (and the key of `entitlement_set`'s JSON).
    pub fn key(self) -> &'static str {
        match self {
            Limit::Datasets => "max_datasets",
            Limit::PublishedVersions => "max_published_versions",
            Limit::ExportsPerDay => "max_exports_per_day",
            Limit::RowsServedPerDay => "max_rows_served_per_day",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Limit::Datasets => "datasets",
            Limit::PublishedVersions => "published versions (not retired)",
            Limit::ExportsPerDay => "exports today",
            Limit::RowsServedPerDay => "rows served today",
        }
    }

    pub fn from_key(key: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.key() == key)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("tenant \"{tenant}\" has reached its plan limit of {max} {noun}: {used} used, {adding} more requested", noun = limit.noun())]
pub struct Exceeded {
    pub tenant: String,
    pub limit: Limit,
    pub max: i64,
    pub used: i64,
    pub adding: i64,
}

/// Refuses when `used + adding` would pass `max`.
pub fn check(
    tenant: &str,
    limit: Limit,
    max: Option<i64>,
    used: i64,
    adding: i64,
) -> Result<(), Exceeded> {
    match max {
        Some(max) if used.saturating_add(adding) > max => Err(Exceeded {
            tenant: tenant.to_owned(),
            limit,
            max,
            used,
            adding,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_past_the_max_only() {
        assert!(check("a", Limit::Datasets, None, 1_000, 1).is_ok());
        assert!(check("a", Limit::Datasets, Some(2), 1, 1).is_ok());
        let e = check("a", Limit::Datasets, Some(2), 2, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tenant \"a\" has reached its plan limit of 2 datasets: 2 used, 1 more requested"
        );
        assert!(check("a", Limit::RowsServedPerDay, Some(100), 60, 41).is_err());
        assert_eq!(
            Limit::from_key("max_exports_per_day"),
            Some(Limit::ExportsPerDay)
        );
        assert_eq!(Limit::from_key("max_cats"), None);
    }
}
