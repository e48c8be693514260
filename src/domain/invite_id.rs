use std::fmt;

use super::Invalid;

/// The short, non-secret handle of an invite that operators list, show and
/// revoke it by: 13 lower-case base32 characters (`a`-`z`, `2`-`7`), so it
/// never looks like an option on a command line. It is the invite's row id
/// under a keyed permutation ([`crate::crypto::InviteIds`]): it names the
/// row without an index, yet is no part of the invite's token, and one id
/// says nothing about the next.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InviteId(String);

impl InviteId {
    /// Its length in characters: 64 bits in base32.
    pub const LEN: usize = 13;

    /// Parses an id as typed (case is ignored).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim().to_ascii_lowercase();
        let well_formed = s.len() == Self::LEN
            && s.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            // 13 base32 characters carry 65 bits: the last must leave the
            // 65th zero, or two spellings would name one invite.
            && data_encoding::BASE32_NOPAD
                .decode(s.to_ascii_uppercase().as_bytes())
                .is_ok();
        if well_formed {
            Ok(Self(s))
        } else {
            Err(Invalid::new(format!(
                "`{}` is not an invite id (13 letters and digits, as `invites list` shows them)",
                s.escape_default()
            )))
        }
    }

    /// The 8 bytes it encodes.
    pub(crate) fn to_bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        // parse() checked that it decodes to exactly 8 bytes.
        if let Ok(v) = data_encoding::BASE32_NOPAD.decode(self.0.to_ascii_uppercase().as_bytes()) {
            if v.len() == 8 {
                out.copy_from_slice(&v);
            }
        }
        out
    }

    /// The id of 8 bytes.
    pub(crate) fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase(),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_refuse_anything_else() {
        for bytes in [[0u8; 8], [0xff; 8], [1, 2, 3, 4, 5, 6, 7, 8]] {
            let id = InviteId::from_bytes(bytes);
            assert_eq!(id.as_str().len(), InviteId::LEN);
            assert!(!id.as_str().starts_with('-'));
            let parsed = InviteId::parse(&id.as_str().to_ascii_uppercase()).unwrap();
            assert_eq!(parsed, id);
            assert_eq!(parsed.to_bytes(), bytes);
        }
        for bad in [
            "",
            "abc",
            "aaaaaaaaaaaa1",
            "aaaaaaaaaaaaaa",
            "-aaaaaaaaaaaa",
            "aaaaaaaaaaaab",
        ] {
            assert!(InviteId::parse(bad).is_err(), "{bad}");
        }
    }
}
