use std::fmt;

use super::{AccountName, HostName, Invalid};

const MIN_CHARS: usize = 8;
const MAX_BYTES: usize = 1024;
/// zxcvbn scores 0 ("too guessable") to 4; 0 and 1 are refused.
const MIN_SCORE: u8 = 2;

/// A new account's password that passed the policy. Never displayed or logged.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Checks a new password against the policy for the given account.
    pub fn parse(s: &str, name: &AccountName, host: &HostName) -> Result<Self, Invalid> {
        if s.len() > MAX_BYTES {
            return Err(Invalid::new(format!(
                "the password is too long: at most {MAX_BYTES} bytes"
            )));
        }
        if s.chars().count() < MIN_CHARS {
            return Err(Invalid::new(format!(
                "the password is too short: at least {MIN_CHARS} characters"
            )));
        }
        if s.eq_ignore_ascii_case(name.as_str()) {
            return Err(Invalid::new("the password must not be the account name"));
        }
        let estimate = zxcvbn::zxcvbn(s, &[name.as_str(), host.as_str()]);
        if (estimate.score() as u8) < MIN_SCORE {
            let why = estimate
                .feedback()
                .and_then(|f| f.warning().map(|w| w.to_string()))
                .unwrap_or_else(|| "it would be guessed quickly".to_owned());
            return Err(Invalid::new(format!(
                "the password is too easy to guess: {why} Add more words or characters."
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The password text, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (AccountName, HostName) {
        (
            AccountName::parse("alice").unwrap(),
            HostName::parse("example.com").unwrap(),
        )
    }

    #[test]
    fn the_policy_refuses_with_a_reason() {
        let (n, h) = ctx();
        assert!(Password::parse("short", &n, &h)
            .unwrap_err()
            .0
            .contains("too short"));
        assert!(Password::parse("password", &n, &h)
            .unwrap_err()
            .0
            .contains("too easy"));
        assert!(Password::parse("aliceALICE", &n, &h).is_err());
        assert!(Password::parse(&"x".repeat(1025), &n, &h)
            .unwrap_err()
            .0
            .contains("too long"));
        assert!(Password::parse("correct horse battery staple", &n, &h).is_ok());
    }
}
