//! Secrets at rest: envelope encryption with AES-256-GCM (RustCrypto's `aes-gcm`).
//!
//! The operator provides a keyring file of key-encryption keys (KEKs): one key per line,
//! `<id>:<base64 of 32 bytes>`, the first line the current key, `#` comments. Each tenant has a
//! data-encryption key (DEK), stored wrapped (encrypted) by a KEK; each secret is sealed by its
//! tenant's DEK. Rotating the KEK re-wraps the DEKs and leaves every secret's ciphertext as it
//! is. Sealed values are `nonce (12 bytes) || ciphertext || tag`; the additional data binds a
//! value to its tenant and row, so a ciphertext copied to another row or tenant does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum SecretError {
    #[error("keyring line {line}: {problem}")]
    BadKeyring { line: usize, problem: String },
    #[error("the keyring has no key")]
    EmptyKeyring,
    #[error("the keyring has no key \"{0}\" (the key that wrapped this data)")]
    UnknownKey(String),
    #[error("the sealed value does not open with this key (wrong key, or altered or moved data)")]
    Open,
    #[error("no random bytes: {0}")]
    Random(String),
}

pub type KeyBytes = [u8; 32];

/// The operator's key-encryption keys, the current one first.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, KeyBytes)>,
}

impl std::fmt::Debug for Keyring {
    // never print key material
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.keys.iter().map(|(i, _)| i).collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Keyring, SecretError> {
        let mut keys: Vec<(String, KeyBytes)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: &str| SecretError::BadKeyring {
                line: i + 1,
                problem: problem.into(),
            };
            let (id, b64) = line
                .split_once(':')
                .ok_or_else(|| bad("expected <id>:<base64 of 32 bytes>"))?;
            let id = id.trim();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad(
                    "the key id must be 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(bad("the key id appears twice"));
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| bad("the key is not base64"))?;
            let key: KeyBytes = bytes
                .try_into()
                .map_err(|_| bad("the key must be 32 bytes (AES-256)"))?;
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err(SecretError::EmptyKeyring);
        }
        Ok(Keyring { keys })
    }

    /// The current key: new data is wrapped with it.
    pub fn current(&self) -> (&str, &KeyBytes) {
        let (id, k) = &self.keys[0];
        (id, k)
    }

    pub fn get(&self, id: &str) -> Result<&KeyBytes, SecretError> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v)
            .ok_or_else(|| SecretError::UnknownKey(id.into()))
    }
}

/// 32 random bytes: a new DEK.
pub fn new_key() -> Result<KeyBytes, SecretError> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(k)
}

/// Encrypts `plain` under `key`, bound to `aad`.
pub fn seal(key: &KeyBytes, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecretError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| SecretError::Random(e.to_string()))?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| SecretError::Open)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts what [`seal`] made with the same key and `aad`.
pub fn open(key: &KeyBytes, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecretError> {
    if sealed.len() < 12 + 16 {
        return Err(SecretError::Open);
    }
    let (nonce, ct) = sealed.split_at(12);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| SecretError::Open)
}

/// The additional data a tenant's DEK is wrapped with.
pub fn dek_aad(tenant: &str, kek_id: &str) -> Vec<u8> {
    format!("barecount-dek\0{tenant}\0{kek_id}").into_bytes()
}

/// The additional data a secret is sealed with.
pub fn secret_aad(tenant: &str, secret_id: i64) -> Vec<u8> {
    format!("barecount-secret\0{tenant}\0{secret_id}").into_bytes()
}

/// Unwraps a tenant's DEK (wrapped by the keyring's key `kek_id`) and opens one of its secrets.
pub fn open_secret(
    ring: &Keyring,
    tenant: &str,
    kek_id: &str,
    wrapped_dek: &[u8],
    secret_id: i64,
    sealed: &[u8],
) -> Result<Vec<u8>, SecretError> {
    let dek: KeyBytes = open(ring.get(kek_id)?, wrapped_dek, &dek_aad(tenant, kek_id))?
        .try_into()
        .map_err(|_| SecretError::Open)?;
    open(&dek, sealed, &secret_aad(tenant, secret_id))
}

/// Wraps a DEK with the keyring's current key: (key id, wrapped).
pub fn wrap_dek(
    ring: &Keyring,
    tenant: &str,
    dek: &KeyBytes,
) -> Result<(String, Vec<u8>), SecretError> {
    let (id, kek) = ring.current();
    Ok((id.to_owned(), seal(kek, dek, &dek_aad(tenant, id))?))
}

/// Unwraps a DEK.
pub fn unwrap_dek(
    ring: &Keyring,
    tenant: &str,
    kek_id: &str,
    wrapped: &[u8],
) -> Result<KeyBytes, SecretError> {
    open(ring.get(kek_id)?, wrapped, &dek_aad(tenant, kek_id))?
        .try_into()
        .map_err(|_| SecretError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[(&str, u8)]) -> Keyring {
        let text: String = lines
            .iter()
            .map(|(id, b)| format!("{id}:{}\n", STANDARD.encode([*b; 32])))
            .collect();
        Keyring::parse(&format!("# operator keys\n{text}")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn secrets_open_after_the_kek_rotates_and_only_where_they_belong() {
        let old = ring(&[("k1", 1)]);
        let dek = new_key().unwrap_or_default();
        let (kid, wrapped) = wrap_dek(&old, "acme", &dek).unwrap_or_default();
        let sealed = seal(&dek, b"whsec_x", &secret_aad("acme", 7)).unwrap_or_default();
        assert_eq!(
            open_secret(&old, "acme", &kid, &wrapped, 7, &sealed),
            Ok(b"whsec_x".to_vec())
        );
        // moved to another row or tenant, it does not open
        assert_eq!(
            open_secret(&old, "acme", &kid, &wrapped, 8, &sealed),
            Err(SecretError::Open)
        );
        assert_eq!(
            open_secret(&old, "other", &kid, &wrapped, 7, &sealed),
            Err(SecretError::Open)
        );
        // rotate: a new current key; the DEK is re-wrapped, the secret's ciphertext untouched
        let new = ring(&[("k2", 2), ("k1", 1)]);
        let d = unwrap_dek(&new, "acme", &kid, &wrapped).unwrap_or_default();
        let (kid2, rewrapped) = wrap_dek(&new, "acme", &d).unwrap_or_default();
        assert_eq!(kid2, "k2");
        let only_new = ring(&[("k2", 2)]);
        assert_eq!(
            open_secret(&only_new, "acme", &kid2, &rewrapped, 7, &sealed),
            Ok(b"whsec_x".to_vec())
        );
        assert_eq!(
            open_secret(&only_new, "acme", &kid, &wrapped, 7, &sealed),
            Err(SecretError::UnknownKey("k1".into()))
        );
        // a flipped bit is caught
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(
            open_secret(&only_new, "acme", &kid2, &rewrapped, 7, &bad),
            Err(SecretError::Open)
        );
        assert!(
            !format!("{new:?}").contains("AQEB"),
            "Debug prints no key material"
        );
    }

    #[test]
    fn bad_keyrings_are_refused_with_the_line() {
        assert_eq!(
            Keyring::parse("# nothing\n").err(),
            Some(SecretError::EmptyKeyring)
        );
        assert!(matches!(
            Keyring::parse("k1 abc"),
            Err(SecretError::BadKeyring { line: 1, .. })
        ));
        assert!(matches!(
            Keyring::parse("\nk1:AAAA"),
            Err(SecretError::BadKeyring { line: 2, .. })
        ));
        let k = STANDARD.encode([0u8; 32]);
        assert!(matches!(
            Keyring::parse(&format!("a:{k}\na:{k}")),
            Err(SecretError::BadKeyring { line: 2, .. })
        ));
        assert!(matches!(
            Keyring::parse(&format!("b@d:{k}")),
            Err(SecretError::BadKeyring { line: 1, .. })
        ));
    }
}
