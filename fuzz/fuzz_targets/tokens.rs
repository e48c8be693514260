//! `InviteToken::parse` and `IdentityToken::parse`: never panic; an invite
//! token is accepted only as 32 base64url characters carrying an id at or above
//! the schema 1 limit, or as a 24-character schema 1 token, and is kept
//! unchanged; an identity token is 16 to 128 base64url characters.
#![no_main]

use base64::Engine;
use invite_server::domain::{IdentityToken, InviteLookup, InviteToken, LEGACY_INVITE_ID_LIMIT};
use libfuzzer_sys::fuzz_target;

fn base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The id a current-format token carries, decoded independently of the parser.
fn carried_id(text: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    (text.len() == 32 && bytes.len() == 24)
        .then(|| i64::from_be_bytes(bytes[..8].try_into().unwrap()))
}

fuzz_target!(|text: &str| {
    let current = carried_id(text).filter(|id| *id >= LEGACY_INVITE_ID_LIMIT);
    let legacy = text.len() == 24 && base64url(text);
    match InviteToken::parse(text) {
        Ok(t) => {
            assert_eq!(t.expose(), text);
            match t.lookup() {
                InviteLookup::ById { id, .. } => assert_eq!(Some(id), current),
                InviteLookup::Legacy(_) => assert!(legacy),
            }
            assert_eq!(t.lookup(), InviteToken::parse(text).unwrap().lookup());
        }
        Err(_) => assert!(current.is_none() && !legacy),
    }
    let identity = (16..=128).contains(&text.len()) && base64url(text);
    match IdentityToken::parse(text) {
        Ok(t) => assert_eq!(t.expose(), text),
        Err(_) => assert!(!identity),
    }
});
