//! Who is asking: API keys (Bearer or `?key=`) and identity cookies. Shared by
//! every surface; each maps these errors into its own answer.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpRequest;
use chrono::Utc;

use super::AppState;
use crate::config::HostConfig;
use crate::domain::{ApiKey, IdentityToken};
use crate::query::{QueryError, QueryParams};
use crate::store::{AccountRecord, KeyRecord, StoreError};

/// The name of the sign-in cookie.
pub const IDENTITY_COOKIE: &str = "identity";

/// A session is written back as used at most this often, so checks stay reads;
/// more often when the idle expiry is short (see [`signed_in`]).
const TOUCH_EVERY_SECS: i64 = 60;

/// Why no usable API key came with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// None was sent; the text says how to send one.
    Missing(&'static str),
    /// One was sent but cannot be a key, or the request is ambiguous.
    Malformed(String),
    /// The request is malformed in a way unrelated to the key itself.
    BadRequest(String),
    /// A well-formed key that is wrong, unknown or deleted.
    Invalid,
    /// The store failed.
    Store(StoreError),
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

/// Checks a key against the store: its record when the secret matches.
pub async fn verify_key(state: &AppState, key: &ApiKey) -> Result<KeyRecord, KeyError> {
    let record = match state.store.find_key(&key.id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(KeyError::Invalid),
        Err(e) => return Err(KeyError::Store(e)),
    };
    if record.secret_digest.matches(&key.secret.digest()) {
        Ok(record)
    } else {
        Err(KeyError::Invalid)
    }
}

/// The configured host a request is addressed to: the one whose public URL's
/// authority (or whose name) is the request's `Host` header; on a server with
/// a single host, that host. Only the `Host` header counts, never
/// `X-Forwarded-Host` or `Forwarded`: a client can add those to a request that
/// a proxy passes on, and pick another host's accounts with them.
pub fn addressed_host<'s>(state: &'s AppState, req: &HttpRequest) -> Option<&'s HostConfig> {
    let mut all = state.config.hosts.values();
    if let (Some(only), None) = (all.next(), all.next()) {
        return Some(only);
    }
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))?
        .to_ascii_lowercase();
    state
        .config
        .hosts
        .values()
        .find(|h| h.public_url.authority() == raw || h.name.as_str() == raw)
}

/// The identity token in the request's cookie, if it has a well-formed one.
pub fn identity_token(req: &HttpRequest) -> Option<IdentityToken> {
    req.cookie(IDENTITY_COOKIE)
        .and_then(|c| IdentityToken::parse(c.value()).ok())
}

/// The signed-in account of a request, if its identity cookie is valid and has
/// not gone unused for longer than `session_idle_expiry`.
pub async fn signed_in(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<AccountRecord>, StoreError> {
    let Some(token) = identity_token(req) else {
        return Ok(None);
    };
    let digest = token.digest();
    let session = match state.store.find_session(digest).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let now = Utc::now();
    let idle = chrono::Duration::from_std(state.config.session_idle_expiry)
        .unwrap_or(chrono::Duration::days(30));
    if now - session.last_used_at > idle {
        // Expired sessions are removed so they cannot come back.
        let _ = state.store.delete_session(digest).await;
        return Ok(None);
    }
    // Throttled writes record use up to `touch_every` late; a tenth of the idle
    // expiry keeps a session in steady use from expiring even when that is short.
    let touch_every = (idle / 10).min(chrono::Duration::seconds(TOUCH_EVERY_SECS));
    if now - session.last_used_at >= touch_every {
        state.store.touch_session(digest, now).await?;
    }
    Ok(Some(session.account))
}

/// The `identity` cookie for a new session on `host`.
pub fn identity_cookie<'a>(token: &IdentityToken, host: &HostConfig) -> Cookie<'a> {
    // The server ends idle sessions itself; the browser keeps the cookie for
    // as long as browsers allow (400 days), so a session in steady use is not
    // cut off at a Max-Age counted from sign-in.
    let max_age = actix_web::cookie::time::Duration::days(400);
    Cookie::build(IDENTITY_COOKIE, token.expose().to_owned())
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(host.public_url.is_https())
        .max_age(max_age)
        .finish()
}

/// A cookie that removes the `identity` cookie from the browser.
pub fn clear_identity_cookie<'a>() -> Cookie<'a> {
    let mut c = Cookie::build(IDENTITY_COOKIE, "")
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .finish();
    c.make_removal();
    c
}
