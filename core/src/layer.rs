//! Where each tenant's relations live. The store layers gdp, kpi and published are tenant-scoped
//! by schema: the default tenant's relations are in `gdp`, `kpi` and `published`, tenant `acme`'s
//! in `gdp_acme`, `kpi_acme` and `published_acme`. Two tenants may both own `orders` without
//! seeing or touching each other's. Raw stores (one fixed shape per dataset, rows isolated by
//! row-level security) stay shared in `raw`.

/// The tenant every database has, whose relations keep the plain layer schemas.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant id: the longest schema prefix (`published_`, 10 bytes) plus the id must fit
/// Postgres's 63-byte names.
pub const MAX_TENANT_LEN: usize = 53;

/// A store layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Raw,
    Gdp,
    Kpi,
    Published,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Raw => "raw",
            Layer::Gdp => "gdp",
            Layer::Kpi => "kpi",
            Layer::Published => "published",
        }
    }

    const ALL: [Layer; 4] = [Layer::Raw, Layer::Gdp, Layer::Kpi, Layer::Published];
}

/// Whether `t` is a valid tenant id: `[a-z][a-z0-9_]*`, at most [`MAX_TENANT_LEN`] bytes.
pub fn valid_tenant(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TENANT_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The schema holding `tenant`'s relations of `layer`.
pub fn schema_of(layer: Layer, tenant: &str) -> String {
    if layer == Layer::Raw || tenant == DEFAULT_TENANT {
        layer.name().to_owned()
    } else {
        format!("{}_{tenant}", layer.name())
    }
}

/// The layer a schema name belongs to and whose it is: `("gdp", None)` is the default tenant's
/// (or, for raw, everyone's), `gdp_acme` is `(Gdp, Some("acme"))`. Other schemas: None.
pub fn layer_of(schema: &str) -> Option<(Layer, Option<&str>)> {
    for l in Layer::ALL {
        if schema == l.name() {
            return Some((l, None));
        }
        if l == Layer::Raw {
            continue;
        }
        if let Some(t) = schema
            .strip_prefix(l.name())
            .and_then(|r| r.strip_prefix('_'))
        {
            if valid_tenant(t) && t != DEFAULT_TENANT {
                return Some((l, Some(t)));
            }
        }
    }
    None
}

/// Whether a schema is one `tenant` may keep relations of `layer` in: its own layer schema, or
/// the shared raw.
pub fn owns(schema: &str, tenant: &str) -> bool {
    match layer_of(schema) {
        Some((Layer::Raw, _)) => true,
        Some((l, _)) => schema == schema_of(l, tenant),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_schemas_of_their_own() {
        assert_eq!(schema_of(Layer::Gdp, "default"), "gdp");
        assert_eq!(schema_of(Layer::Gdp, "acme"), "gdp_acme");
        assert_eq!(schema_of(Layer::Published, "acme"), "published_acme");
        assert_eq!(schema_of(Layer::Raw, "acme"), "raw");
        assert_eq!(layer_of("kpi"), Some((Layer::Kpi, None)));
        assert_eq!(layer_of("kpi_acme"), Some((Layer::Kpi, Some("acme"))));
        assert_eq!(
            layer_of("published_big_co"),
            Some((Layer::Published, Some("big_co")))
        );
        assert_eq!(layer_of("raw_acme"), None);
        assert_eq!(layer_of("gdp_default"), None);
        assert_eq!(layer_of("gdp_"), None);
        assert_eq!(layer_of("gdp_Acme"), None);
        assert_eq!(layer_of("public"), None);
        assert!(owns("gdp_acme", "acme"));
        assert!(!owns("gdp_acme", "globex"));
        assert!(!owns("gdp", "acme"));
        assert!(owns("gdp", "default"));
        assert!(owns("raw", "acme"));
        // the longest tenant id still names a schema Postgres does not truncate
        let longest = "a".repeat(MAX_TENANT_LEN);
        assert!(valid_tenant(&longest));
        assert_eq!(schema_of(Layer::Published, &longest).len(), 63);
        assert!(!valid_tenant(&"a".repeat(MAX_TENANT_LEN + 1)));
    }
}
