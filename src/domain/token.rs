use std::fmt;

use super::Invalid;
use crate::crypto::{self, RngError, SecretDigest};

macro_rules! secret_token {
    ($(#[$doc:meta])* $name:ident, bytes = $bytes:expr, what = $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Makes a fresh token from the OS RNG.
            pub fn generate() -> Result<Self, RngError> {
                crypto::random_base64url($bytes).map(Self)
            }

            /// Parses a token as a client sent it. Anything that could not be one of
            /// ours is refused here, before it reaches the store.
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                if (16..=128).contains(&s.len()) && crypto::is_base64url(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(Invalid::new(concat!("that is not a valid ", $what)))
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

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

secret_token!(
    /// The secret in an invite link: 18 random bytes, 24 base64url characters.
    InviteToken,
    bytes = 18,
    what = "invite token"
);

secret_token!(
    /// The value of the `identity` cookie of a signed-in account: 32 random bytes.
    IdentityToken,
    bytes = 32,
    what = "identity token"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invite_tokens_carry_at_least_18_bytes() {
        let t = InviteToken::generate().unwrap();
        assert_eq!(t.expose().len(), 24);
        assert_eq!(InviteToken::parse(t.expose()).unwrap(), t);
    }

    proptest! {
        #[test]
        fn token_parsing_never_panics(s in "\\PC*") {
            let _ = InviteToken::parse(&s);
            let _ = IdentityToken::parse(&s);
        }
    }
}
