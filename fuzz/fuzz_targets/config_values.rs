//! The configuration's value parsers: `ConfigDuration::parse` and
//! `PublicUrl::parse` never panic; accepted durations are within (0, 100 years]
//! and accepted URLs are http(s), without a trailing slash, and stable when
//! parsed again.
#![no_main]

use invite_server::config::{ConfigDuration, PublicUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(d) = ConfigDuration::parse(text) {
        let secs = d.0.as_secs();
        assert!(
            secs > 0 && secs <= 100 * 366 * 86_400,
            "{text:?} gave {secs}s"
        );
    }
    if let Ok(url) = PublicUrl::parse(text) {
        let s = url.as_str();
        assert!(s.starts_with("http://") || s.starts_with("https://"), "{s}");
        assert!(!s.ends_with('/'), "{s}");
        assert_eq!(PublicUrl::parse(s).as_ref().map(PublicUrl::as_str), Ok(s));
    }
});
