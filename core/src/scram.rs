//! Checking a password against a Postgres SCRAM-SHA-256 verifier (`pg_authid.rolpassword`), so
//! a gateway can accept a role's own password without a second credential store.
//!
//! A verifier is `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802/7677):
//! SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations), ClientKey =
//! HMAC(SaltedPassword, "Client Key"), StoredKey = SHA-256(ClientKey). Passwords are used as
//! given; Postgres applies SASLprep, which leaves ASCII passwords unchanged, so a non-ASCII
//! password that SASLprep would normalize does not match here.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Iterations above this are refused rather than computed (Postgres' default is 4096).
pub const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScramError {
    #[error("the stored password is not a SCRAM-SHA-256 verifier (md5 and plain passwords are not accepted)")]
    NotScram,
    #[error("the stored SCRAM verifier is malformed: {0}")]
    Malformed(&'static str),
}

/// A parsed verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
}

pub fn parse(verifier: &str) -> Result<Verifier, ScramError> {
    let rest = verifier
        .strip_prefix("SCRAM-SHA-256$")
        .ok_or(ScramError::NotScram)?;
    let (params, keys) = rest
        .split_once('$')
        .ok_or(ScramError::Malformed("no keys"))?;
    let (iter, salt) = params
        .split_once(':')
        .ok_or(ScramError::Malformed("no salt"))?;
    let (stored, _server) = keys
        .split_once(':')
        .ok_or(ScramError::Malformed("no server key"))?;
    let iterations: u32 = iter
        .parse()
        .map_err(|_| ScramError::Malformed("iteration count"))?;
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(ScramError::Malformed("iteration count out of range"));
    }
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| ScramError::Malformed("salt is not base64"))?;
    let stored_key = STANDARD
        .decode(stored)
        .map_err(|_| ScramError::Malformed("stored key is not base64"))?;
    if stored_key.len() != 32 {
        return Err(ScramError::Malformed("stored key length"));
    }
    Ok(Verifier {
        iterations,
        salt,
        stored_key,
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (32 bytes), as SCRAM uses it.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

/// Whether `password` matches the verifier, compared in constant time.
pub fn verify(verifier: &str, password: &str) -> Result<bool, ScramError> {
    let v = parse(verifier)?;
    let salted = salted_password(password.as_bytes(), &v.salt, v.iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored: [u8; 32] = Sha256::digest(client_key).into();
    let diff = stored
        .iter()
        .zip(v.stored_key.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    Ok(diff == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by PostgreSQL 15: `CREATE ROLE alice LOGIN PASSWORD 'correct horse'`.
    const ALICE: &str = "SCRAM-SHA-256$4096:0ZLK+baXvNW8qei+8mcvtA==$e768APYZX5dYHe9jaw1Onm+HSLSbjuybinZXQ3sdXbY=:p+0cPoVQutVIvnftg1CBw8EOaFaaSt2FXq9Mc1ZL/W8=";

    #[test]
    fn matches_a_postgres_verifier() {
        assert_eq!(verify(ALICE, "correct horse"), Ok(true));
        assert_eq!(verify(ALICE, "correct horse "), Ok(false));
        assert_eq!(verify(ALICE, ""), Ok(false));
    }

    #[test]
    fn refuses_what_is_not_scram() {
        assert_eq!(verify("md5abcdef", "x"), Err(ScramError::NotScram));
        assert!(matches!(
            verify("SCRAM-SHA-256$0:AA==$AA==:AA==", "x"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            verify("SCRAM-SHA-256$4096:AA==$AA==:AA==", "x"),
            Err(ScramError::Malformed("stored key length"))
        ));
        assert!(matches!(
            verify("SCRAM-SHA-256$4096", "x"),
            Err(ScramError::Malformed(_))
        ));
    }
}
