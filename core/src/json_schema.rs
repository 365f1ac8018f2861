//! General JSON Schema (draft 2020-12 by default) validation with locally registered resources:
//! `$ref`s to other URIs resolve only against resources given here, never over the network.

use crate::contract::{collect_errors, RowError};
use serde_json::Value;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid JSON Schema: {0}")]
pub struct SchemaError(pub String);

/// Resolves `$ref`s from a fixed map of URI (without fragment) to schema.
struct LocalResources(HashMap<String, Value>);

impl jsonschema::Retrieve for LocalResources {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str().split('#').next().unwrap_or_default();
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{key} is not a registered schema resource").into())
    }
}

/// A compiled schema.
pub struct SchemaValidator {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaValidator")
    }
}

impl SchemaValidator {
    /// Compiles `schema`; a schema without `$schema` is read as draft 2020-12. `format` is an
    /// annotation, as the 2020-12 specification says (contracts assert it; see
    /// `contract::RowValidator`).
    pub fn new(schema: &Value, resources: HashMap<String, Value>) -> Result<Self, SchemaError> {
        let mut options = jsonschema::options().with_retriever(LocalResources(resources));
        // Forcing a draft would override `$schema`, and with it a custom meta-schema's
        // vocabularies; so only schemas that do not say are read as 2020-12.
        if schema.get("$schema").is_none() {
            options = options.with_draft(jsonschema::Draft::Draft202012);
        }
        let validator = options
            .build(schema)
            .map_err(|e| SchemaError(e.to_string()))?;
        Ok(SchemaValidator { validator })
    }

    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    pub fn errors(&self, instance: &Value) -> Vec<RowError> {
        collect_errors(&self.validator, instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_beyond_double_precision_compare_exactly() {
        // 2^53 + 1 is not representable as a double; compared as doubles it would equal 2^53
        let v = SchemaValidator::new(
            &json!({"maximum": 9_007_199_254_740_992_u64}),
            HashMap::new(),
        )
        .unwrap();
        let over: Value = serde_json::from_str("9007199254740993").unwrap();
        let at: Value = serde_json::from_str("9007199254740992").unwrap();
        assert!(!v.is_valid(&over));
        assert!(v.is_valid(&at));
        let v = SchemaValidator::new(
            &json!({"minimum": -9_223_372_036_854_775_807_i64}),
            HashMap::new(),
        )
        .unwrap();
        assert!(!v.is_valid(&json!(i64::MIN)));
        assert!(v.is_valid(&json!(i64::MIN + 1)));
        let v = SchemaValidator::new(
            &json!({"const": 18_446_744_073_709_551_615_u64}),
            HashMap::new(),
        )
        .unwrap();
        assert!(!v.is_valid(&json!(18_446_744_073_709_551_614_u64)));
    }

    #[test]
    fn validates_with_local_refs_only() {
        let res = HashMap::from([(
            "http://localhost:1234/integer.json".to_owned(),
            json!({"type": "integer"}),
        )]);
        let v = SchemaValidator::new(&json!({"$ref": "http://localhost:1234/integer.json"}), res)
            .unwrap();
        assert!(v.is_valid(&json!(3)));
        assert!(!v.is_valid(&json!("x")));
        assert_eq!(v.errors(&json!("x"))[0].keyword, "type");
        let missing = SchemaValidator::new(
            &json!({"$ref": "http://example.com/nope.json"}),
            HashMap::new(),
        );
        assert!(missing.is_err());
        assert!(SchemaValidator::new(&json!({"type": 12}), HashMap::new()).is_err());
    }

    #[test]
    fn format_is_an_annotation() {
        let v = SchemaValidator::new(&json!({"format": "date"}), HashMap::new()).unwrap();
        assert!(v.is_valid(&json!("not a date")));
    }
}
