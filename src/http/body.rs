//! Request bodies, read for every request by one middleware before any handler
//! runs, with a hard size limit and a deadline. Handlers get the outcome as a
//! [`Body`], so every surface answers a bad body in its own format (text, JSON
//! or an HTML page), and none can await anything (the store, a hash) while a
//! body is still unread: actix-http ends a connection whose body framing
//! breaks while its handler waits elsewhere, without any answer.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;

use super::MAX_BODY;

/// How long a client may take to send a body once its head has arrived.
/// actix-web bounds only the head (`client_request_timeout`); without this, a
/// body shorter than its Content-Length holds the request open for ever.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit.
    TooLarge,
    /// The connection failed or the encoding was broken.
    Broken(String),
}

/// The request's body as the middleware read it: the bytes, or why not.
#[derive(Debug, Clone)]
pub struct Body(Result<Bytes, BodyError>);

impl Body {
    /// The bytes, or why they could not be read.
    pub fn bytes(self) -> Result<Bytes, BodyError> {
        self.0
    }
}

impl FromRequest for Body {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only a route outside the App that registers `read_bodies` finds
        // nothing; it must not take a missing body for an empty one.
        let body = req.extensions().get::<Body>().cloned().unwrap_or_else(|| {
            Body(Err(BodyError::Broken(
                "the server did not read the request body".into(),
            )))
        });
        ready(Ok(body))
    }
}

/// Middleware: reads the whole body of every request (see [`read_limited`])
/// and leaves the outcome for the handler as a [`Body`].
pub async fn read_bodies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let payload = req.take_payload();
    let body = read_limited(req.headers(), payload, MAX_BODY).await;
    req.extensions_mut().insert(Body(body));
    next.call(req).await
}

/// Reads the whole body, refusing more than `limit` bytes (checked against
/// Content-Length first, then while streaming) and bodies that have not
/// arrived within [`BODY_DEADLINE`].
async fn read_limited(
    headers: &HeaderMap,
    payload: Payload,
    limit: usize,
) -> Result<Bytes, BodyError> {
    // Requests without a body (most GETs) skip the timer.
    let mut payload = match payload {
        Payload::None => return Ok(Bytes::new()),
        some => some,
    };
    let declared = headers
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
