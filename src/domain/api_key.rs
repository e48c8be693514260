use std::fmt;

use super::Invalid;
use crate::crypto::{self, RngError, SecretDigest};

/// Length of a key id, in base64url characters (9 random bytes).
const ID_LEN: usize = 12;
/// Random bytes in a freshly made secret: 36 base64url characters, as Prosody.
const SECRET_BYTES: usize = 27;
const SECRET_MIN_LEN: usize = 32;
/// Longer secrets are never issued; the bound keeps hostile input cheap to refuse.
const SECRET_MAX_LEN: usize = 128;

/// The public half of an API key: names the key in lists, logs and invite sources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id: exactly 12 base64url characters.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.len() == ID_LEN && crypto::is_base64url(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid::new(format!(
                "a key id is {ID_LEN} characters of A-Z a-z 0-9 - _"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret half of an API key. Never displayed, logged or stored.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl KeySecret {
    /// Parses a secret: 32 to 128 base64url characters.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if (SECRET_MIN_LEN..=SECRET_MAX_LEN).contains(&s.len()) && crypto::is_base64url(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid::new(
                "a key secret is 32 or more characters of A-Z a-z 0-9 - _",
            ))
        }
    }

    /// The digest under which the store keeps this secret.
    pub fn digest(&self) -> SecretDigest {
        SecretDigest::of(&self.0)
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

/// A whole API key as a client presents it: `<id>/<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Which key this is.
    pub id: KeyId,
    /// The proof of holding it.
    pub secret: KeySecret,
}

impl ApiKey {
    /// Makes a new key from the OS RNG.
    pub fn generate() -> Result<Self, RngError> {
        // An id starting with `-` reads as an option on command lines
        // (`keys delete HOST -abc...`); drawing again costs nothing.
        let id = loop {
            let id = crypto::random_base64url(ID_LEN / 4 * 3)?;
            if !id.starts_with('-') {
                break id;
            }
        };
        let secret = crypto::random_base64url(SECRET_BYTES)?;
        Ok(Self {
            id: KeyId(id),
            secret: KeySecret(secret),
        })
    }

    /// Parses `<id>/<secret>`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let (id, secret) = s
            .split_once('/')
            .ok_or_else(|| Invalid::new("a key has the form <id>/<secret>"))?;
        Ok(Self {
            id: KeyId::parse(id)?,
            secret: KeySecret::parse(secret)?,
        })
    }

    /// The key in the one form a person ever sees it: `<id>/<secret>`.
    pub fn expose(&self) -> String {
        format!("{}/{}", self.id.0, self.secret.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_key_ids_never_start_with_a_dash() {
        for _ in 0..2000 {
            assert!(!ApiKey::generate().unwrap().id.as_str().starts_with('-'));
        }
    }

    #[test]
    fn generated_keys_round_trip() {
        let k = ApiKey::generate().unwrap();
        assert_eq!(k.id.as_str().len(), 12);
        assert_eq!(ApiKey::parse(&k.expose()).unwrap(), k);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "/",
            "abc",
            "abcdefghijkl/short",
            "abcdefghijk/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abcdefghijkl/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=",
            "abcdefghijkl/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/x",
        ] {
            assert!(ApiKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(s in ".*") {
            let _ = ApiKey::parse(&s);
        }

        #[test]
        fn accepted_keys_print_back_unchanged(id in "[A-Za-z0-9_-]{12}", secret in "[A-Za-z0-9_-]{32,128}") {
            let text = format!("{id}/{secret}");
            prop_assert_eq!(ApiKey::parse(&text).unwrap().expose(), text);
        }
    }
}
