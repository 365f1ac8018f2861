//! Semantic versions of contracts (`MAJOR.MINOR.PATCH`, optional pre-release).

use std::cmp::Ordering;
use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("\"{0}\" is not a semantic version (expected MAJOR.MINOR.PATCH, e.g. 1.2.0)")]
pub struct VersionError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SemVer {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Option<String>,
}

impl SemVer {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = || VersionError(text.to_owned());
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_owned())),
            Some(_) => return Err(err()),
            None => (text, None),
        };
        let core = core.split_once('+').map_or(core, |(c, _build)| c);
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return Err(err());
        }
        let num = |s: &str| -> Result<u64, VersionError> {
            if s.is_empty()
                || (s.len() > 1 && s.starts_with('0'))
                || !s.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(err());
            }
            s.parse().map_err(|_| err())
        };
        Ok(SemVer {
            major: num(parts[0])?,
            minor: num(parts[1])?,
            patch: num(parts[2])?,
            pre,
        })
    }
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

impl PartialOrd for SemVer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SemVer {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a = SemVer::parse("1.2.3").unwrap();
        let b = SemVer::parse("1.10.0").unwrap();
        let c = SemVer::parse("1.10.0-rc.1").unwrap();
        assert!(a < b);
        assert!(c < b);
        assert_eq!(b.to_string(), "1.10.0");
        assert_eq!(c.to_string(), "1.10.0-rc.1");
    }

    #[test]
    fn refuses_non_semver() {
        for bad in ["1", "1.2", "1.2.x", "01.2.3", "1.2.3-", "", "v1.2.3"] {
            assert!(SemVer::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
