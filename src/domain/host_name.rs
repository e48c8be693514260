use std::fmt;

use super::Invalid;

/// A virtual host this server hands out invites for, as named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HostName(String);

impl HostName {
    /// Parses a host name: a DNS name of letters, digits, `-` and `.`, lower-cased.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let lower = s.to_ascii_lowercase();
        let ok = !lower.is_empty()
            && lower.len() <= 253
            && lower.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if ok {
            Ok(Self(lower))
        } else {
            Err(Invalid::new(format!(
                "`{s}` is not a valid host name (letters, digits, `-` and `.`)"
            )))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_lower_cased_and_checked() {
        assert_eq!(
            HostName::parse("Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert!(HostName::parse("localhost").is_ok());
        for bad in ["", "a..b", "-a.com", "a b", "a/b", "ex_ample.com"] {
            assert!(HostName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
