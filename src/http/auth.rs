//! Who is asking: API keys (Bearer or `?key=`) and identity cookies. Shared by
//! every surface; each maps these errors into its own answer. Whether a key
//! is good is not decided here but in [`crate::service::keys::verify`].

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpRequest;

use super::AppState;
use crate::config::HostConfig;
use crate::domain::{ApiKey, IdentityToken};
use crate::query::{QueryError, QueryParams};
use crate::service::sessions::{self, SessionError};
use crate::store::{AccountRecord, StoreError};

/// The name of the sign-in cookie on http hosts.
pub const IDENTITY_COOKIE: &str = "identity";
/// The name of the sign-in cookie on https hosts. Browsers accept a
/// `__Host-` cookie only if it is Secure, host-only and on `/`, so no sibling
/// subdomain (and no plain-http page) can plant or overwrite it.
pub const SECURE_IDENTITY_COOKIE: &str = "__Host-identity";

/// The sign-in cookie's name on `host`; the other name is never read there.
pub fn identity_cookie_name(host: &HostConfig) -> &'static str {
    if host.public_url.is_https() {
        SECURE_IDENTITY_COOKIE
    } else {
        IDENTITY_COOKIE
    }
}

/// Why no usable API key came with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// None was sent; the text says how to send one.
    Missing(&'static str),
    /// One was sent but cannot be a key, or the request is ambiguous.
    Malformed(String),
    /// The request is malformed in a way unrelated to the key itself.
    BadRequest(String),
}

impl From<QueryError> for KeyError {
    fn from(e: QueryError) -> Self {
        Self::BadRequest(e.0)
    }
}

/// The text of a `Bearer` Authorization header, if one was sent. Other schemes
/// carry no key for us and count as none; spaces around the key are tolerated.
pub fn bearer(req: &HttpRequest) -> Result<Option<&str>, KeyError> {
    let mut headers = req.headers().get_all(header::AUTHORIZATION);
    let value = match (headers.next(), headers.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value,
        (Some(_), Some(_)) => {
            return Err(KeyError::BadRequest(
                "more than one Authorization header".into(),
            ))
        }
    };
    bearer_value(value)
}

fn bearer_value(value: &HeaderValue) -> Result<Option<&str>, KeyError> {
    let trimmed = value.as_bytes().trim_ascii_start();
    let is_bearer = trimmed.len() >= 6
        && trimmed[..6].eq_ignore_ascii_case(b"bearer")
        && trimmed.get(6).is_none_or(|b| b.is_ascii_whitespace());
    // Only a Bearer header is ours to judge; another scheme, even with
    // non-ASCII bytes, is simply not a key and must not hide a `?key=`.
    if !is_bearer {
        return Ok(None);
    }
    let text = value
        .to_str()
        .map_err(|_| KeyError::Malformed("the Authorization header is not ASCII text".into()))?;
    // `is_bearer` checked the scheme and the whitespace after it; the rest,
    // trimmed of any whitespace, is the key.
    let rest = text.trim_start().get(6..).unwrap_or("");
    match rest.trim() {
        "" => Err(KeyError::Missing(
            "the Authorization header has no key after Bearer",
        )),
        key => Ok(Some(key)),
    }
}

/// The API key of a request, from `Authorization: Bearer` or, when `query` is
/// given, `?key=`; both may be sent if they agree.
pub fn api_key(req: &HttpRequest, query: Option<&QueryParams>) -> Result<ApiKey, KeyError> {
    let from_header = bearer(req)?;
    let from_query = match query.map(|q| q.get("key")).transpose()?.flatten() {
        None | Some(None) | Some(Some("")) => None,
        Some(Some(k)) => Some(k),
    };
    let text = match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => {
            return Err(KeyError::BadRequest(
                "the Authorization header and ?key= name different keys; send one".into(),
            ))
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => {
            return Err(KeyError::Missing(
                "send the key as ?key=<id>/<secret> or as Authorization: Bearer <id>/<secret>",
            ))
        }
    };
    ApiKey::parse(text).map_err(|e| KeyError::Malformed(e.0))
}

/// The configured host a request is addressed to: the one whose public URL's
/// authority (or whose name) is the request's authority; on a server with a
/// single host, that host. The authority is the request target's when it is
/// in absolute form (`GET http://b.test/ HTTP/1.1`), which RFC 9112 (3.2.2)
/// says overrides `Host`, and the `Host` header otherwise. Never
/// `X-Forwarded-Host` or `Forwarded`: a client can add those to a request that
/// a proxy passes on, and pick another host's accounts with them.
pub fn addressed_host<'s>(state: &'s AppState, req: &HttpRequest) -> Option<&'s HostConfig> {
    let mut all = state.config.hosts.values();
    if let (Some(only), None) = (all.next(), all.next()) {
        return Some(only);
    }
    let named = match req.uri().host() {
        Some(target) => host_name(target),
        None => host_name(req.headers().get(header::HOST)?.to_str().ok()?),
    };
    state
        .config
        .hosts
        .values()
        .find(|h| h.public_url.host_name() == named || h.name.as_str() == named)
}

/// The host name an authority (`Host` header or absolute-form target) names:
/// lower case, without port or trailing dot. Configured hosts never share a
/// host name (config refuses it), so the port is not needed to tell them
/// apart, and nginx's `$host` sends none.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    let host = match authority.strip_prefix('[') {
        // An IPv6 literal keeps its brackets, as a public URL's host does.
        Some(rest) => rest
            .split_once(']')
            .map_or(authority, |(ip, _)| &authority[..ip.len() + 2]),
        None => authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(host, _)| host),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The identity token in the request's cookie, if it has a well-formed one:
/// the cookie of the host the request is addressed to (`__Host-identity` on
/// https, `identity` on http), and none when it is addressed to no host.
pub fn identity_token(state: &AppState, req: &HttpRequest) -> Option<IdentityToken> {
    let host = addressed_host(state, req)?;
    let cookie = request_cookie(req, identity_cookie_name(host))?;
    IdentityToken::parse(cookie.value()).ok()
}

/// The request's first cookie named `name`, exactly as
/// `HttpRequest::cookie` finds it (every `Cookie` header, `;`-separated,
/// percent-decoded by the `cookie` crate, unparseable ones skipped, none at
/// all when a header is not UTF-8), but borrowed from the headers: actix
/// copies every cookie of the request into a list first, several
/// allocations on every forward-auth check.
fn request_cookie<'r>(req: &'r HttpRequest, name: &str) -> Option<Cookie<'r>> {
    let mut found = None;
    for value in req.headers().get_all(header::COOKIE) {
        let text = std::str::from_utf8(value.as_bytes()).ok()?;
        if found.is_none() {
            found = text
                .split(';')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                // Without a `%` decoding changes nothing, and skipping it
                // halves the parse.
                .filter_map(|part| match part.contains('%') {
                    true => Cookie::parse_encoded(part).ok(),
                    false => Cookie::parse(part).ok(),
                })
                .find(|cookie| cookie.name() == name);
        }
    }
    found
}

/// The signed-in account of a request, if its identity cookie is valid and has
/// not gone unused for longer than `session_idle_expiry` (decided by
/// [`sessions::check`]); `Err` only when the store failed.
pub async fn signed_in(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<AccountRecord>, StoreError> {
    let Some(token) = identity_token(state, req) else {
        return Ok(None);
    };
    match sessions::check(&*state.store, &token, state.config.session_idle_expiry).await {
        Ok(account) => Ok(Some(account)),
        Err(SessionError::Unknown | SessionError::Expired) => Ok(None),
        Err(SessionError::Store(e)) => Err(e),
    }
}

/// The sign-in cookie for a new session on `host`.
pub fn identity_cookie<'a>(token: &IdentityToken, host: &HostConfig) -> Cookie<'a> {
    // The server ends idle sessions itself; the browser keeps the cookie for
    // as long as browsers allow (400 days), so a session in steady use is not
    // cut off at a Max-Age counted from sign-in.
    let max_age = actix_web::cookie::time::Duration::days(400);
    let mut cookie = session_cookie(identity_cookie_name(host), token.expose().to_owned(), host);
    cookie.set_max_age(max_age);
    cookie
}

/// A cookie that removes the sign-in cookie of `host` from the browser.
pub fn clear_identity_cookie<'a>(host: &HostConfig) -> Cookie<'a> {
    let mut c = session_cookie(identity_cookie_name(host), String::new(), host);
    c.make_removal();
    c
}

/// The attributes every sign-in cookie has: script cannot read it, no other
/// site's request carries it, the whole host sees it, and on https it is
/// Secure (without a Domain, which `__Host-` requires).
fn session_cookie<'a>(name: &'static str, value: String, host: &HostConfig) -> Cookie<'a> {
    Cookie::build(name, value)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(host.public_url.is_https())
        .finish()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderValue, COOKIE};
    use actix_web::test::TestRequest;

    use super::{host_name, request_cookie};

    #[test]
    fn a_cookie_is_found_exactly_as_actix_finds_it() {
        let cases: &[&[&[u8]]] = &[
            &[b"identity=abc"],
            &[b"a=1; identity=abc; identity=def"],
            &[b"a=1", b" ; identity=x%2Dy ;"],
            &[b"=nameless; identity=abc"],
            &[b"identity=%FF; identity=abc"],
            // A header that is not UTF-8 hides every cookie, before or after it.
            &[b"identity=abc", b"b=\xff"],
            &[b"b=\xff", b"identity=abc"],
            &[b"identity"],
            &[b"identity=first", b"identity=second"],
            &[b"other=1"],
            &[],
        ];
        for headers in cases {
            let mut req = TestRequest::default();
            for h in *headers {
                req = req.append_header((COOKIE, HeaderValue::from_bytes(h).unwrap()));
            }
            let req = req.to_http_request();
            let ours = request_cookie(&req, "identity").map(|c| c.value().to_owned());
            let actix = req.cookie("identity").map(|c| c.value().to_owned());
            assert_eq!(ours, actix, "{headers:?}");
        }
    }

    #[test]
    fn a_host_header_names_its_host_without_port_case_or_trailing_dot() {
        for (authority, host) in [
            ("Chat.Example.org", "chat.example.org"),
            ("chat.example.org.:443", "chat.example.org"),
            ("chat.example.org:8443", "chat.example.org"),
            ("127.0.0.1:5280", "127.0.0.1"),
            ("[::1]:8443", "[::1]"),
            ("[::1]", "[::1]"),
            (" a.test ", "a.test"),
        ] {
            assert_eq!(host_name(authority), host, "{authority}");
        }
    }
}
