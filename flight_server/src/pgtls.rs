//! TLS to Postgres, with libpq's `sslmode` meanings, over rustls (the TLS stack tonic uses):
//!
//! | `sslmode` | encrypted | certificate chain checked | host name checked |
//! |---|---|---|---|
//! | absent, `disable` | no | — | — |
//! | `allow`, `prefer` | if the server offers it | no | no |
//! | `require` | yes | only if `sslrootcert` is given (as libpq does) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `sslrootcert=/path/ca.pem` names the trusted CA certificates (PEM); without it the system's
//! roots are trusted. Both are read from the database URL (`postgresql://…?sslmode=verify-full
//! &sslrootcert=/etc/ca.pem`) or a key=value connection string, and removed before the rest is
//! handed to tokio-postgres, which knows neither `verify-*` nor `sslrootcert`.

use crate::error::{FlightError, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::str::FromStr;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// What a connection string asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// None: no TLS at all.
    pub mode: Option<(SslMode, Verify)>,
    pub root_cert: Option<String>,
}

fn bad(msg: String) -> FlightError {
    FlightError::InvalidRequest(format!("database URL: {msg}"))
}

/// Percent-decodes a URL query value (paths may hold %2F or spaces).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = v
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits the TLS settings off a connection string: the string tokio-postgres gets, and the
/// settings.
pub fn split(url: &str) -> Result<(String, TlsSettings)> {
    let mut sslmode: Option<String> = None;
    let mut root_cert: Option<String> = None;
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    match k {
                        "sslmode" => sslmode = Some(decode(v)),
                        "sslrootcert" => root_cert = Some(decode(v)),
                        _ => kept.push(pair),
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            match token.split_once('=') {
                Some(("sslmode", v)) => sslmode = Some(v.trim_matches('\'').to_owned()),
                Some(("sslrootcert", v)) => root_cert = Some(v.trim_matches('\'').to_owned()),
                _ => kept.push(token),
            }
        }
        kept.join(" ")
    };
    let mode = match sslmode.as_deref() {
        None | Some("disable") => None,
        Some("allow" | "prefer") => Some((SslMode::Prefer, Verify::Nothing)),
        Some("require") if root_cert.is_some() => Some((SslMode::Require, Verify::Chain)),
        Some("require") => Some((SslMode::Require, Verify::Nothing)),
        Some("verify-ca") => Some((SslMode::Require, Verify::Chain)),
        Some("verify-full") => Some((SslMode::Require, Verify::ChainAndName)),
        Some(other) => {
            return Err(bad(format!(
                "sslmode \"{other}\" is unknown; use disable, allow, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    Ok((rest, TlsSettings { mode, root_cert }))
}

/// The verifier of the lenient modes: the handshake's signatures are always checked with the
/// provider's algorithms (so the handshake is sound); the certificate chain is checked against
/// the roots when `chain` is given (sslmode verify-ca), never its host name, and not at all
/// without roots (sslmode prefer, or require without sslrootcert: encryption without
/// authentication, as libpq does).
#[derive(Debug)]
struct Lenient {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("cannot read sslrootcert {path}: {e}")))?;
            for c in certs {
                let c = c.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
                store
                    .add(c)
                    .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            }
            if store.is_empty() {
                return Err(bad(format!("sslrootcert {path} holds no certificate")));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(c);
            }
        }
    }
    Ok(store)
}

/// The rustls connector for the settings, or None for plain connections.
pub fn connector(s: &TlsSettings) -> Result<Option<MakeRustlsConnect>> {
    let Some((_, verify)) = s.mode else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| FlightError::Internal(format!("TLS set-up: {e}")))?;
    let config = match verify {
        Verify::Nothing | Verify::Chain => {
            let chain = match verify {
                Verify::Chain => Some(
                    WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots(s.root_cert.as_deref())?),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| bad(format!("TLS roots: {e}")))?,
                ),
                _ => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient { provider, chain }))
                .with_no_client_auth()
        }
        Verify::ChainAndName => builder
            .with_root_certificates(roots(s.root_cert.as_deref())?)
            .with_no_client_auth(),
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// A tokio-postgres configuration and its TLS connector, from a connection string.
pub fn prepare(url: &str) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>)> {
    let (rest, settings) = split(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| bad(format!("cannot parse it: {e}")))?;
    match settings.mode {
        Some((mode, _)) => {
            config.ssl_mode(mode);
        }
        None => {
            config.ssl_mode(SslMode::Disable);
        }
    }
    Ok((config, connector(&settings)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_off_the_url() {
        let (rest, s) = split(
            "postgresql://gw@db:5432/warehouse?application_name=bc&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://gw@db:5432/warehouse?application_name=bc"
        );
        assert_eq!(
            s,
            TlsSettings {
                mode: Some((SslMode::Require, Verify::ChainAndName)),
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        let (rest, s) = split("host=db user=gw sslmode=require dbname=w").unwrap();
        assert_eq!(rest, "host=db user=gw dbname=w");
        assert_eq!(s.mode, Some((SslMode::Require, Verify::Nothing)));
        let (_, s) = split("postgresql://db/w?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.mode, Some((SslMode::Require, Verify::Chain)));
        let (_, s) = split("postgresql://db/w?sslmode=verify-ca").unwrap();
        assert_eq!(s.mode, Some((SslMode::Require, Verify::Chain)));
        let (rest, s) = split("postgresql://db/w").unwrap();
        assert_eq!((rest.as_str(), s.mode), ("postgresql://db/w", None));
        assert!(matches!(
            split("postgresql://db/w?sslmode=sometimes"),
            Err(FlightError::InvalidRequest(m)) if m.contains("sometimes")
        ));
        assert!(matches!(
            prepare("postgresql://db/w?sslmode=verify-full&sslrootcert=/no/such/ca.pem"),
            Err(FlightError::InvalidRequest(m)) if m.contains("/no/such/ca.pem")
        ));
    }
}
