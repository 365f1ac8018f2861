//! Signed, stateless tickets: any replica holding the secret can serve them, and each download
//! re-checks the tenant's catalog. A ticket is `base64url(json payload) "." hex(hmac-sha256)`.

use crate::error::{FlightError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// What a ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Tenant whose datasets the query may read.
    pub tenant: String,
    /// The SQL to run.
    pub sql: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Clone)]
pub struct TicketSigner {
    key: Vec<u8>,
    ttl_secs: u64,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSigner")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TicketSigner {
    pub fn new(key: impl Into<Vec<u8>>, ttl_secs: u64) -> Self {
        TicketSigner {
            key: key.into(),
            ttl_secs,
        }
    }

    fn mac(&self, payload: &str) -> Result<String> {
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .map_err(|e| FlightError::Internal(format!("ticket key: {e}")))?;
        mac.update(payload.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    pub fn sign(&self, tenant: &str, sql: &str) -> Result<String> {
        let claims = TicketClaims {
            tenant: tenant.to_owned(),
            sql: sql.to_owned(),
            exp: now() + self.ttl_secs,
        };
        let json = serde_json::to_vec(&claims).map_err(|e| FlightError::Internal(e.to_string()))?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let sig = self.mac(&payload)?;
        Ok(format!("{payload}.{sig}"))
    }

    pub fn verify(&self, ticket: &[u8]) -> Result<TicketClaims> {
        let text =
            std::str::from_utf8(ticket).map_err(|_| FlightError::BadTicket("not UTF-8".into()))?;
        let (payload, sig) = text
            .rsplit_once('.')
            .ok_or_else(|| FlightError::BadTicket("malformed".into()))?;
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .map_err(|e| FlightError::Internal(format!("ticket key: {e}")))?;
        mac.update(payload.as_bytes());
        let sig =
            hex::decode(sig).map_err(|_| FlightError::BadTicket("malformed signature".into()))?;
        mac.verify_slice(&sig)
            .map_err(|_| FlightError::BadTicket("signature does not match".into()))?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| FlightError::BadTicket("malformed payload".into()))?;
        let claims: TicketClaims = serde_json::from_slice(&json)
            .map_err(|_| FlightError::BadTicket("malformed claims".into()))?;
        if claims.exp < now() {
            return Err(FlightError::BadTicket("expired".into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let s = TicketSigner::new(b"secret".to_vec(), 60);
        let t = s.sign("acme", "SELECT 1").unwrap();
        let c = s.verify(t.as_bytes()).unwrap();
        assert_eq!((c.tenant.as_str(), c.sql.as_str()), ("acme", "SELECT 1"));

        let (payload, sig) = t.rsplit_once('.').unwrap();
        let forged_claims = TicketClaims {
            tenant: "other".into(),
            sql: "SELECT 1".into(),
            exp: c.exp,
        };
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        assert!(s.verify(format!("{forged}.{sig}").as_bytes()).is_err());
        assert!(s.verify(payload.as_bytes()).is_err());
        let other_key = TicketSigner::new(b"other".to_vec(), 60);
        assert!(other_key.verify(t.as_bytes()).is_err());
    }

    #[test]
    fn refuses_expired() {
        let s = TicketSigner {
            key: b"k".to_vec(),
            ttl_secs: 0,
        };
        let claims = TicketClaims {
            tenant: "a".into(),
            sql: "x".into(),
            exp: 1,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let t = format!("{payload}.{}", s.mac(&payload).unwrap());
        assert!(matches!(s.verify(t.as_bytes()), Err(FlightError::BadTicket(m)) if m == "expired"));
    }
}
