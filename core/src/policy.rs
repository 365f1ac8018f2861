//! Policies: Cedar (a policy language with a formal semantics and a validator) over BareCount's
//! entities and operations. A tenant's policies are checked against [`SCHEMA`] when they are
//! registered, and decide where the operations happen (ingest, publish, export, read over
//! Flight, action delivery).
//!
//! The model is a deny-list with obligations: a tenant without policies allows everything, as
//! before; with policies, an operation is allowed unless a `forbid` policy holds (its `@reason`
//! annotation explains the denial), and every `permit` policy that holds adds the obligations
//! its `@obligation` annotation names (comma-separated). Formally, the tenant's policies are
//! evaluated together with one implicit `permit (principal, action, resource);`.

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, EntityUid, Policy, PolicyId,
    PolicySet, Request as CedarRequest, Schema, ValidationMode, Validator,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::str::FromStr;
use thiserror::Error;

/// What policies may refer to. Principals are a tenant's roles (a login role, or `token:<id>`),
/// resources its datasets (and delivery endpoints), both children of their tenant.
pub const SCHEMA: &str = r#"
namespace BareCount {
  entity Tenant;
  // a login role or an API token; name: the role's name or token:<id> (as a dataset's owners
  // name them); roles: the BareCount roles it holds (reader, engineer, publisher, admin), or a
  // token's scopes
  entity Role in [Tenant] { name: String, roles: Set<String> };
  // a dataset: tags from its contract and from barecount.dataset_tags_set; layer raw,
  // published; contract: the governing contract's id, and contract_version, domain and status
  // from it ("" without one); owners: the contract's team (names, members' usernames) and the
  // login role that published the latest version
  entity Dataset in [Tenant] {
    tags: Set<String>, layer: String, contract: String, contract_version: String,
    domain: String, status: String, owners: Set<String>
  };
  // where an action delivers: kind webhook, sql, notify, export; host for webhooks
  entity Endpoint in [Tenant] { kind: String, host: String };
  type Context = {
    now: Long,         // Unix seconds, UTC
    hour: Long,        // 0-23, UTC
    weekday: Long,     // 1 Monday .. 7 Sunday, UTC
    rows: Long,        // rows the operation moves (0 when unknown)
    scopes: Set<String>,
    channel: String,   // sql, flight, web, worker
    format: String     // export format, or ""
  };
  action ingest, publish, export, read appliesTo {
    principal: [Role], resource: [Dataset], context: Context
  };
  action deliver appliesTo { principal: [Role], resource: [Endpoint], context: Context };
}
"#;

/// The operations policies decide.
pub const ACTIONS: [&str; 5] = ["ingest", "publish", "export", "read", "deliver"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The text is not Cedar.
    #[error("{message} (at line {line}, column {column})")]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    /// Cedar, but not valid against BareCount's schema.
    #[error("{message} (at line {line}, column {column})")]
    Invalid {
        kind: Invalid,
        message: String,
        line: usize,
        column: usize,
    },
    /// Templates, duplicate ids, an empty document.
    #[error("{0}")]
    Unsupported(String),
    /// A request that does not fit the schema (an unknown action, a bad context).
    #[error("{0}")]
    Request(String),
}

/// Why a policy is not valid against the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// an attribute the entity or context does not have
    UnknownAttribute,
    /// an entity type or action the schema does not define
    UnknownName,
    /// a type error, an action applied to the wrong entities
    Type,
}

fn schema() -> &'static Schema {
    use std::sync::OnceLock;
    static SCHEMA_PARSED: OnceLock<Schema> = OnceLock::new();
    SCHEMA_PARSED.get_or_init(|| match Schema::from_cedarschema_str(SCHEMA) {
        Ok((s, _)) => s,
        // the schema is a constant, tested below
        Err(e) => unreachable!("BareCount's Cedar schema does not parse: {e}"),
    })
}

/// Line and column (1-based) of a byte offset in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn located(d: &dyn miette::Diagnostic, text: &str) -> (usize, usize) {
    d.labels()
        .and_then(|mut l| l.next())
        .map_or((1, 1), |l| position(text, l.offset()))
}

/// A tenant's policy document, parsed and validated: its policies get the ids
/// `<name>` (one statement) or `<name>#<n>` (several), or `<name>#<@id>` when annotated.
#[derive(Debug, Clone)]
pub struct Document {
    policies: Vec<Policy>,
}

impl Document {
    pub fn statements(&self) -> usize {
        self.policies.len()
    }
}

/// Parses and validates a policy document against [`SCHEMA`] (strict mode).
pub fn parse(name: &str, text: &str) -> Result<Document, PolicyError> {
    let set = PolicySet::from_str(text).map_err(|e| {
        let (line, column) = located(&e, text);
        PolicyError::Syntax {
            message: e
                .iter()
                .next()
                .map_or_else(|| e.to_string(), |first| first.to_string()),
            line,
            column,
        }
    })?;
    if set.templates().next().is_some() {
        return Err(PolicyError::Unsupported(
            "policy templates (?principal, ?resource) are not supported; write the policy for its entities".into(),
        ));
    }
    let all: Vec<&Policy> = set.policies().collect();
    if all.is_empty() {
        return Err(PolicyError::Unsupported(
            "the document holds no policy".into(),
        ));
    }
    let result = Validator::new(schema().clone()).validate(&set, ValidationMode::Strict);
    if let Some(e) = result.validation_errors().next() {
        let (line, column) = located(e, text);
        use cedar_policy::ValidationError as V;
        let kind = match e {
            V::UnsafeAttributeAccess(_) | V::UnsafeOptionalAttributeAccess(_) => {
                Invalid::UnknownAttribute
            }
            V::UnrecognizedEntityType(_) | V::UnrecognizedActionId(_) => Invalid::UnknownName,
            _ => Invalid::Type,
        };
        return Err(PolicyError::Invalid {
            kind,
            message: e.to_string(),
            line,
            column,
        });
    }
    let mut seen = BTreeSet::new();
    let mut policies = Vec::with_capacity(all.len());
    for (n, p) in all.iter().enumerate() {
        let id = match (p.annotation("id"), all.len()) {
            (Some(a), _) => format!("{name}#{a}"),
            (None, 1) => name.to_owned(),
            (None, _) => format!("{name}#{n}"),
        };
        if !seen.insert(id.clone()) {
            return Err(PolicyError::Unsupported(format!(
                "two policies of the document are named {id}"
            )));
        }
        policies.push(p.new_id(PolicyId::new(id)));
    }
    Ok(Document { policies })
}

/// The principal, the resource and what the operation carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub tenant: String,
    /// a login role or `token:<id>`
    pub principal: String,
    pub principal_roles: Vec<String>,
    pub action: String,
    /// a dataset name (or an endpoint for `deliver`)
    pub resource: String,
    /// Dataset: tags, layer, contract, contract_version, domain, status, owners (missing ones
    /// get neutral values); Endpoint: kind, host
    pub resource_attrs: Value,
    /// now, hour, weekday, rows, scopes, channel, format (missing ones get neutral values)
    pub context: Value,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// the forbid policies that held (denials), or the permit policies that held (allowals,
    /// the implicit base permit left out)
    pub policies: Vec<String>,
    /// the `@reason` of each forbid that held
    pub reasons: Vec<String>,
    /// the `@obligation`s of the permits that held, sorted, once each
    pub obligations: Vec<String>,
    /// evaluation errors (a policy that could not be evaluated is skipped, as Cedar does)
    pub errors: Vec<String>,
}

const BASE: &str = "barecount#base";

fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    EntityUid::from_json(json!({"type": format!("BareCount::{kind}"), "id": id}))
        .map_err(|e| PolicyError::Request(e.to_string()))
}

/// `given`'s fields over `neutral`'s: what a caller leaves out gets a neutral value.
fn over(mut neutral: Value, given: &Value) -> Value {
    if let (Some(all), Some(given)) = (neutral.as_object_mut(), given.as_object()) {
        for (k, v) in given {
            all.insert(k.clone(), v.clone());
        }
    }
    neutral
}

/// A dataset's attributes with neutral values for those not given.
fn dataset_defaults(attrs: &Value) -> Value {
    over(
        json!({"tags": [], "layer": "raw", "contract": "", "contract_version": "",
               "domain": "", "status": "", "owners": []}),
        attrs,
    )
}

fn with_defaults(context: &Value) -> Value {
    over(
        json!({"now": 0, "hour": 0, "weekday": 1, "rows": 0, "scopes": [], "channel": "sql", "format": ""}),
        context,
    )
}

/// Decides `request` under a tenant's policy documents.
pub fn decide(documents: &[Document], request: &Request) -> Result<Decision, PolicyError> {
    if !ACTIONS.contains(&request.action.as_str()) {
        return Err(PolicyError::Request(format!(
            "unknown action \"{}\"; policies decide {}",
            request.action,
            ACTIONS.join(", ")
        )));
    }
    let mut set = PolicySet::new();
    let base = Policy::parse(
        Some(PolicyId::new(BASE)),
        "permit (principal, action, resource);",
    )
    .map_err(|e| PolicyError::Request(e.to_string()))?;
    set.add(base)
        .map_err(|e| PolicyError::Request(e.to_string()))?;
    for p in documents.iter().flat_map(|d| d.policies.iter()) {
        set.add(p.clone())
            .map_err(|e| PolicyError::Unsupported(e.to_string()))?;
    }
    let (resource_kind, resource_attrs) = if request.action == "deliver" {
        ("Endpoint", request.resource_attrs.clone())
    } else {
        ("Dataset", dataset_defaults(&request.resource_attrs))
    };
    let tenant = json!({"type": "BareCount::Tenant", "id": request.tenant});
    let entities = json!([
        {"uid": tenant, "attrs": {}, "parents": []},
        {"uid": {"type": "BareCount::Role", "id": request.principal},
         "attrs": {"name": request.principal, "roles": request.principal_roles}, "parents": [tenant]},
        {"uid": {"type": format!("BareCount::{resource_kind}"), "id": request.resource},
         "attrs": resource_attrs, "parents": [tenant]},
    ]);
    let entities = Entities::from_json_value(entities, Some(schema()))
        .map_err(|e| PolicyError::Request(e.to_string()))?;
    let action = uid("Action", &request.action)?;
    let context =
        Context::from_json_value(with_defaults(&request.context), Some((schema(), &action)))
            .map_err(|e| PolicyError::Request(e.to_string()))?;
    let req = CedarRequest::new(
        uid("Role", &request.principal)?,
        action,
        uid(resource_kind, &request.resource)?,
        context,
        Some(schema()),
    )
    .map_err(|e| PolicyError::Request(e.to_string()))?;
    let response = Authorizer::new().is_authorized(&req, &set, &entities);
    let allow = response.decision() == CedarDecision::Allow;
    let mut policies = vec![];
    let mut reasons = vec![];
    let mut obligations = BTreeSet::new();
    for id in response.diagnostics().reason() {
        if id.to_string() == BASE {
            continue;
        }
        policies.push(id.to_string());
        let Some(p) = set.policy(id) else { continue };
        match p.effect() {
            Effect::Forbid => reasons.push(
                p.annotation("reason")
                    .map_or_else(|| format!("forbidden by {id}"), str::to_owned),
            ),
            Effect::Permit => {
                for o in p.annotation("obligation").unwrap_or_default().split(',') {
                    let o = o.trim();
                    if !o.is_empty() {
                        obligations.insert(o.to_owned());
                    }
                }
            }
        }
    }
    policies.sort();
    Ok(Decision {
        allow,
        policies,
        reasons,
        obligations: if allow {
            obligations.into_iter().collect()
        } else {
            vec![]
        },
        errors: response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(tags: &[&str], scopes: &[&str]) -> Request {
        Request {
            tenant: "acme".into(),
            principal: "token:abc".into(),
            principal_roles: vec!["read".into(), "export".into()],
            action: "export".into(),
            resource: "customers".into(),
            resource_attrs: json!({"tags": tags, "layer": "published", "contract": ""}),
            context: json!({"scopes": scopes, "channel": "flight", "format": "csv", "rows": 10}),
        }
    }

    const PII: &str = r#"
@id("pii-export")
@reason("pii datasets leave only with the pii scope")
forbid (principal, action == BareCount::Action::"export", resource)
when { resource.tags.contains("pii") && !context.scopes.contains("pii") };

@id("watermark")
@obligation("watermark, audit_copy")
permit (principal, action == BareCount::Action::"export", resource)
when { context.format == "csv" };
"#;

    #[test]
    fn the_schema_parses() {
        let _ = schema();
    }

    #[test]
    fn no_policies_allow_everything() {
        let d = decide(&[], &export(&["pii"], &[])).unwrap();
        assert!(d.allow);
        assert!(d.policies.is_empty() && d.obligations.is_empty());
    }

    #[test]
    fn a_forbid_denies_with_its_reason_and_a_permit_adds_obligations() {
        let doc = parse("exports", PII).unwrap();
        assert_eq!(doc.statements(), 2);
        let denied = decide(std::slice::from_ref(&doc), &export(&["pii"], &["read"])).unwrap();
        assert!(!denied.allow);
        assert_eq!(denied.policies, ["exports#pii-export"]);
        assert_eq!(
            denied.reasons,
            ["pii datasets leave only with the pii scope"]
        );
        assert!(denied.obligations.is_empty());
        let allowed = decide(std::slice::from_ref(&doc), &export(&["pii"], &["pii"])).unwrap();
        assert!(allowed.allow);
        assert_eq!(allowed.policies, ["exports#watermark"]);
        assert_eq!(allowed.obligations, ["audit_copy", "watermark"]);
        let plain = decide(&[doc], &export(&["finance"], &[])).unwrap();
        assert!(plain.allow);
    }

    #[test]
    fn syntax_errors_and_unknown_attributes_are_located() {
        match parse(
            "p",
            "permit (principal, action, resource)\nwhen { resource.tags.contains(\"x\") }",
        ) {
            Err(PolicyError::Syntax { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
        let text = "forbid (principal, action, resource is BareCount::Dataset)\nwhen {\n  resource.owner == \"bob\" };";
        match parse("p", text) {
            Err(PolicyError::Invalid {
                kind,
                message,
                line,
                column,
            }) => {
                assert_eq!(kind, Invalid::UnknownAttribute);
                assert!(message.contains("owner"), "{message}");
                assert_eq!((line, column), (3, 3), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(
                "p",
                "permit (principal, action == BareCount::Action::\"drop\", resource);"
            ),
            Err(PolicyError::Invalid {
                kind: Invalid::UnknownName,
                ..
            })
        ));
        assert!(matches!(
            parse(
                "p",
                "permit (principal, action, resource) when { context.rows == \"x\" };"
            ),
            Err(PolicyError::Invalid {
                kind: Invalid::Type,
                ..
            })
        ));
        assert!(matches!(
            parse("p", "permit (principal == ?principal, action, resource);"),
            Err(PolicyError::Unsupported(_))
        ));
        assert!(matches!(parse("p", "  "), Err(PolicyError::Unsupported(_))));
        assert!(matches!(
            parse("p", "@id(\"a\") permit (principal, action, resource); @id(\"a\") forbid (principal, action, resource);"),
            Err(PolicyError::Unsupported(_))
        ));
    }

    #[test]
    fn requests_outside_the_schema_are_refused() {
        let mut r = export(&[], &[]);
        r.action = "drop".into();
        assert!(matches!(decide(&[], &r), Err(PolicyError::Request(_))));
        let mut r = export(&[], &[]);
        r.context = json!({"rows": "many"});
        assert!(matches!(decide(&[], &r), Err(PolicyError::Request(_))));
    }

    #[test]
    fn time_rows_and_roles_are_there_to_decide_on() {
        let doc = parse(
            "hours",
            r#"forbid (principal, action == BareCount::Action::"publish", resource)
               when { context.hour < 6 || context.rows > 1000000 || !principal.roles.contains("publisher") };"#,
        )
        .unwrap();
        let mut r = export(&[], &[]);
        r.action = "publish".into();
        r.principal_roles = vec!["publisher".into()];
        r.context = json!({"hour": 10, "rows": 5});
        assert!(decide(std::slice::from_ref(&doc), &r).unwrap().allow);
        r.context = json!({"hour": 3, "rows": 5});
        assert!(!decide(std::slice::from_ref(&doc), &r).unwrap().allow);
        r.context = json!({"hour": 10, "rows": 5});
        r.principal_roles = vec!["engineer".into()];
        assert!(!decide(&[doc], &r).unwrap().allow);
    }

    /// A dataset's owners and its contract's attributes (domain, status, version) are there to
    /// decide on; attributes a caller leaves out are neutral ("" and empty sets).
    #[test]
    fn owners_and_contract_attributes_are_there_to_decide_on() {
        let doc = parse(
            "owned",
            r#"@reason("only its owners export a finance dataset, and nobody a retired one")
               forbid (principal, action == BareCount::Action::"export", resource)
               when { (resource.domain == "finance" && !resource.owners.contains(principal.name))
                      || resource.status == "retired" || resource.contract_version like "0.*" };"#,
        )
        .unwrap();
        let mut r = export(&[], &[]);
        r.resource_attrs = json!({"domain": "finance", "owners": ["retail-data", "alice"], "status": "active",
                                  "contract_version": "1.2.0"});
        r.principal = "alice".into();
        assert!(decide(std::slice::from_ref(&doc), &r).unwrap().allow);
        r.principal = "token:abc".into();
        let d = decide(std::slice::from_ref(&doc), &r).unwrap();
        assert!(!d.allow);
        assert_eq!(d.policies, ["owned"]);
        r.principal = "alice".into();
        r.resource_attrs["status"] = json!("retired");
        assert!(!decide(std::slice::from_ref(&doc), &r).unwrap().allow);
        r.resource_attrs["status"] = json!("active");
        r.resource_attrs["contract_version"] = json!("0.9.0");
        assert!(!decide(std::slice::from_ref(&doc), &r).unwrap().allow);
        // only tags given: the rest is neutral, so nothing here holds
        r.resource_attrs = json!({"tags": []});
        assert!(decide(&[doc], &r).unwrap().allow);
    }
}
