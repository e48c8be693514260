//! `QueryParams::parse`, `.get` and `query::flag`: never panic on any query
//! string, and a query is accepted exactly when each of its `&`-separated parts
//! is (the parser judges parts on their own, so no part can hide another's
//! error).
#![no_main]

use invite_server::query::{flag, QueryParams};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let parsed = QueryParams::parse(text);
    let parts_ok = text
        .split('&')
        .filter(|p| !p.is_empty())
        .all(|p| QueryParams::parse(p).is_ok());
    assert_eq!(parsed.is_ok(), parts_ok, "{text:?}");
    let Ok(params) = parsed else {
        return;
    };
    for name in ["key", "redirect", "", " ", "k\u{e9}y"] {
        if let Ok(value) = params.get(name) {
            let _ = flag(value, name);
        }
    }
    // A query repeated is the same parameters twice: any name found once
    // before is now refused as given more than once.
    let doubled = QueryParams::parse(&format!("{text}&{text}")).expect("valid parts stay valid");
    for name in ["key", "redirect"] {
        if matches!(params.get(name), Ok(Some(_))) {
            assert!(doubled.get(name).is_err(), "{text:?}");
        }
    }
});
