//! What `publish` is given as its source: a query, or the name of a table or view.

/// The kinds of source text `publish` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// A query (SELECT, WITH, VALUES or TABLE), trimmed, without a trailing semicolon.
    Query(&'a str),
    /// Anything else is taken as a relation name, to be resolved by the database.
    Relation(&'a str),
    /// Only whitespace.
    Empty,
}

pub fn classify(source: &str) -> Source<'_> {
    let trimmed = source.trim();
    if trimmed.is_empty() {
        return Source::Empty;
    }
    let head = trimmed.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let starts_with_keyword = ["select", "with", "values", "table"].iter().any(|k| {
        head.get(..k.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(k))
            && head[k.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_')
    });
    if starts_with_keyword {
        Source::Query(trimmed.trim_end_matches(|c: char| c == ';' || c.is_whitespace()))
    } else {
        Source::Relation(trimmed)
    }
}

/// Relations a query reads, from its plan (`EXPLAIN (VERBOSE, FORMAT JSON)` output): each
/// scan node's schema and relation name, in plan order, without duplicates. Views are already
/// expanded by the planner, so these are the tables the rows come from. No SQL is parsed.
pub fn relations_in_plan(plan: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                if let (
                    Some(serde_json::Value::String(schema)),
                    Some(serde_json::Value::String(rel)),
                ) = (map.get("Schema"), map.get("Relation Name"))
                {
                    let pair = (schema.clone(), rel.clone());
                    if !out.contains(&pair) {
                        out.push(pair);
                    }
                }
                for child in map.values() {
                    walk(child, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(plan, &mut out);
    out
}

/// The lineage name of a relation: `published.<ds>__v<N>` is the version `published.<ds>@<N>`;
/// system catalogs are not lineage; everything else is `schema.relation`.
pub fn lineage_ref(schema: &str, relation: &str) -> Option<String> {
    if schema == "pg_catalog" || schema == "information_schema" || schema.starts_with("pg_temp") {
        return None;
    }
    if matches!(
        crate::layer::layer_of(schema),
        Some((crate::layer::Layer::Published, _))
    ) {
        if let Some((ds, v)) = relation.rsplit_once("__v") {
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!("{schema}.{ds}@{v}"));
            }
        }
    }
    Some(format!("{schema}.{relation}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_queries_from_relations() {
        assert_eq!(classify("SELECT 1;"), Source::Query("SELECT 1"));
        assert_eq!(
            classify("  with x as (select 1) select * from x"),
            Source::Query("with x as (select 1) select * from x")
        );
        assert_eq!(classify("(select 1)"), Source::Query("(select 1)"));
        assert_eq!(classify("VALUES (1)"), Source::Query("VALUES (1)"));
        assert_eq!(
            classify("kpi.daily_sales"),
            Source::Relation("kpi.daily_sales")
        );
        assert_eq!(classify("selections"), Source::Relation("selections"));
        assert_eq!(classify("tablex"), Source::Relation("tablex"));
        assert_eq!(classify("   "), Source::Empty);
    }

    #[test]
    fn finds_scanned_relations_in_a_plan() {
        let plan = serde_json::json!([{"Plan": {"Node Type": "Hash Join", "Plans": [
            {"Node Type": "Seq Scan", "Schema": "raw", "Relation Name": "orders", "Alias": "o"},
            {"Node Type": "Hash", "Plans": [{"Node Type": "Seq Scan", "Schema": "published", "Relation Name": "sales__v2"}]},
            {"Node Type": "Seq Scan", "Schema": "raw", "Relation Name": "orders", "Alias": "o2"}]}}]);
        let rels = relations_in_plan(&plan);
        assert_eq!(
            rels,
            vec![
                ("raw".into(), "orders".into()),
                ("published".into(), "sales__v2".into())
            ]
        );
        assert_eq!(
            lineage_ref("published", "sales__v2").as_deref(),
            Some("published.sales@2")
        );
        assert_eq!(lineage_ref("raw", "orders").as_deref(), Some("raw.orders"));
        assert_eq!(lineage_ref("pg_catalog", "pg_class"), None);
    }
}
