//! Who is calling: every call but the handshake carries `authorization: Bearer <token>` (a
//! session token from the handshake, or a BareCount API token made with
//! `barecount.token_create`) or `authorization: Basic <user:password>`. Basic credentials are a
//! login role's own Postgres password, or any user name with an API token as the password.

use crate::db::Db;
use crate::error::{FlightError, Result};
use crate::ticket::{TicketSigner, SESSION_PREFIX};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;

/// Prefix of BareCount API tokens (`barecount.token_create`).
pub const API_TOKEN_PREFIX: &str = "bct_";

/// Basic credentials in standard base64, padded or not (Go's Flight client leaves padding off).
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    /// The login role, or `token:<id>` for an API token.
    pub subject: String,
    pub scopes: Vec<String>,
}

impl Caller {
    /// Refuses with PermissionDenied unless the caller's credentials carry `scope`.
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(FlightError::PermissionDenied(format!(
                "the credentials of \"{}\" lack the {scope} scope",
                self.subject
            )))
        }
    }
}

/// The credentials a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(String),
    Basic { user: String, password: String },
}

/// Reads the `authorization` header.
pub fn credentials(metadata: &MetadataMap) -> Result<Credentials> {
    let value = metadata.get("authorization").ok_or_else(|| {
        FlightError::Unauthenticated(
            "no credentials: authenticate with a Handshake (Basic user:password) or send \
             'authorization: Bearer <token>'"
                .into(),
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| FlightError::Unauthenticated("authorization header is not text".into()))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Credentials::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASIC
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| FlightError::Unauthenticated("malformed Basic credentials".into()))?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            FlightError::Unauthenticated("Basic credentials need user:password".into())
        })?;
        return Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    Err(FlightError::Unauthenticated(
        "authorization must be 'Bearer <token>' or 'Basic <credentials>'".into(),
    ))
}

/// How long a session's credential, once checked against Postgres, is trusted without asking
/// again: the bound on how stale a revocation, an expiry or a lost BareCount role can be.
pub const CREDENTIAL_RECHECK: Duration = Duration::from_secs(2);

/// Entries kept at most; past it, expired entries are dropped (and all, if none had expired).
const LIVE_MAX_ENTRIES: usize = 10_000;

/// Sessions are bound to the credential that opened them: a session token names its login role
/// or API token, and every call re-checks that credential (`barecount.credential_check`) unless
/// it was checked less than [`CREDENTIAL_RECHECK`] ago. Only successes are remembered.
#[derive(Debug, Default)]
pub struct LiveCredentials {
    checked: Mutex<HashMap<String, Checked>>,
}

/// When a credential was last found valid, with its tenant and scopes then.
type Checked = (Instant, String, Vec<String>);

impl LiveCredentials {
    /// The tenant and scopes `subject` has now, or Unauthenticated.
    pub async fn check(&self, db: &Db, subject: &str) -> Result<(String, Vec<String>)> {
        if let Ok(m) = self.checked.lock() {
            if let Some((at, tenant, scopes)) = m.get(subject) {
                if at.elapsed() < CREDENTIAL_RECHECK {
                    return Ok((tenant.clone(), scopes.clone()));
                }
            }
        }
        let row = db
            .run(|c| async move {
                c.query_one(
                    "SELECT tenant_id, scopes FROM barecount.credential_check($1)",
                    &[&subject],
                )
                .await
            })
            .await;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                if let Ok(mut m) = self.checked.lock() {
                    m.remove(subject);
                }
                return Err(e);
            }
        };
        let (tenant, scopes): (String, Vec<String>) = (row.try_get(0)?, row.try_get(1)?);
        if let Ok(mut m) = self.checked.lock() {
            if m.len() >= LIVE_MAX_ENTRIES {
                m.retain(|_, (at, _, _)| at.elapsed() < CREDENTIAL_RECHECK);
                if m.len() >= LIVE_MAX_ENTRIES {
                    m.clear();
                }
            }
            m.insert(
                subject.to_owned(),
                (Instant::now(), tenant.clone(), scopes.clone()),
            );
        }
        Ok((tenant, scopes))
    }
}

/// Checks credentials: session tokens by their signature and then their credential (see
/// [`LiveCredentials`]), API tokens and passwords against Postgres.
pub async fn authenticate(
    db: &Db,
    signer: &TicketSigner,
    live: &LiveCredentials,
    creds: &Credentials,
) -> Result<Caller> {
    match creds {
        Credentials::Bearer(t) if t.starts_with(SESSION_PREFIX) => {
            let s = signer.verify_session(t)?;
            let (tenant, now_scopes) = live.check(db, &s.subject).await?;
            if tenant != s.tenant {
                return Err(FlightError::Unauthenticated(
                    "the session's role belongs to another tenant now; authenticate again".into(),
                ));
            }
            // a session never gains scopes, and loses those its credential lost
            let scopes = s
                .scopes
                .into_iter()
                .filter(|x| now_scopes.contains(x))
                .collect();
            Ok(Caller {
                tenant: s.tenant,
                subject: s.subject,
                scopes,
            })
        }
        Credentials::Bearer(t) => api_token(db, t).await,
        Credentials::Basic { password, .. } if password.starts_with(API_TOKEN_PREFIX) => {
            api_token(db, password).await
        }
        Credentials::Basic { user, password } => {
            let row = db
                .run(|c| async move {
                    c.query_one(
                        "SELECT tenant_id, scopes FROM barecount.password_authenticate($1, $2)",
                        &[user, password],
                    )
                    .await
                })
                .await?;
            Ok(Caller {
                tenant: row.try_get(0)?,
                subject: user.clone(),
                scopes: row.try_get(1)?,
            })
        }
    }
}

async fn api_token(db: &Db, token: &str) -> Result<Caller> {
    if !token.starts_with(API_TOKEN_PREFIX) {
        return Err(FlightError::Unauthenticated(
            "unknown kind of bearer token".into(),
        ));
    }
    let row = db
        .run(|c| async move {
            c.query_one(
                "SELECT tenant_id, scopes, token_id FROM barecount.token_authenticate($1)",
                &[&token],
            )
            .await
        })
        .await?;
    let id: String = row.try_get(2)?;
    Ok(Caller {
        tenant: row.try_get(0)?,
        subject: format!("token:{id}"),
        scopes: row.try_get(1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", MetadataValue::try_from(value).unwrap());
        m
    }

    #[test]
    fn reads_the_authorization_header() {
        assert_eq!(
            credentials(&with("Bearer bct_x_y")).unwrap(),
            Credentials::Bearer("bct_x_y".into())
        );
        let basic = format!("Basic {}", BASIC.encode("alice:pa:ss"));
        let unpadded = format!(
            "Basic {}",
            BASIC.encode("alice:pa:ss").trim_end_matches('=')
        );
        assert_eq!(
            credentials(&with(&unpadded)).unwrap(),
            credentials(&with(&basic)).unwrap()
        );
        assert_eq!(
            credentials(&with(&basic)).unwrap(),
            Credentials::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        for bad in ["Bearer", "Basic !!!", "Digest abc", "Basic YWxpY2U="] {
            assert!(
                matches!(
                    credentials(&with(bad)),
                    Err(FlightError::Unauthenticated(_))
                ),
                "{bad}"
            );
        }
        assert!(credentials(&MetadataMap::new()).is_err());
    }

    #[test]
    fn scopes_are_required() {
        let c = Caller {
            tenant: "acme".into(),
            subject: "token:abc".into(),
            scopes: vec!["read".into()],
        };
        assert!(c.require("read").is_ok());
        assert!(matches!(
            c.require("export"),
            Err(FlightError::PermissionDenied(m)) if m.contains("export")
        ));
    }
}
