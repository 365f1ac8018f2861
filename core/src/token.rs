//! Access tokens for clients that do not speak SQL (the Flight server, BI tools).
//!
//! A token reads `bct_<id>_<secret>`: `id` is 16 hex digits that name the token (safe to log),
//! `secret` 64 hex digits of randomness. The database stores only a random salt and
//! SHA-256(salt ‖ secret); the secret is shown once, at creation. A 256-bit random secret
//! cannot be guessed, so a fast hash suffices; the salt keeps equal secrets from hashing alike.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Scopes a token may carry: these operations, and data scopes `data:<name>` (lower-case
/// letters, digits, `_` and `-`, at most 32), which grant nothing by themselves and which
/// policies test (`context.scopes.contains("data:pii")`).
pub const SCOPES: &[&str] = &["read", "export", "ingest"];

fn data_scope(s: &str) -> bool {
    s.strip_prefix("data:").is_some_and(|name| {
        (1..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    })
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token scope \"{0}\" is unknown (known scopes: read, export, ingest, and data:<name> for policies)")]
    UnknownScope(String),
    #[error("a token needs at least one scope")]
    NoScopes,
    #[error("token is malformed")]
    Malformed,
}

/// The parts of a freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub id: String,
    pub salt: String,
    pub secret_hash: String,
    /// The whole token as the client presents it; shown once.
    pub token: String,
}

/// Mints a token from 8 + 32 + 16 random bytes (id, secret, salt).
pub fn mint(id: [u8; 8], secret: [u8; 32], salt: [u8; 16]) -> Minted {
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let salt = hex::encode(salt);
    let secret_hash = hash(&salt, &secret);
    Minted {
        token: format!("bct_{id}_{secret}"),
        id,
        salt,
        secret_hash,
    }
}

/// SHA-256 of salt and secret, lower-case hex.
pub fn hash(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Splits a presented token into (id, secret).
pub fn parse(token: &str) -> Result<(&str, &str), TokenError> {
    let rest = token
        .trim()
        .strip_prefix("bct_")
        .ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_of(id, 16) || !hex_of(secret, 64) {
        return Err(TokenError::Malformed);
    }
    Ok((id, secret))
}

/// Whether `secret` matches the stored salt and hash, compared in constant time.
pub fn verify(salt: &str, secret: &str, stored_hash: &str) -> bool {
    let computed = hash(salt, secret);
    computed.len() == stored_hash.len()
        && computed
            .bytes()
            .zip(stored_hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks and normalizes scopes: known, non-empty, sorted, without repeats.
pub fn check_scopes(scopes: &[String]) -> Result<Vec<String>, TokenError> {
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        let s = s.trim().to_ascii_lowercase();
        if !SCOPES.contains(&s.as_str()) && !data_scope(&s) {
            return Err(TokenError::UnknownScope(s));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err(TokenError::NoScopes);
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_parse_verify() {
        let m = mint([1; 8], [2; 32], [3; 16]);
        let (id, secret) = parse(&m.token).unwrap();
        assert_eq!(id, m.id);
        assert!(verify(&m.salt, secret, &m.secret_hash));
        assert!(!m.token.contains(&m.secret_hash));
        let other = mint([1; 8], [4; 32], [3; 16]);
        let (_, other_secret) = parse(&other.token).unwrap();
        assert!(!verify(&m.salt, other_secret, &m.secret_hash));
        // same secret, other salt: other hash
        assert_ne!(mint([1; 8], [2; 32], [5; 16]).secret_hash, m.secret_hash);
    }

    #[test]
    fn refuses_malformed_tokens() {
        for bad in [
            "",
            "bct_",
            "bct_abc_def",
            "xyz_0123456789abcdef_00",
            &format!("bct_{}_{}", "g".repeat(16), "0".repeat(64)),
        ] {
            assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(
            check_scopes(&["Read".into(), "export".into(), "read".into()]).unwrap(),
            vec!["export", "read"]
        );
        assert_eq!(check_scopes(&[]), Err(TokenError::NoScopes));
        assert_eq!(
            check_scopes(&["admin".into()]),
            Err(TokenError::UnknownScope("admin".into()))
        );
        assert_eq!(
            check_scopes(&["read".into(), "data:pii".into()]).unwrap(),
            vec!["data:pii", "read"]
        );
        for bad in ["data:", "data:PII x", "data:1x", "data:a/b", "pii"] {
            assert!(check_scopes(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
