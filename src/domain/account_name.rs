use std::fmt;

use super::Invalid;

/// The rule, stated once so every refusal quotes it the same way.
pub const NAME_RULE: &str =
    "a name is 1 to 64 characters of a-z, 0-9, '.', '_' and '-', and does not start or end with '.'";

/// An account's name within its host, normalised to lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

impl AccountName {
    /// Parses and normalises a name typed by a person.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let lower = s.trim().to_lowercase();
        let ok = (1..=64).contains(&lower.len())
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && !lower.starts_with('.')
            && !lower.ends_with('.');
        if ok {
            Ok(Self(lower))
        } else {
            Err(Invalid::new(NAME_RULE))
        }
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_normalised_to_lower_case() {
        assert_eq!(AccountName::parse("Alice.B").unwrap().as_str(), "alice.b");
    }

    #[test]
    fn names_outside_the_rule_are_refused_with_the_rule() {
        for bad in [
            "",
            ".alice",
            "alice.",
            "al ice",
            "al@ice",
            "ålice",
            &"a".repeat(65),
        ] {
            assert_eq!(
                AccountName::parse(bad),
                Err(Invalid::new(NAME_RULE)),
                "{bad:?}"
            );
        }
        assert!(AccountName::parse(&"a".repeat(64)).is_ok());
    }

    proptest! {
        #[test]
        fn accepted_names_obey_the_rule(s in "\\PC{0,80}") {
            if let Ok(n) = AccountName::parse(&s) {
                prop_assert!(n.as_str().len() <= 64);
                prop_assert!(!n.as_str().starts_with('.'));
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
            }
        }
    }
}
