//! `ApiKey::parse` (and `KeyId::parse`, `KeySecret::parse`): never panics, and
//! whatever it accepts prints back exactly as it was written.
#![no_main]

use invite_server::domain::{ApiKey, KeyId, KeySecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(key) = ApiKey::parse(text) {
        assert_eq!(key.expose(), text);
        let (id, secret) = text.split_once('/').expect("an accepted key has a `/`");
        assert_eq!(KeyId::parse(id).as_ref(), Ok(&key.id));
        assert_eq!(KeySecret::parse(secret).as_ref(), Ok(&key.secret));
    }
    let _ = KeyId::parse(text);
    let _ = KeySecret::parse(text);
});
