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
            return Err(Invalid::new(too_easy(estimate.feedback())));
        }
        Ok(Self(s.to_owned()))
    }

    /// The password text, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a password is too easy to guess, in whole sentences: zxcvbn's warning
/// when it has one, then its suggestions, or ours when it has none. The text
/// reaches the registration page, the JSON API and the command line alike.
fn too_easy(feedback: Option<&zxcvbn::feedback::Feedback>) -> String {
    let mut sentences = vec!["the password is too easy to guess.".to_owned()];
    if let Some(warning) = feedback.and_then(|f| f.warning()) {
        sentences.push(warning.to_string());
    }
    let suggestions = feedback.map_or(&[][..], |f| f.suggestions());
    if suggestions.is_empty() {
        sentences.push("Add more words or characters.".to_owned());
    }
    sentences.extend(suggestions.iter().map(|s| s.to_string()));
    sentences
        .into_iter()
        .map(|s| full_stop(s.trim()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` ending as a sentence does: zxcvbn's texts do today, and this keeps
/// it so should one of them change.
fn full_stop(s: &str) -> String {
    if s.ends_with(['.', '!', '?']) {
        s.to_owned()
    } else {
        format!("{s}.")
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

    /// Each piece of a refusal is its own sentence, ending in a full stop.
    fn assert_sentences(message: &str) {
        let body = message
            .strip_prefix("the password is too easy to guess. ")
            .unwrap_or_else(|| panic!("{message:?}"));
        assert!(body.ends_with('.'), "{message:?}");
        for sentence in body.split_inclusive(['.', '!', '?']) {
            let first = sentence.trim_start().chars().next();
            assert!(
                first.is_some_and(|c| c.is_uppercase() || c == '"'),
                "{sentence:?} in {message:?}"
            );
        }
    }

    #[test]
    fn a_guessable_password_is_refused_in_whole_sentences_with_zxcvbns_advice() {
        let (n, h) = ctx();
        let common = Password::parse("password", &n, &h).unwrap_err().0;
        assert_sentences(&common);
        assert!(
            common.contains("This is a top-10 common password. "),
            "{common}"
        );
        assert!(common.contains("Add another word or two."), "{common}");
        // Without a warning of zxcvbn's own: still sentences, still advice.
        let plain = too_easy(None);
        assert_eq!(
            plain,
            "the password is too easy to guess. Add more words or characters."
        );
    }
}
