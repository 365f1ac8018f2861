//! Signed, stateless credentials: Flight tickets, session tokens issued by the handshake and
//! prepared-statement handles. Any replica holding the secret can check them; each kind is
//! signed under its own domain, so one can never pass for another.
//!
//! Format: `base64url(json claims) "." hex(hmac-sha256(domain "\n" payload))`; session tokens
//! carry the prefix `bcs.` so they are told apart from BareCount API tokens (`bct_…`).

use crate::error::{FlightError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// Prefix of session tokens issued by the handshake.
pub const SESSION_PREFIX: &str = "bcs.";

/// What a ticket asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TicketQuery {
    /// A SQL query, with its bound parameters (one row, Arrow IPC, base64) if prepared.
    Sql { sql: String, params: Option<String> },
    /// Batches `[first, end)` of a published version, served straight from the store.
    Dataset {
        dataset: String,
        version: i32,
        content_hash: String,
        first_batch: usize,
        end_batch: usize,
    },
}

/// What a ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Tenant whose datasets the query may read.
    pub tenant: String,
    pub query: TicketQuery,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// What a session token carries: who logged in, for which tenant, with which scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub tenant: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub exp: u64,
}

/// A prepared statement's handle: the statement, its tenant and, once bound, its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedClaims {
    pub tenant: String,
    pub sql: String,
    pub params: Option<String>,
    pub exp: u64,
}

trait Expiring {
    fn exp(&self) -> u64;
}
impl Expiring for TicketClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}
impl Expiring for SessionClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}
impl Expiring for PreparedClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

#[derive(Clone)]
pub struct TicketSigner {
    key: Vec<u8>,
    ttl_secs: u64,
    session_ttl_secs: u64,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSigner")
            .field("ttl_secs", &self.ttl_secs)
            .field("session_ttl_secs", &self.session_ttl_secs)
            .finish_non_exhaustive()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a signed value was refused, before it is told apart by kind.
enum Refused {
    Malformed(&'static str),
    Signature,
    Expired,
}

impl TicketSigner {
    pub fn new(key: impl Into<Vec<u8>>, ttl_secs: u64, session_ttl_secs: u64) -> Self {
        TicketSigner {
            key: key.into(),
            ttl_secs,
            session_ttl_secs,
        }
    }

    fn mac(&self, domain: &str) -> Result<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .map_err(|e| FlightError::Internal(format!("signing key: {e}")))?;
        mac.update(domain.as_bytes());
        mac.update(b"\n");
        Ok(mac)
    }

    fn seal<T: Serialize>(&self, domain: &str, claims: &T) -> Result<String> {
        let json = serde_json::to_vec(claims).map_err(|e| FlightError::Internal(e.to_string()))?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac(domain)?;
        mac.update(payload.as_bytes());
        Ok(format!(
            "{payload}.{}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    fn open<T: DeserializeOwned + Expiring>(
        &self,
        domain: &str,
        sealed: &[u8],
    ) -> Result<std::result::Result<T, Refused>> {
        let Ok(text) = std::str::from_utf8(sealed) else {
            return Ok(Err(Refused::Malformed("not UTF-8")));
        };
        let Some((payload, sig)) = text.rsplit_once('.') else {
            return Ok(Err(Refused::Malformed("malformed")));
        };
        let Ok(sig) = hex::decode(sig) else {
            return Ok(Err(Refused::Malformed("malformed signature")));
        };
        let mut mac = self.mac(domain)?;
        mac.update(payload.as_bytes());
        if mac.verify_slice(&sig).is_err() {
            return Ok(Err(Refused::Signature));
        }
        let Ok(json) = URL_SAFE_NO_PAD.decode(payload) else {
            return Ok(Err(Refused::Malformed("malformed payload")));
        };
        let Ok(claims) = serde_json::from_slice::<T>(&json) else {
            return Ok(Err(Refused::Malformed("malformed claims")));
        };
        if claims.exp() < now() {
            return Ok(Err(Refused::Expired));
        }
        Ok(Ok(claims))
    }

    pub fn sign(&self, tenant: &str, query: TicketQuery) -> Result<String> {
        self.seal(
            "ticket",
            &TicketClaims {
                tenant: tenant.to_owned(),
                query,
                exp: now() + self.ttl_secs,
            },
        )
    }

    /// Signs claims as given, expiry included (for tools and tests that need a set expiry).
    pub fn sign_claims(&self, claims: &TicketClaims) -> Result<String> {
        self.seal("ticket", claims)
    }

    pub fn verify(&self, ticket: &[u8]) -> Result<TicketClaims> {
        self.open("ticket", ticket)?.map_err(|r| {
            FlightError::BadTicket(
                match r {
                    Refused::Malformed(m) => m,
                    Refused::Signature => "signature does not match",
                    Refused::Expired => "expired",
                }
                .into(),
            )
        })
    }

    /// A session token for a caller who just authenticated.
    /// How long a session token stays valid, in seconds.
    pub fn session_ttl_secs(&self) -> u64 {
        self.session_ttl_secs
    }

    pub fn session(&self, tenant: &str, subject: &str, scopes: &[String]) -> Result<String> {
        let sealed = self.seal(
            "session",
            &SessionClaims {
                tenant: tenant.to_owned(),
                subject: subject.to_owned(),
                scopes: scopes.to_vec(),
                exp: now() + self.session_ttl_secs,
            },
        )?;
        Ok(format!("{SESSION_PREFIX}{sealed}"))
    }

    pub fn verify_session(&self, token: &str) -> Result<SessionClaims> {
        let sealed = token.strip_prefix(SESSION_PREFIX).unwrap_or(token);
        self.open("session", sealed.as_bytes())?.map_err(|r| {
            FlightError::Unauthenticated(
                match r {
                    Refused::Expired => "session token expired; authenticate again",
                    _ => "invalid session token",
                }
                .into(),
            )
        })
    }

    /// A prepared-statement handle; it lives as long as a session.
    pub fn prepared(&self, tenant: &str, sql: &str, params: Option<String>) -> Result<Vec<u8>> {
        Ok(self
            .seal(
                "prepared",
                &PreparedClaims {
                    tenant: tenant.to_owned(),
                    sql: sql.to_owned(),
                    params,
                    exp: now() + self.session_ttl_secs,
                },
            )?
            .into_bytes())
    }

    pub fn verify_prepared(&self, handle: &[u8]) -> Result<PreparedClaims> {
        self.open("prepared", handle)?.map_err(|r| {
            FlightError::InvalidRequest(
                match r {
                    Refused::Expired => "prepared statement handle expired; prepare it again",
                    _ => "invalid prepared statement handle",
                }
                .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> TicketQuery {
        TicketQuery::Sql {
            sql: s.into(),
            params: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_tampering() {
        let s = TicketSigner::new(b"secret".to_vec(), 60, 60);
        let t = s.sign("acme", sql("SELECT 1")).unwrap();
        let c = s.verify(t.as_bytes()).unwrap();
        assert_eq!((c.tenant.as_str(), &c.query), ("acme", &sql("SELECT 1")));

        let (payload, sig) = t.rsplit_once('.').unwrap();
        let forged_claims = TicketClaims {
            tenant: "other".into(),
            query: sql("SELECT 1"),
            exp: c.exp,
        };
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        assert!(s.verify(format!("{forged}.{sig}").as_bytes()).is_err());
        assert!(s.verify(payload.as_bytes()).is_err());
        let other_key = TicketSigner::new(b"other".to_vec(), 60, 60);
        assert!(other_key.verify(t.as_bytes()).is_err());
    }

    #[test]
    fn kinds_do_not_pass_for_each_other() {
        let s = TicketSigner::new(b"secret".to_vec(), 60, 60);
        let session = s.session("acme", "alice", &["read".into()]).unwrap();
        assert_eq!(s.verify_session(&session).unwrap().subject, "alice");
        let inner = session.strip_prefix(SESSION_PREFIX).unwrap();
        assert!(s.verify(inner.as_bytes()).is_err());
        assert!(s.verify_prepared(inner.as_bytes()).is_err());
        let ticket = s.sign("acme", sql("SELECT 1")).unwrap();
        assert!(s.verify_session(&ticket).is_err());
        let handle = s.prepared("acme", "SELECT 1", None).unwrap();
        assert_eq!(s.verify_prepared(&handle).unwrap().sql, "SELECT 1");
        assert!(s.verify(&handle).is_err());
    }

    #[test]
    fn refuses_expired() {
        let s = TicketSigner::new(b"k".to_vec(), 0, 0);
        let claims = TicketClaims {
            tenant: "a".into(),
            query: sql("x"),
            exp: 1,
        };
        let t = s.seal("ticket", &claims).unwrap();
        assert!(matches!(s.verify(t.as_bytes()), Err(FlightError::BadTicket(m)) if m == "expired"));
        let session = SessionClaims {
            tenant: "a".into(),
            subject: "b".into(),
            scopes: vec![],
            exp: 1,
        };
        let t = s.seal("session", &session).unwrap();
        assert!(
            matches!(s.verify_session(&t), Err(FlightError::Unauthenticated(m)) if m.contains("expired"))
        );
    }
}
