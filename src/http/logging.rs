//! One log line per request, with every secret left out: path segments and
//! query values other than known-harmless ones are redacted, and no header is
//! logged. Each request gets an id, logged and sent back as `X-Request-Id`, so
//! a client's report can be matched to its line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The response header that carries the request's id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Query parameters whose values are never secret and help when reading logs.
const HARMLESS: &[&str] = &["redirect"];
/// Query parameters whose name (not value) may be logged.
const KNOWN: &[&str] = &["key", "redirect"];

/// Path segments that may be logged: the literal segments of the route table
/// (see `http::routes`) and the files browsers ask for by themselves. Any
/// other segment might be a token (`/api/invite/{id}`, or a token pasted into
/// a mistyped path), so it becomes `[redacted]`.
const KNOWN_SEGMENTS: &[&str] = &[
    "account",
    "accounts",
    "admin",
    "api",
    "auth",
    "check",
    "favicon.ico",
    "health",
    "invite",
    "invites",
    "invites_api",
    "login",
    "logout",
    "password",
    "robots.txt",
    "sessions",
    "static",
    "style.css",
];

/// The query string as it may be logged: known parameters by name, with the
/// value only for harmless ones; anything else (an unknown name might itself
/// be a token, as in `/invite?TOKEN=`) becomes `[redacted]` whole.
pub fn redact_query(raw: &str) -> String {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (part, None),
            };
            match value {
                // A harmless name with a value that is not a flag word could
                // carry anything a client put there (`redirect=x%26key%3D..`).
                None if HARMLESS.contains(&name) => part.to_owned(),
                Some(v)
                    if HARMLESS.contains(&name)
                        && crate::query::flag(Some(Some(v)), name).is_ok() =>
                {
                    part.to_owned()
                }
                Some(_) if KNOWN.contains(&name) => format!("{name}=[redacted]"),
                _ => "[redacted]".to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The path as it may be logged: segments of the route table as they are,
/// any other segment `[redacted]`, so a 404 shows its shape but no token.
pub fn redact_path(raw: &str) -> String {
    raw.split('/')
        .map(|segment| {
            if segment.is_empty() || KNOWN_SEGMENTS.contains(&segment) {
                segment
            } else {
                "[redacted]"
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A new request id: 64 random bits in hex. Not a secret, so the fast
/// thread-local generator serves, not the OS RNG.
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Middleware: gives the request an id (returned as `X-Request-Id`, and on
/// every line logged while it runs), then logs id, client address, method,
/// redacted path and query, status and latency. The line is built only when
/// it will be written, so a quiet server (`warn`) pays nothing per request
/// but the clock and the id.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = new_request_id();
    let span = tracing::info_span!("request", id = %id);
    let mut res = next.call(req).instrument(span).await?;
    // The id is hex, always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    crate::metrics::request(res.request(), res.status(), start.elapsed());
    let failed = res.status().is_server_error();
    let wanted = if failed {
        tracing::enabled!(tracing::Level::WARN)
    } else {
        tracing::enabled!(tracing::Level::INFO)
    };
    if wanted {
        let req = res.request();
        let method = req.method();
        let trusted = req
            .app_data::<actix_web::web::Data<super::AppState>>()
            .map(|state| &state.config.trusted_proxies);
        let client = trusted
            .and_then(|t| super::client_ip(req, t))
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let path = redact_path(req.path());
        let query = redact_query(req.query_string());
        let status = res.status().as_u16();
        let micros = start.elapsed().as_micros() as u64;
        if failed {
            tracing::warn!(%id, %client, %method, %path, %query, status, micros, "request");
        } else {
            tracing::info!(%id, %client, %method, %path, %query, status, micros, "request");
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_queries_are_redacted() {
        assert_eq!(
            redact_query("key=abcdefghijkl/secretsecret&redirect=true"),
            "key=[redacted]&redirect=true"
        );
        assert_eq!(redact_query("c-vhJjyB5Pb4HpAf"), "[redacted]");
        assert_eq!(redact_query("redirect"), "redirect");
        assert_eq!(redact_query("redirect=TRUE"), "redirect=TRUE");
        assert_eq!(
            redact_query("redirect=x%26key%3Dsecretsecret"),
            "redirect=[redacted]"
        );
        assert!(!redact_query("k%65y=secret").contains("secret"));
        assert_eq!(redact_query("AbCdEfGhIjKlMnOpQrStUvWx="), "[redacted]");
    }

    #[test]
    fn path_segments_outside_the_route_table_are_redacted() {
        assert_eq!(
            redact_path("/api/invite/AbCdEfGhIjKlMnOpQrStUvWx"),
            "/api/invite/[redacted]"
        );
        assert_eq!(redact_path("/invites_api"), "/invites_api");
        assert_eq!(redact_path("/"), "/");
        assert_eq!(redact_path("/api/"), "/api/");
        assert_eq!(
            redact_path("/invite/AbCdEfGh/secret.php"),
            "/invite/[redacted]/[redacted]"
        );
        // Percent-encoded or otherwise disguised words are not trusted.
        assert_eq!(redact_path("/%61pi/invite"), "/[redacted]/invite");
    }
}
