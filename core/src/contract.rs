//! Data contracts in the shape of the Open Data Contract Standard (ODCS) v3.
//!
//! A contract is YAML or JSON text. [`Contract::parse`] reads it, keeps the document verbatim,
//! and compiles every schema object into a JSON Schema 2020-12 row schema. Fields BareCount
//! does not interpret are kept in the document and listed by [`Contract::unsupported_fields`].

use crate::ident::{check_dataset_name, IdentError};
use crate::jsonb::{JsonbError, Node};
use crate::version::{SemVer, VersionError};
use serde_json::{json, Map, Value};
use thiserror::Error;

/// Top-level ODCS fields BareCount reads.
const SUPPORTED_TOP_LEVEL: &[&str] = &[
    "apiVersion",
    "kind",
    "id",
    "name",
    "version",
    "status",
    "schema",
    "description",
    "slaProperties",
];

/// Property fields BareCount reads.
const SUPPORTED_PROPERTY: &[&str] = &[
    "name",
    "logicalType",
    "physicalType",
    "required",
    "unique",
    "primaryKey",
    "primaryKeyPosition",
    "classification",
    "description",
    "logicalTypeOptions",
    "quality",
    "examples",
];

#[derive(Debug, Error, PartialEq)]
pub enum ContractError {
    #[error("contract is neither valid YAML nor JSON: {0}")]
    Syntax(String),
    #[error("contract must be a mapping (YAML) or object (JSON) at the top level")]
    NotAnObject,
    #[error("contract field \"{0}\" is missing")]
    MissingField(&'static str),
    #[error("contract field \"{field}\" must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("contract \"kind\" must be \"DataContract\", found \"{0}\"")]
    WrongKind(String),
    #[error("contract version: {0}")]
    Version(#[from] VersionError),
    #[error("{0}")]
    Name(#[from] IdentError),
    #[error("property \"{property}\" of schema \"{schema}\" has unsupported logicalType \"{logical_type}\" (supported: string, integer, number, boolean, date, timestamp, object, array)")]
    UnsupportedLogicalType {
        schema: String,
        property: String,
        logical_type: String,
    },
    #[error("schema \"{0}\" is declared twice in the contract")]
    DuplicateSchema(String),
    #[error("property \"{property}\" is declared twice in schema \"{schema}\"")]
    DuplicateProperty { schema: String, property: String },
    #[error("{0}")]
    Quality(#[from] crate::quality::RuleError),
    #[error("compiled row schema for \"{schema}\" is not valid JSON Schema: {message}")]
    InvalidRowSchema { schema: String, message: String },
}

/// One schema object of a contract: a dataset whose rows enter `raw.<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaObject {
    pub name: String,
    /// JSON Schema 2020-12 for one row.
    pub row_schema: Value,
    /// Property names that form the primary key, in order.
    pub primary_key: Vec<String>,
    /// Quality rules, kept as written; evaluated by a later stage.
    pub quality: Vec<Value>,
}

/// A parsed and compiled contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub id: String,
    pub name: String,
    pub version: SemVer,
    pub status: String,
    /// The whole document as JSON, verbatim (YAML converted).
    pub document: Value,
    pub schemas: Vec<SchemaObject>,
}

fn field_str<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ContractError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(ContractError::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ContractError::WrongType {
            field: field.to_owned(),
            expected: "a string",
        }),
    }
}

impl Contract {
    /// Parses YAML or JSON contract text and compiles its schema objects.
    pub fn parse(text: &str) -> Result<Self, ContractError> {
        let document: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                serde_norway::from_str(text).map_err(|e| ContractError::Syntax(e.to_string()))?
            }
        };
        Self::from_document(document)
    }

    /// Compiles an already-parsed contract document.
    pub fn from_document(document: Value) -> Result<Self, ContractError> {
        let obj = document.as_object().ok_or(ContractError::NotAnObject)?;
        let kind = field_str(obj, "kind")?;
        if kind != "DataContract" {
            return Err(ContractError::WrongKind(kind.to_owned()));
        }
        field_str(obj, "apiVersion")?;
        let id = field_str(obj, "id")?.to_owned();
        let name = match obj.get("name") {
            Some(Value::String(n)) => n.clone(),
            None | Some(Value::Null) => id.clone(),
            Some(_) => {
                return Err(ContractError::WrongType {
                    field: "name".into(),
                    expected: "a string",
                })
            }
        };
        check_dataset_name("contract", &name)?;
        let version = SemVer::parse(field_str(obj, "version")?)?;
        let status = match obj.get("status") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => "active".to_owned(),
            Some(_) => {
                return Err(ContractError::WrongType {
                    field: "status".into(),
                    expected: "a string",
                })
            }
        };
        let schema_list = match obj.get("schema") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                return Err(ContractError::MissingField("schema"))
            }
            Some(_) => {
                return Err(ContractError::WrongType {
                    field: "schema".into(),
                    expected: "a list of schema objects",
                })
            }
        };
        let mut schemas: Vec<SchemaObject> = Vec::with_capacity(schema_list.len());
        for (i, s) in schema_list.iter().enumerate() {
            let compiled = compile_schema_object(i, s)?;
            if schemas.iter().any(|o| o.name == compiled.name) {
                return Err(ContractError::DuplicateSchema(compiled.name));
            }
            schemas.push(compiled);
        }
        Ok(Contract {
            id,
            name,
            version,
            status,
            document,
            schemas,
        })
    }

    /// Document paths BareCount keeps but does not interpret (e.g. `team`, `schema[0].tags`).
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(obj) = self.document.as_object() {
            for key in obj.keys() {
                if !SUPPORTED_TOP_LEVEL.contains(&key.as_str()) {
                    out.push(key.clone());
                }
            }
            if let Some(Value::Array(schemas)) = obj.get("schema") {
                for (i, s) in schemas.iter().enumerate() {
                    let Some(props) = s.get("properties").and_then(Value::as_array) else {
                        continue;
                    };
                    for (j, p) in props.iter().enumerate() {
                        if let Some(p) = p.as_object() {
                            for key in p.keys() {
                                if !SUPPORTED_PROPERTY.contains(&key.as_str()) {
                                    out.push(format!("schema[{i}].properties[{j}].{key}"));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The schema object named `dataset`, if the contract declares it.
    pub fn schema(&self, dataset: &str) -> Option<&SchemaObject> {
        self.schemas.iter().find(|s| s.name == dataset)
    }
}

fn compile_schema_object(index: usize, s: &Value) -> Result<SchemaObject, ContractError> {
    let obj = s.as_object().ok_or_else(|| ContractError::WrongType {
        field: format!("schema[{index}]"),
        expected: "an object",
    })?;
    let name = match obj.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => {
            return Err(ContractError::WrongType {
                field: format!("schema[{index}].name"),
                expected: "a string",
            })
        }
    };
    check_dataset_name("dataset", &name)?;
    let props = match obj.get("properties") {
        Some(Value::Array(p)) => p.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => {
            return Err(ContractError::WrongType {
                field: format!("schema[{index}].properties"),
                expected: "a list of properties",
            })
        }
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut pk: Vec<(i64, String)> = Vec::new();
    for (j, p) in props.iter().enumerate() {
        let field = |f: &str| format!("schema[{index}].properties[{j}].{f}");
        let p = p.as_object().ok_or_else(|| ContractError::WrongType {
            field: format!("schema[{index}].properties[{j}]"),
            expected: "an object",
        })?;
        let pname = match p.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => {
                return Err(ContractError::WrongType {
                    field: field("name"),
                    expected: "a non-empty string",
                })
            }
        };
        if properties.contains_key(&pname) {
            return Err(ContractError::DuplicateProperty {
                schema: name.clone(),
                property: pname,
            });
        }
        let logical = match p.get("logicalType") {
            Some(Value::String(t)) => t.as_str(),
            None | Some(Value::Null) => "string",
            Some(_) => {
                return Err(ContractError::WrongType {
                    field: field("logicalType"),
                    expected: "a string",
                })
            }
        };
        let is_required = matches!(p.get("required"), Some(Value::Bool(true)));
        let is_pk = matches!(p.get("primaryKey"), Some(Value::Bool(true)));
        let mut prop_schema = match logical {
            "string" => json!({"type": "string"}),
            "integer" => json!({"type": "integer"}),
            "number" => json!({"type": "number"}),
            "boolean" => json!({"type": "boolean"}),
            "date" => json!({"type": "string", "format": "date"}),
            "timestamp" => json!({"type": "string", "format": "date-time"}),
            "object" => json!({"type": "object"}),
            "array" => json!({"type": "array"}),
            other => {
                return Err(ContractError::UnsupportedLogicalType {
                    schema: name.clone(),
                    property: pname,
                    logical_type: other.to_owned(),
                })
            }
        };
        if let Some(Value::Object(opts)) = p.get("logicalTypeOptions") {
            for key in [
                "minLength",
                "maxLength",
                "pattern",
                "minimum",
                "maximum",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "multipleOf",
                "enum",
                "minItems",
                "maxItems",
                "format",
            ] {
                if let Some(v) = opts.get(key) {
                    prop_schema[key] = v.clone();
                }
            }
        }
        if is_required || is_pk {
            required.push(Value::String(pname.clone()));
        } else {
            // optional properties may be absent or null
            prop_schema = json!({"anyOf": [prop_schema, {"type": "null"}]});
        }
        if is_pk {
            let pos = p
                .get("primaryKeyPosition")
                .and_then(Value::as_i64)
                .unwrap_or(j as i64);
            pk.push((pos, pname.clone()));
        }
        properties.insert(pname, prop_schema);
    }
    pk.sort();
    // Closed unless the schema object says `additionalProperties: true`: a row with an
    // undeclared property fails its contract (see compat.rs for what this means for evolution).
    let additional = match obj.get("additionalProperties") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ContractError::WrongType {
                field: format!("schema[{index}].additionalProperties"),
                expected: "true or false",
            })
        }
    };
    let row_schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": name,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": additional,
    });
    let quality = match obj.get("quality") {
        Some(Value::Array(q)) => q.clone(),
        _ => Vec::new(),
    };
    crate::quality::parse(&name, &quality)?;
    // make sure the compiled schema itself compiles
    crate::contract::RowValidator::new(&name, &row_schema)?;
    Ok(SchemaObject {
        name,
        row_schema,
        primary_key: pk.into_iter().map(|(_, n)| n).collect(),
        quality,
    })
}

/// One reason a row does not satisfy its row schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// JSON pointer into the row, e.g. `/amount`; empty for the row itself.
    pub instance_path: String,
    /// The JSON Schema keyword that failed, e.g. `required` or `type`.
    pub keyword: String,
    pub message: String,
}

/// Caps on the error text kept for quarantined rows, so a bad feed cannot fill the disk.
#[derive(Debug, Clone)]
pub struct ErrorBudget {
    per_row: usize,
    bytes_left: usize,
}

impl ErrorBudget {
    pub fn new(per_row: usize, bytes_per_batch: usize) -> Self {
        ErrorBudget {
            per_row: per_row.max(1),
            bytes_left: bytes_per_batch,
        }
    }

    /// The errors to keep for one row: at most `per_row` of them (plus one `_truncated` note),
    /// or only the note once the batch's byte budget is spent.
    pub fn admit(&mut self, mut errors: Vec<RowError>) -> Vec<RowError> {
        if errors.len() > self.per_row {
            let extra = errors.len() - self.per_row;
            errors.truncate(self.per_row);
            errors.push(RowError {
                instance_path: String::new(),
                keyword: "_truncated".into(),
                message: format!(
                    "{extra} more error(s) not kept (barecount.max_errors_per_row = {})",
                    self.per_row
                ),
            });
        }
        let size: usize = errors
            .iter()
            .map(|e| e.instance_path.len() + e.keyword.len() + e.message.len() + 48)
            .sum();
        if size > self.bytes_left {
            self.bytes_left = 0;
            return vec![RowError {
                instance_path: String::new(),
                keyword: "_truncated".into(),
                message: format!(
                    "{} error(s) not kept: the batch reached barecount.max_error_bytes_per_batch",
                    errors.len()
                ),
            }];
        }
        self.bytes_left -= size;
        errors
    }
}

/// A compiled row schema, ready to validate many rows: as `serde_json` values, or in place
/// over Postgres's on-disk jsonb (the same schema compiled twice, with the same options).
pub struct RowValidator {
    validator: jsonschema::Validator,
    binary: jsonschema::Validator<jsonschema::json::Jsonb>,
}

impl std::fmt::Debug for RowValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowValidator")
    }
}

impl RowValidator {
    /// Compiles a JSON Schema 2020-12 document; formats (`date`, `date-time`, …) are asserted.
    pub fn new(schema_name: &str, schema: &Value) -> Result<Self, ContractError> {
        let invalid = |e: jsonschema::ValidationError<'_>| ContractError::InvalidRowSchema {
            schema: schema_name.to_owned(),
            message: e.to_string(),
        };
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(schema)
            .map_err(invalid)?;
        let binary = jsonschema::options_for::<jsonschema::json::Jsonb>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(schema)
            .map_err(invalid)?;
        Ok(RowValidator { validator, binary })
    }

    pub fn is_valid(&self, row: &Value) -> bool {
        self.validator.is_valid(row)
    }

    /// Every error in the row, in the validator's order.
    pub fn errors(&self, row: &Value) -> Vec<RowError> {
        collect_errors(&self.validator, row)
    }

    /// [`RowValidator::is_valid`] over a row read in place from Postgres's jsonb. The row must
    /// have passed [`Node::check`] (numbers within double precision, nesting within 127
    /// levels), as the text path requires. Numbers compare as their nearest doubles, as in the
    /// text path (jsonschema's exact decimals need its `arbitrary-precision` feature, not enabled).
    pub fn is_valid_jsonb(&self, row: Node<'_>) -> Result<bool, JsonbError> {
        match row {
            Node::Object(c) | Node::Array(c) => Ok(self
                .binary
                .is_valid(jsonschema::json::Jsonb::root(c.bytes()))),
            // a scalar is never a row; answered through its value (no container to read)
            scalar => Ok(self.validator.is_valid(&scalar.to_value()?)),
        }
    }

    /// [`RowValidator::errors`] over a row read in place; a valid row costs one validation.
    pub fn errors_jsonb(&self, row: Node<'_>) -> Result<Vec<RowError>, JsonbError> {
        if self.is_valid_jsonb(row)? {
            return Ok(Vec::new());
        }
        match row {
            Node::Object(c) | Node::Array(c) => Ok(in_report_order(
                self.binary
                    .iter_errors(jsonschema::json::Jsonb::root(c.bytes()))
                    .map(row_error)
                    .collect(),
            )),
            scalar => Ok(self.errors(&scalar.to_value()?)),
        }
    }
}

fn row_error(e: jsonschema::ValidationError<'_>) -> RowError {
    RowError {
        instance_path: e.instance_path().as_str().to_owned(),
        keyword: e.kind().keyword().to_owned(),
        message: e.to_string(),
    }
}

/// Every error of `instance` against a compiled schema, as BareCount reports them.
pub(crate) fn collect_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<RowError> {
    in_report_order(validator.iter_errors(instance).map(row_error).collect())
}

/// Errors ordered by where they are in the row (stable: one place keeps the schema's order), so
/// a row reports the same list whether read as text or in place (the two walk an object's
/// members in different orders).
fn in_report_order(mut errors: Vec<RowError>) -> Vec<RowError> {
    errors.sort_by(|a, b| a.instance_path.cmp(&b.instance_path));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = r#"
apiVersion: v3.0.2
kind: DataContract
id: orders
name: orders
version: 1.0.0
status: active
team: retail-data
schema:
  - name: orders
    properties:
      - name: order_id
        logicalType: string
        required: true
        primaryKey: true
      - name: order_date
        logicalType: date
        required: true
      - name: amount
        logicalType: number
        required: true
        logicalTypeOptions: { minimum: 0 }
      - name: region
        logicalType: string
        tags: [geo]
"#;

    #[test]
    fn parses_odcs_yaml() {
        let c = Contract::parse(ORDERS).unwrap();
        assert_eq!(c.name, "orders");
        assert_eq!(c.version.to_string(), "1.0.0");
        assert_eq!(c.schemas.len(), 1);
        assert_eq!(c.schemas[0].primary_key, vec!["order_id".to_owned()]);
        assert_eq!(
            c.unsupported_fields(),
            vec!["team".to_owned(), "schema[0].properties[3].tags".to_owned()]
        );
    }

    #[test]
    fn validates_rows_with_reasons() {
        let c = Contract::parse(ORDERS).unwrap();
        let v = RowValidator::new("orders", &c.schemas[0].row_schema).unwrap();
        let good =
            json!({"order_id": "A1", "order_date": "2024-03-01", "amount": 12.5, "region": null});
        assert!(v.is_valid(&good));
        assert!(v.errors(&good).is_empty());
        let bad = json!({"order_date": "2024-02-30", "amount": -1});
        let errs = v.errors(&bad);
        let kws: Vec<&str> = errs.iter().map(|e| e.keyword.as_str()).collect();
        assert!(kws.contains(&"required"), "{errs:?}");
        assert!(kws.contains(&"format"), "{errs:?}");
        assert!(kws.contains(&"minimum"), "{errs:?}");
        assert!(errs.iter().any(|e| e.instance_path == "/amount"));
    }

    #[test]
    fn json_contracts_load_too() {
        let text = r#"{"apiVersion":"v3.0.2","kind":"DataContract","id":"x","version":"0.1.0",
            "schema":[{"name":"x","properties":[{"name":"a","logicalType":"integer","required":true}]}]}"#;
        let c = Contract::parse(text).unwrap();
        assert_eq!(c.name, "x");
        let v = RowValidator::new("x", &c.schemas[0].row_schema).unwrap();
        assert!(v.is_valid(&json!({"a": 3})));
        assert!(!v.is_valid(&json!({"a": 3.5})));
    }

    #[test]
    fn refuses_bad_contracts() {
        assert!(matches!(
            Contract::parse("a: [b"),
            Err(ContractError::Syntax(_))
        ));
        assert!(matches!(
            Contract::parse("[1,2]"),
            Err(ContractError::NotAnObject)
        ));
        let no_version = "apiVersion: v3\nkind: DataContract\nid: a\nschema: [{name: a}]";
        assert!(matches!(
            Contract::parse(no_version),
            Err(ContractError::MissingField("version"))
        ));
        let bad_kind = "apiVersion: v3\nkind: Table\nid: a\nversion: 1.0.0\nschema: [{name: a}]";
        assert!(matches!(
            Contract::parse(bad_kind),
            Err(ContractError::WrongKind(_))
        ));
        let bad_type = "apiVersion: v3\nkind: DataContract\nid: a\nversion: 1.0.0\nschema: [{name: a, properties: [{name: b, logicalType: uuid}]}]";
        assert!(matches!(
            Contract::parse(bad_type),
            Err(ContractError::UnsupportedLogicalType { .. })
        ));
        let bad_name =
            "apiVersion: v3\nkind: DataContract\nid: A-B\nversion: 1.0.0\nschema: [{name: a}]";
        assert!(matches!(
            Contract::parse(bad_name),
            Err(ContractError::Name(_))
        ));
    }

    #[test]
    fn error_budget_caps_rows_and_batches() {
        let err = |i: usize| RowError {
            instance_path: format!("/p{i}"),
            keyword: "type".into(),
            message: "x".repeat(10),
        };
        let mut b = ErrorBudget::new(2, 300);
        let kept = b.admit((0..5).map(err).collect());
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[2].keyword, "_truncated");
        assert!(kept[2].message.starts_with("3 more"));
        // the first row kept ~250 bytes, so the next row finds the 300-byte budget spent
        let kept = b.admit((0..2).map(err).collect());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].keyword, "_truncated");
        let kept = b.admit(vec![err(9)]);
        assert_eq!(
            kept[0].keyword, "_truncated",
            "once spent, the budget stays spent"
        );
    }
}
