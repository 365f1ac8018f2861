//! Names users give to datasets, contracts and columns, checked before they reach SQL.

use thiserror::Error;

/// Longest identifier Postgres keeps without truncating (NAMEDATALEN - 1).
pub const MAX_IDENT_LEN: usize = 63;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentError {
    #[error("{what} name must not be empty")]
    Empty { what: &'static str },
    #[error("{what} name \"{name}\" is longer than {MAX_IDENT_LEN} bytes")]
    TooLong { what: &'static str, name: String },
    #[error("{what} name \"{name}\" must start with a lower-case letter and contain only a-z, 0-9 and _")]
    BadCharacters { what: &'static str, name: String },
    #[error("{what} name \"{name}\" must not contain \"__\" (reserved for version suffixes)")]
    ReservedSeparator { what: &'static str, name: String },
}

/// Checks a dataset (or contract, or table) name: a lower-case SQL identifier that needs no
/// quoting, leaves room for a `__v<N>` version suffix and contains no `__` itself.
pub fn check_dataset_name(what: &'static str, name: &str) -> Result<(), IdentError> {
    if name.is_empty() {
        return Err(IdentError::Empty { what });
    }
    // room for "__v" + up to 9 digits
    if name.len() > MAX_IDENT_LEN - 12 {
        return Err(IdentError::TooLong {
            what,
            name: name.to_owned(),
        });
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(IdentError::BadCharacters {
            what,
            name: name.to_owned(),
        });
    }
    if name.contains("__") {
        return Err(IdentError::ReservedSeparator {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Quotes an identifier for SQL text, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a dotted relation name (`schema.table`) part by part.
pub fn quote_qualified(relation: &str) -> String {
    relation
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// Quotes a string literal for SQL text, doubling embedded quotes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(check_dataset_name("dataset", "sales_by_region"), Ok(()));
        assert_eq!(check_dataset_name("dataset", "a1"), Ok(()));
    }

    #[test]
    fn refuses_bad_names() {
        assert!(matches!(
            check_dataset_name("dataset", ""),
            Err(IdentError::Empty { .. })
        ));
        assert!(matches!(
            check_dataset_name("dataset", "Sales"),
            Err(IdentError::BadCharacters { .. })
        ));
        assert!(matches!(
            check_dataset_name("dataset", "1abc"),
            Err(IdentError::BadCharacters { .. })
        ));
        assert!(matches!(
            check_dataset_name("dataset", "a;drop"),
            Err(IdentError::BadCharacters { .. })
        ));
        assert!(matches!(
            check_dataset_name("dataset", "a__v1"),
            Err(IdentError::ReservedSeparator { .. })
        ));
        let long = "a".repeat(60);
        assert!(matches!(
            check_dataset_name("dataset", &long),
            Err(IdentError::TooLong { .. })
        ));
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
