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
}
