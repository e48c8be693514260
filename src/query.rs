//! A strict parser for `application/x-www-form-urlencoded` query strings.
//!
//! `form_urlencoded` decodes leniently (bad escapes pass through, invalid UTF-8
//! becomes U+FFFD); here a malformed query is refused with a clear reason, so a
//! mangled key is reported as mangled rather than as a wrong key.

use percent_encoding::percent_decode_str;

/// A malformed query string; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// The parameters of a query string, in order. A parameter written without `=`
/// has no value (`?redirect`), which differs from an empty one (`?redirect=`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryParams(Vec<(String, Option<String>)>);

impl QueryParams {
    /// Parses a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let mut params = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (decode(n)?, Some(decode(v)?)),
                None => (decode(part)?, None),
            };
            params.push((name, value));
        }
        Ok(Self(params))
    }

    /// The one value of `name`: `None` when absent, `Some(None)` when written
    /// without `=`; an error when given more than once.
    pub fn get(&self, name: &str) -> Result<Option<Option<&str>>, QueryError> {
        let mut found = self.0.iter().filter(|(n, _)| n == name);
        match (found.next(), found.next()) {
            (None, _) => Ok(None),
            (Some((_, v)), None) => Ok(Some(v.as_deref())),
            (Some(_), Some(_)) => Err(QueryError(format!(
                "the query parameter `{name}` is given more than once"
            ))),
        }
    }
}

fn decode(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(QueryError(
                "the query string has a `%` not followed by two hex digits".into(),
            ));
        }
    }
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| QueryError("the query string does not decode to UTF-8 text".into()))
}

/// Parses a yes/no flag such as `redirect`: present without a value, empty,
/// `true`, `1`, `yes` or `on` mean yes; `false`, `0`, `no`, `off` mean no.
pub fn flag(value: Option<Option<&str>>, name: &str) -> Result<bool, QueryError> {
    match value {
        None => Ok(false),
        Some(None) => Ok(true),
        Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(QueryError(format!(
                "`{name}` must be true or false (or 1/0, yes/no, on/off)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_decode_and_duplicates_are_refused() {
        let q = QueryParams::parse("key=a%2Fb&redirect&x=1+2").unwrap();
        assert_eq!(q.get("key").unwrap(), Some(Some("a/b")));
        assert_eq!(q.get("redirect").unwrap(), Some(None));
        assert_eq!(q.get("x").unwrap(), Some(Some("1 2")));
        assert_eq!(q.get("nope").unwrap(), None);
        assert!(QueryParams::parse("a=1&a=2").unwrap().get("a").is_err());
    }

    #[test]
    fn malformed_escapes_and_invalid_utf8_are_refused() {
        for bad in ["key=%", "key=%zz", "key=%4", "key=%ff%fe", "%c3=x"] {
            assert!(QueryParams::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_accept_the_documented_words() {
        for yes in [
            Some(None),
            Some(Some("")),
            Some(Some("TRUE")),
            Some(Some("on")),
        ] {
            assert!(flag(yes, "r").unwrap());
        }
        for no in [None, Some(Some("0")), Some(Some("off"))] {
            assert!(!flag(no, "r").unwrap());
        }
        assert!(flag(Some(Some("maybe")), "r").is_err());
    }

    proptest! {
        #[test]
        fn parsing_any_query_never_panics(s in "\\PC*") {
            if let Ok(q) = QueryParams::parse(&s) {
                let _ = q.get("key");
            }
        }
    }
}
