//! `AccountName::parse`: never panics, and what it accepts obeys the rule and
//! is a fixed point (parsing the normalised name gives it back).
#![no_main]

use invite_server::domain::AccountName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(name) = AccountName::parse(text) {
        let s = name.as_str();
        assert!((1..=64).contains(&s.len()));
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        assert!(!s.starts_with('.') && !s.ends_with('.'));
        assert_eq!(AccountName::parse(s).unwrap(), name);
    }
});
