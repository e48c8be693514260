//! One log line per request, with every secret left out: query values other than
//! known-harmless ones are redacted, paths that carry tokens are logged by their
//! route pattern, and no header is logged at all.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// Query parameters whose values are never secret and help when reading logs.
const HARMLESS: &[&str] = &["redirect"];
/// Query parameters whose name (not value) may be logged.
const KNOWN: &[&str] = &["key", "redirect"];

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
                _ if HARMLESS.contains(&name) => part.to_owned(),
                Some(_) if KNOWN.contains(&name) => format!("{name}=[redacted]"),
                _ => "[redacted]".to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Middleware: logs method, route, redacted query, status and latency. The
/// line is built only when it will be written, so a quiet server (`warn`)
/// pays nothing per request but the clock.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let res = next.call(req).await?;
    let failed = res.status().is_server_error();
    let wanted = if failed {
        tracing::enabled!(tracing::Level::WARN)
    } else {
        tracing::enabled!(tracing::Level::INFO)
    };
    if wanted {
        let req = res.request();
        let method = req.method();
        // The pattern (`/api/invite/{id}`) rather than the path keeps tokens out.
        let route = req
            .match_pattern()
            .unwrap_or_else(|| "<no route>".to_owned());
        let query = redact_query(req.query_string());
        let status = res.status().as_u16();
        let micros = start.elapsed().as_micros() as u64;
        if failed {
            tracing::warn!(%method, %route, %query, status, micros, "request");
        } else {
            tracing::info!(%method, %route, %query, status, micros, "request");
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
        assert!(!redact_query("k%65y=secret").contains("secret"));
        assert_eq!(redact_query("AbCdEfGhIjKlMnOpQrStUvWx="), "[redacted]");
    }
}
