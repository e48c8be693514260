//! Reading request bodies with a hard size limit, so every surface can answer
//! an oversized body in its own format (HTML page or JSON error).

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_util::StreamExt;

/// How long a client may take to send a body once its head has arrived.
/// actix-web bounds only the head (`client_request_timeout`); without this, a
/// body shorter than its Content-Length holds the request open for ever.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit.
    TooLarge,
    /// The connection failed or the encoding was broken.
    Broken(String),
}

/// Reads the whole body, refusing more than `limit` bytes (checked against
/// Content-Length first, then while streaming) and bodies that have not
/// arrived within [`BODY_DEADLINE`].
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_DEADLINE, read)
        .await
        .unwrap_or_else(|_| {
            Err(BodyError::Broken(format!(
                "the request body did not arrive within {} seconds",
                BODY_DEADLINE.as_secs()
            )))
        })
}

/// The essence of the request's Content-Type (`application/json`), lower-cased.
pub fn content_type(req: &HttpRequest) -> Option<String> {
    let v = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}
