//! Webhooks as the Standard Webhooks specification defines them (standardwebhooks.com): the
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` headers, `v1` signatures (HMAC-SHA256
//! over `id.timestamp.body`, base64), `whsec_` secrets; and the delivery policy — which answers
//! are retried, when, and when a delivery becomes a dead letter.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum WebhookError {
    #[error("a webhook secret starts with whsec_ followed by base64 of 24 to 64 bytes")]
    BadSecret,
    #[error("webhook URL {url:?} {problem}")]
    BadUrl { url: String, problem: String },
    #[error("the retry schedule {0}")]
    BadSchedule(String),
}

/// A new signing secret: `whsec_` and base64 of 32 random bytes.
pub fn new_secret() -> Result<(String, Vec<u8>), getrandom::Error> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key)?;
    Ok((format!("whsec_{}", STANDARD.encode(&key)), key))
}

/// The key bytes of a `whsec_…` secret.
pub fn parse_secret(s: &str) -> Result<Vec<u8>, WebhookError> {
    let b64 = s.strip_prefix("whsec_").ok_or(WebhookError::BadSecret)?;
    let key = STANDARD.decode(b64).map_err(|_| WebhookError::BadSecret)?;
    if (24..=64).contains(&key.len()) {
        Ok(key)
    } else {
        Err(WebhookError::BadSecret)
    }
}

/// One `v1,<base64>` signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space-separated (during a secret's
/// rotation both the new and the old key sign, so receivers holding either verify).
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a webhook target: http or https, a host, no credentials in it, at most 2048 bytes.
pub fn check_url(url: &str) -> Result<(), WebhookError> {
    let bad = |problem: &str| WebhookError::BadUrl {
        url: url.chars().take(200).collect(),
        problem: problem.into(),
    };
    if url.len() > 2048 {
        return Err(bad("is longer than 2048 bytes"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        return Err(bad(
            "must not carry credentials; keep them in a secret (barecount.secret_set)",
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    Ok(())
}

/// Seconds to wait after each failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h — seven
/// attempts in all, the last about 18 hours after the first.
pub const DEFAULT_SCHEDULE: [f64; 6] = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0];

/// Checks a retry schedule: 1 to 20 waits, each from 0.01 s to 7 days.
pub fn check_schedule(s: &[f64]) -> Result<(), WebhookError> {
    if s.is_empty() || s.len() > 20 {
        return Err(WebhookError::BadSchedule(format!(
            "has {} waits; give 1 to 20",
            s.len()
        )));
    }
    if let Some(w) = s
        .iter()
        .find(|w| !(w.is_finite() && **w >= 0.01 && **w <= 604_800.0))
    {
        return Err(WebhookError::BadSchedule(format!(
            "has a wait of {w} s; each must be from 0.01 s to 7 days"
        )));
    }
    Ok(())
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver answered with this status (and a Retry-After in seconds, if it gave one).
    Status { code: u16, retry_after: Option<f64> },
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be made or was dropped.
    Connection,
}

/// A `Retry-After` header's wait in seconds: a number of seconds, or an HTTP date (RFC 9110)
/// less `now`; a date already past waits 0. None for anything else.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<f64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    )
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    /// Try again after this many seconds.
    Retry(f64),
    /// A dead letter: no more attempts until it is replayed.
    Dead(String),
}

/// The policy: 2xx delivered; 408, 429, 5xx, timeouts and dropped connections retried on the
/// schedule (with ±20 % jitter from `jitter` in [0, 1), or after the receiver's Retry-After when
/// it gave one, at most a day); other answers (4xx, redirects, which are not followed) are not
/// retried. `attempt` is the number of the attempt that just ended, from 1.
pub fn decide(attempt: u32, outcome: &Outcome, schedule: &[f64], jitter: f64) -> Next {
    let retry = |reason: String, retry_after: Option<f64>| {
        let i = attempt.saturating_sub(1) as usize;
        match schedule.get(i) {
            Some(wait) => Next::Retry(match retry_after {
                Some(ra) if ra.is_finite() && ra >= 0.0 => ra.min(86_400.0),
                _ => wait * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)),
            }),
            None => Next::Dead(format!("{reason}; gave up after {attempt} attempts")),
        }
    };
    match outcome {
        Outcome::Status { code, .. } if (200..300).contains(code) => Next::Delivered,
        Outcome::Status { code, retry_after } if *code == 408 || *code == 429 || *code >= 500 => {
            retry(format!("the receiver answered {code}"), *retry_after)
        }
        Outcome::Status { code, .. } if (300..400).contains(code) => Next::Dead(format!(
            "the receiver answered {code}, a redirect (not followed)"
        )),
        Outcome::Status { code, .. } => {
            Next::Dead(format!("the receiver answered {code} (not retried)"))
        }
        Outcome::Timeout => retry("no answer within the timeout".into(), None),
        Outcome::Connection => retry("the connection failed".into(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specification_example() {
        // the example of the Standard Webhooks reference libraries (and Svix's documentation)
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let (s, k) = new_secret().unwrap_or_default();
        assert_eq!(parse_secret(&s), Ok(k.clone()));
        assert_eq!(
            signature_header(&[key.clone(), k], "id", 1, b"x")
                .split(' ')
                .count(),
            2
        );
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_***",
            "whsec_AAAA",
        ] {
            assert_eq!(parse_secret(bad), Err(WebhookError::BadSecret), "{bad}");
        }
    }

    #[test]
    fn retries_what_may_pass_and_dead_letters_the_rest() {
        let s = DEFAULT_SCHEDULE;
        let st = |code| Outcome::Status {
            code,
            retry_after: None,
        };
        assert_eq!(decide(1, &st(204), &s, 0.5), Next::Delivered);
        assert_eq!(decide(1, &st(500), &s, 0.5), Next::Retry(5.0));
        assert_eq!(decide(2, &Outcome::Timeout, &s, 0.0), Next::Retry(240.0));
        assert_eq!(
            decide(3, &Outcome::Connection, &s, 0.5),
            Next::Retry(1800.0)
        );
        assert_eq!(
            decide(
                1,
                &Outcome::Status {
                    code: 429,
                    retry_after: Some(42.0)
                },
                &s,
                0.5
            ),
            Next::Retry(42.0)
        );
        assert_eq!(decide(1, &st(408), &s, 0.5), Next::Retry(5.0));
        assert!(
            matches!(decide(7, &st(503), &s, 0.5), Next::Dead(r) if r.contains("after 7 attempts"))
        );
        assert!(matches!(decide(1, &st(410), &s, 0.5), Next::Dead(r) if r.contains("410")));
        assert!(matches!(decide(1, &st(301), &s, 0.5), Next::Dead(r) if r.contains("redirect")));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_717); // Sun, 06 Nov 1994 08:48:37 GMT
        assert_eq!(retry_after("120", now), Some(120.0));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(60.0)
        );
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(0.0));
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn urls_and_schedules_are_checked() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/h").is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https://user:pw@host/",
            "http://a b/",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_schedule(&[0.1, 0.2]).is_ok());
        assert!(check_schedule(&[]).is_err());
        assert!(check_schedule(&[f64::NAN]).is_err());
        assert!(check_schedule(&[1e9]).is_err());
    }
}
