use std::fmt;

use super::Invalid;
use crate::crypto::{self, RngError, SecretDigest};

/// Bytes of randomness in an invite token.
const INVITE_SECRET_BYTES: usize = 16;
/// An invite token's text: the 8-byte invite id then the secret, in base64url.
const INVITE_TOKEN_LEN: usize = (8 + INVITE_SECRET_BYTES) * 4 / 3;
/// Tokens minted under schema 1 were 18 random bytes and carried no id.
const LEGACY_INVITE_TOKEN_LEN: usize = 24;
/// Invite ids below this were numbered by schema 1; every id minted since is
/// far above it (see the store), so an id names its token format.
pub const LEGACY_INVITE_ID_LIMIT: i64 = 1 << 32;

/// The random half of a new invite token, before the store has given the
/// invite its id. Only its digest is ever stored.
pub struct InviteSecret([u8; INVITE_SECRET_BYTES]);

impl InviteSecret {
    /// A fresh secret from the OS RNG.
    pub fn generate() -> Result<Self, RngError> {
        crypto::random_bytes().map(Self)
    }

    /// The digest the store keeps and compares.
    pub fn digest(&self) -> SecretDigest {
        SecretDigest::of_bytes(&self.0)
    }

    /// The token for the invite stored under `id` with this secret.
    pub fn into_token(self, id: i64) -> InviteToken {
        let mut bytes = [0u8; 8 + INVITE_SECRET_BYTES];
        bytes[..8].copy_from_slice(&id.to_be_bytes());
        bytes[8..].copy_from_slice(&self.0);
        InviteToken {
            text: crypto::encode_base64url(&bytes),
            lookup: InviteLookup::ById {
                id,
                digest: self.digest(),
            },
        }
    }
}

impl fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteSecret(..)")
    }
}

/// How the store finds the invite a token names, without seeing the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteLookup {
    /// Tokens since schema 2: the invite's id, and the digest of the secret
    /// that must match the stored one. Looking up by id rather than by digest
    /// means new invites append to the table instead of landing on random
    /// pages of a digest index, which is what keeps minting flat in the size
    /// of the store.
    ById {
        /// The invite's row id.
        id: i64,
        /// SHA-256 of the token's secret half.
        digest: SecretDigest,
    },
    /// Tokens from schema 1, found by the digest of the whole token.
    Legacy(SecretDigest),
}

/// The secret in an invite link, as handed out or as a client sent it: the
/// invite's id (8 bytes) then 16 random bytes, 32 base64url characters. The
/// 24-character tokens of schema 1 still parse.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken {
    text: String,
    lookup: InviteLookup,
}

impl InviteToken {
    /// Parses a token as a client sent it. Anything that could not be one of
    /// ours is refused here, before it reaches the store.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let lookup = match s.len() {
            INVITE_TOKEN_LEN => {
                let bytes: [u8; 8 + INVITE_SECRET_BYTES] =
                    crypto::decode_base64url(s).ok_or_else(invalid_invite)?;
                let (id, secret) = bytes.split_at(8);
                let id = i64::from_be_bytes(id.try_into().map_err(|_| invalid_invite())?);
                if id < LEGACY_INVITE_ID_LIMIT {
                    return Err(invalid_invite());
                }
                InviteLookup::ById {
                    id,
                    digest: SecretDigest::of_bytes(secret),
                }
            }
            LEGACY_INVITE_TOKEN_LEN if crypto::is_base64url(s) => {
                InviteLookup::Legacy(SecretDigest::of(s))
            }
            _ => return Err(invalid_invite()),
        };
        Ok(Self {
            text: s.to_owned(),
            lookup,
        })
    }

    /// How the store finds this token's invite.
    pub fn lookup(&self) -> InviteLookup {
        self.lookup
    }

    /// The token itself, for the one place it is handed to its owner.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

fn invalid_invite() -> Invalid {
    Invalid::new("that is not a valid invite token")
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteToken(..)")
    }
}

/// The value of the `identity` cookie of a signed-in account: 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityToken(String);

impl IdentityToken {
    /// Makes a fresh token from the OS RNG.
    pub fn generate() -> Result<Self, RngError> {
        crypto::random_base64url(32).map(Self)
    }

    /// Parses a token as a client sent it. Anything that could not be one of
    /// ours is refused here, before it reaches the store.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if (16..=128).contains(&s.len()) && crypto::is_base64url(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid::new("that is not a valid identity token"))
        }
    }

    /// The digest under which the store keeps this token.
    pub fn digest(&self) -> SecretDigest {
        SecretDigest::of(&self.0)
    }

    /// The token itself, for the one place it is handed to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SOME_ID: i64 = 1_900_000_000_000 << 20;

    #[test]
    fn an_invite_token_carries_its_id_and_16_secret_bytes() {
        let secret = InviteSecret::generate().unwrap();
        let digest = secret.digest();
        let token = secret.into_token(SOME_ID);
        assert_eq!(token.expose().len(), 32);
        let parsed = InviteToken::parse(token.expose()).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(
            parsed.lookup(),
            InviteLookup::ById {
                id: SOME_ID,
                digest
            }
        );
    }

    #[test]
    fn two_secrets_for_one_id_make_different_tokens() {
        let a = InviteSecret::generate().unwrap().into_token(SOME_ID);
        let b = InviteSecret::generate().unwrap().into_token(SOME_ID);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.lookup(), b.lookup());
    }

    #[test]
    fn schema_1_tokens_are_found_by_the_digest_of_the_whole_token() {
        let old = crypto::random_base64url(18).unwrap();
        assert_eq!(
            InviteToken::parse(&old).unwrap().lookup(),
            InviteLookup::Legacy(SecretDigest::of(&old))
        );
    }

    #[test]
    fn a_new_format_token_with_a_schema_1_id_is_refused() {
        // Such a token was never minted; refusing it keeps the two lookups apart.
        let token = InviteSecret::generate().unwrap().into_token(41);
        assert!(InviteToken::parse(token.expose()).is_err());
    }

    #[test]
    fn tokens_of_other_lengths_or_alphabets_are_refused() {
        let good = InviteSecret::generate().unwrap().into_token(SOME_ID);
        let text = good.expose();
        for bad in [
            "",
            &text[..31],
            &format!("{text}A"),
            &format!("{}+", &text[..31]),
            "abc.defghijklmnopqrstuvw",
        ] {
            assert!(InviteToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn token_parsing_never_panics(s in "\\PC*") {
            let _ = InviteToken::parse(&s);
            let _ = IdentityToken::parse(&s);
        }

        #[test]
        fn every_minted_token_parses_back_to_its_lookup(id in LEGACY_INVITE_ID_LIMIT..i64::MAX) {
            let secret = InviteSecret::generate().unwrap();
            let token = secret.into_token(id);
            prop_assert_eq!(InviteToken::parse(token.expose()).unwrap().lookup(), token.lookup());
        }
    }
}
