//! Randomness, digests and the form key. Every secret this server hands out
//! (API key secrets, invite tokens, identity tokens) comes from here, and is
//! stored only as the SHA-256 digest computed here.

use crate::domain::InviteId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::TryRngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The operating system's random number generator failed; nothing secret can be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RngError(String);

/// `n` random bytes from the OS RNG, encoded as unpadded base64url.
pub fn random_base64url(n: usize) -> Result<String, RngError> {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf)?;
    Ok(encode_base64url(&buf))
}

/// `N` random bytes from the OS RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RngError> {
    let mut buf = [0u8; N];
    fill_random(&mut buf)?;
    Ok(buf)
}

fn fill_random(buf: &mut [u8]) -> Result<(), RngError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|e| RngError(e.to_string()))
}

/// Unpadded base64url, the only encoding our secrets travel in.
pub fn encode_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url into exactly `N` bytes; `None` for anything else.
pub fn decode_base64url<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // decode_slice refuses input that would not fit; the length check refuses
    // input that is too short.
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(n) if n == N => Some(out),
        _ => None,
    }
}

/// True when every byte of `s` is in the unpadded base64url alphabet.
pub fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 digest of a secret: the only form in which secrets reach the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// Digest of the given secret text.
    pub fn of(secret: &str) -> Self {
        Self::of_bytes(secret.as_bytes())
    }

    /// Digest of the given secret bytes.
    pub fn of_bytes(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Rebuilds a digest read back from the store; `None` when the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw digest bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality, so a timing side channel says nothing about a secret.
    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretDigest {
    // Digests are not secrets, but nothing gains from printing them either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// The server's key for registration-form tokens: a form's hidden field is
/// HMAC-SHA256 under this key of the invite's id and the browser's cookie
/// nonce, so only a pair the server issued, for that very invite, passes.
/// One key per database, so every node serving it accepts every node's forms.
#[derive(Clone)]
pub struct FormKey([u8; FormKey::LEN]);

type HmacSha256 = Hmac<Sha256>;

/// Names what the MAC is for, so this key's tags can mean nothing else.
const FORM_TAG_CONTEXT: &[u8] = b"invite-server registration form v1\0";

impl FormKey {
    /// The key's length in bytes.
    pub const LEN: usize = 32;

    /// The key from its stored bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// An HMAC under this key, already bound to `context` (what the MAC is
    /// for), so no two uses of the key can produce each other's tags.
    fn keyed(&self, context: &[u8]) -> HmacSha256 {
        // Cannot fail: HMAC takes a key of any length (new_from_slice errs
        // only for MACs with a fixed key size).
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(context);
        mac
    }

    fn mac(&self, invite_id: i64, nonce: &str) -> HmacSha256 {
        let mut mac = self.keyed(FORM_TAG_CONTEXT);
        // The id has a fixed width, so (id, nonce) pairs cannot run together.
        mac.update(&invite_id.to_be_bytes());
        mac.update(nonce.as_bytes());
        mac
    }

    /// The form field for `invite_id` in a browser whose cookie holds `nonce`.
    pub fn sign(&self, invite_id: i64, nonce: &str) -> String {
        encode_base64url(&self.mac(invite_id, nonce).finalize().into_bytes())
    }

    /// Whether `field` is the one [`FormKey::sign`] gives for this invite and
    /// nonce; compared in constant time.
    pub fn verify(&self, invite_id: i64, nonce: &str, field: &str) -> bool {
        match decode_base64url::<32>(field) {
            Some(tag) => self.mac(invite_id, nonce).verify_slice(&tag).is_ok(),
            None => false,
        }
    }
}

/// Names what page-form tags (sign-in, account) are for, apart from
/// registration forms, so a tag of one kind never passes as the other.
const PAGE_FORM_CONTEXT: &[u8] = b"invite-server page form v1\0";

impl FormKey {
    fn page_mac(&self, purpose: &str, nonce: &str) -> HmacSha256 {
        let mut mac = self.keyed(PAGE_FORM_CONTEXT);
        // Length-prefixed, so (purpose, nonce) pairs cannot run together.
        mac.update(&(purpose.len() as u64).to_be_bytes());
        mac.update(purpose.as_bytes());
        mac.update(nonce.as_bytes());
        mac
    }

    /// The form field for a page with no invite (`purpose` names the form,
    /// e.g. `login`) in a browser whose cookie holds `nonce`.
    pub fn sign_page(&self, purpose: &str, nonce: &str) -> String {
        encode_base64url(&self.page_mac(purpose, nonce).finalize().into_bytes())
    }

    /// Whether `field` is the one [`FormKey::sign_page`] gives for this
    /// purpose and nonce; compared in constant time.
    pub fn verify_page(&self, purpose: &str, nonce: &str, field: &str) -> bool {
        match decode_base64url::<32>(field) {
            Some(tag) => self.page_mac(purpose, nonce).verify_slice(&tag).is_ok(),
            None => false,
        }
    }
}

/// Names what the key derived for invite ids is for.
const INVITE_ID_CONTEXT: &[u8] = b"invite-server invite ids v1\0";

impl FormKey {
    /// The permutation between invite row ids and the invite ids operators
    /// see, keyed by this database's secret (so every node agrees).
    pub fn invite_ids(&self) -> InviteIds {
        let key: [u8; 32] = self.keyed(INVITE_ID_CONTEXT).finalize().into_bytes().into();
        InviteIds {
            ff1: fpe::ff1::FF1::<aes::Aes256>::new(&key, 2).expect("radix 2 is within FF1's range"),
        }
    }
}

/// Turns an invite's row id into its public [`InviteId`] and back: NIST
/// FF1 format-preserving encryption over the 64 bits of the row id (the
/// `fpe` crate), so the id needs no column or index of its own, names the
/// row directly, and reveals nothing of the token (whose first half is the
/// row id) without the database's secret.
pub struct InviteIds {
    ff1: fpe::ff1::FF1<aes::Aes256>,
}

impl InviteIds {
    /// The public id of the invite stored as `row_id`.
    pub fn public(&self, row_id: i64) -> InviteId {
        let plain = fpe::ff1::BinaryNumeralString::from_bytes_le(&row_id.to_le_bytes());
        let bytes = self
            .ff1
            .encrypt(&[], &plain)
            .map(|c| c.to_bytes_le())
            .ok()
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            // 64 binary numerals are within FF1's limits for radix 2.
            .expect("FF1 keeps 64 bits 64 bits");
        InviteId::from_bytes(bytes)
    }

    /// The row id an invite id names.
    pub fn row_id(&self, id: &InviteId) -> i64 {
        let cipher = fpe::ff1::BinaryNumeralString::from_bytes_le(&id.to_bytes());
        let bytes = self
            .ff1
            .decrypt(&[], &cipher)
            .map(|p| p.to_bytes_le())
            .ok()
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .expect("FF1 keeps 64 bits 64 bits");
        i64::from_le_bytes(bytes)
    }
}

impl std::fmt::Debug for InviteIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteIds(..)")
    }
}

impl std::fmt::Debug for FormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_tag_verifies_only_for_its_key_invite_and_nonce() {
        let key = FormKey::from_bytes([7; 32]);
        let tag = key.sign(42, "nonce");
        assert!(key.verify(42, "nonce", &tag));
        assert!(!key.verify(43, "nonce", &tag));
        assert!(!key.verify(42, "other", &tag));
        assert!(!FormKey::from_bytes([8; 32]).verify(42, "nonce", &tag));
        assert!(!key.verify(42, "nonce", "nonce"));
        assert!(!key.verify(42, "nonce", ""));
        assert!(!key.verify(42, "nonce", &tag[1..]));
    }

    #[test]
    fn a_page_form_tag_verifies_only_for_its_purpose_and_nonce() {
        let key = FormKey::from_bytes([7; 32]);
        let tag = key.sign_page("login", "nonce");
        assert!(key.verify_page("login", "nonce", &tag));
        assert!(!key.verify_page("account", "nonce", &tag));
        assert!(!key.verify_page("login", "other", &tag));
        assert!(!key.verify_page("loginn", "once", &tag));
        // A registration form's tag is never a page form's, nor the reverse.
        assert!(!key.verify(0, "nonce", &tag));
        assert!(!key.verify_page("", "nonce", &key.sign(0, "nonce")));
    }

    #[test]
    fn invite_ids_are_a_keyed_permutation_of_row_ids() {
        let ids = FormKey::from_bytes([7; 32]).invite_ids();
        let other = FormKey::from_bytes([8; 32]).invite_ids();
        for row in [0_i64, 1, 2, 1 << 32, (1 << 62) + 12_345, i64::MAX, -1] {
            let id = ids.public(row);
            assert_eq!(ids.row_id(&id), row);
            assert_ne!(other.public(row), id);
        }
        assert_ne!(ids.public(1), ids.public(2));
    }

    #[test]
    fn random_values_are_base64url_of_the_requested_size() {
        let s = random_base64url(18).unwrap();
        assert_eq!(s.len(), 24);
        assert!(is_base64url(&s));
        assert_ne!(s, random_base64url(18).unwrap());
    }

    #[test]
    fn digests_compare_by_content() {
        assert!(SecretDigest::of("a").matches(&SecretDigest::of("a")));
        assert!(!SecretDigest::of("a").matches(&SecretDigest::of("b")));
    }
}
