//! `InviteToken::parse` and `IdentityToken::parse`: never panic, and accept
//! only 16 to 128 base64url characters, kept unchanged.
#![no_main]

use invite_server::domain::{IdentityToken, InviteToken};
use libfuzzer_sys::fuzz_target;

fn well_formed(text: &str) -> bool {
    (16..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fuzz_target!(|text: &str| {
    match InviteToken::parse(text) {
        Ok(t) => {
            assert!(well_formed(text));
            assert_eq!(t.expose(), text);
            assert_eq!(t.digest(), InviteToken::parse(text).unwrap().digest());
        }
        Err(_) => assert!(!well_formed(text)),
    }
    match IdentityToken::parse(text) {
        Ok(t) => assert_eq!(t.expose(), text),
        Err(_) => assert!(!well_formed(text)),
    }
});
