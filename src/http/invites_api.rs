//! `/invites_api`: Prosody mod_invites_api's minting endpoint, compatible with
//! its clients (bookmark with `&redirect=true`, `?key=`, Bearer), and answering
//! the cases it gets wrong (Bearer without a query string, POST, bad input).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::auth::{self, KeyError};
use super::body::{Body, BodyError};
use super::{AppState, MAX_BODY};
use crate::domain::{InviteOptions, KeyScope, RawInviteOptions};
use crate::query::{self, QueryParams};
use crate::service::keys::{self, KeyRefusal};
use crate::service::{self, Minter, Outage};

/// The methods this endpoint allows, as sent in `Allow` and CORS headers.
const ALLOWED_METHODS: &str = "OPTIONS, GET, POST";

/// The resource with its methods, its 405 fallback and its CORS headers.
pub fn resource() -> impl actix_web::dev::HttpServiceFactory {
    web::resource("/invites_api")
        .route(web::get().to(mint))
        .route(web::post().to(mint))
        .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
        .default_service(web::to(method_not_allowed))
        .wrap(from_fn(cors))
}

/// Everything that can go wrong on this endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The request itself is malformed.
    #[error("Bad request: {0}")]
    BadRequest(String),
    /// No key was presented.
    #[error("No API key: {0}")]
    NoCredentials(&'static str),
    /// A key was presented but does not allow minting.
    #[error("Forbidden: {0}")]
    Forbidden(String),
    /// The key's mint rate is used up; retry after the seconds given.
    #[error("Too many requests: this key's mint rate is used up; try again in {0} s")]
    RateLimited(u64),
    /// The method is not one this endpoint serves.
    #[error("Method not allowed: use GET or POST")]
    MethodNotAllowed,
    /// The body is over the limit (the endpoint reads none, but bounds it).
    #[error("Payload too large: send at most {MAX_BODY} bytes")]
    TooLarge,
    /// The store is briefly unavailable; nothing was minted.
    #[error("Service unavailable: the invite could not be stored, try again")]
    Unavailable,
    /// The store failed in a way trying again will not mend; it was logged.
    #[error("Internal server error: the invite could not be stored; the failure was logged")]
    Internal,
}

impl ResponseError for MintError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoCredentials(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.content_type("text/plain; charset=utf-8");
        match self {
            Self::NoCredentials(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"invites_api\""));
            }
            Self::MethodNotAllowed => {
                res.insert_header((header::ALLOW, ALLOWED_METHODS));
            }
            Self::Unavailable => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::RateLimited(secs) => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            Self::BadRequest(_) | Self::Forbidden(_) | Self::TooLarge | Self::Internal => {}
        }
        res.body(format!("{self}\n"))
    }
}

impl From<BodyError> for MintError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Self::TooLarge,
            BodyError::Broken(why) => Self::BadRequest(format!("unreadable body: {why}")),
        }
    }
}

impl From<query::QueryError> for MintError {
    fn from(e: query::QueryError) -> Self {
        Self::BadRequest(e.0)
    }
}

/// `GET`/`POST /invites_api`: mints one invite for the key's host.
#[utoipa::path(
    method(get, post), path = "/invites_api", tag = "prosody",
    params(
        ("key" = Option<String>, Query, description = "The API key, if not sent as Bearer"),
        ("redirect" = Option<String>, Query,
         description = "`true`: answer 303 to the invite page instead of 201"),
        ("ttl" = Option<String>, Query, description = "How long the invite lasts, e.g. `2d`"),
        ("uses" = Option<String>, Query, description = "How many accounts it may register"),
        ("note" = Option<String>, Query, description = "A note for the operator"),
        ("name" = Option<String>, Query, description = "The one name it may register"),
    ),
    responses(
        (status = 201, description = "Minted; the link is in Location", headers(
            ("Location" = String, description = "The invite page's link"),
            ("Invite-Id" = String, description = "The invite's public id"))),
        (status = 303, description = "Minted, with `redirect=true`: go to the invite page",
         headers(
            ("Location" = String, description = "The invite page's link"),
            ("Invite-Id" = String, description = "The invite's public id"))),
        (status = 400, description = "A malformed query, option or Authorization header",
         body = String, content_type = "text/plain; charset=utf-8"),
        (status = 401, description = "No API key", body = String,
         content_type = "text/plain; charset=utf-8",
         headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"invites_api\"`"))),
        (status = 403, description = "The key is malformed, wrong, deleted or expired, or \
                                      its host is no longer served",
         body = String, content_type = "text/plain; charset=utf-8"),
        (status = 413, description = "The body is over the limit", body = String,
         content_type = "text/plain; charset=utf-8"),
        (status = 429, description = "The key's mint rate is used up", body = String,
         content_type = "text/plain; charset=utf-8",
         headers(("Retry-After" = u64, description = "Seconds until a mint is allowed"))),
    ),
    security(("bearer_key" = []), ("key_query" = []))
)]
async fn mint(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MintError> {
    // Everything is in the query or the headers; a body is ignored, but one
    // that breaks makes the request a bad one.
    body.bytes()?;
    let query = QueryParams::parse(req.query_string())?;
    let redirect = query::flag(query.get("redirect")?, "redirect")?;
    let key = auth::api_key(&req, Some(&query))?;
    let (key, host) = keys::authorize(&*state.store, &state.config, &key, KeyScope::Mint).await?;
    let raw = RawInviteOptions {
        ttl: option(&query, "ttl")?,
        uses: option(&query, "uses")?,
        note: option(&query, "note")?,
        name: option(&query, "name")?,
    };
    let options = InviteOptions::validate(&raw, host).map_err(|e| MintError::BadRequest(e.0))?;
    state
        .mint_limiter
        .check(&key.record)
        .map_err(MintError::RateLimited)?;
    let minted = service::mint_invite(&*state.store, host, Minter::Key(&key.record), &options)
        .await
        .map_err(|e| keys::refusal_at_commit(&key.record, e))?;
    let invite_id = state.invite_ids.public(minted.row_id);
    let status = if redirect {
        StatusCode::SEE_OTHER
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status)
        .insert_header((header::LOCATION, minted.url))
        .insert_header(("Invite-Id", invite_id.as_str()))
        .finish())
}

/// An invite option from the query; written without a value, it is empty
/// (and so refused by validation, not silently ignored).
fn option(query: &QueryParams, name: &str) -> Result<Option<String>, MintError> {
    Ok(query.get(name)?.map(|v| v.unwrap_or("").to_owned()))
}

impl From<KeyError> for MintError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Missing(why) => Self::NoCredentials(why),
            KeyError::Malformed(why) => Self::Forbidden(format!("malformed key: {why}")),
            KeyError::BadRequest(why) => Self::BadRequest(why),
        }
    }
}

impl From<KeyRefusal> for MintError {
    fn from(e: KeyRefusal) -> Self {
        match e {
            KeyRefusal::Invalid => {
                Self::Forbidden("the key is not valid (wrong or deleted)".into())
            }
            KeyRefusal::Expired => Self::Forbidden("the key has expired".into()),
            // Every key may mint; worded all the same.
            KeyRefusal::Scope => Self::Forbidden("the key may not mint invites".into()),
            KeyRefusal::HostGone(host) => {
                Self::Forbidden(format!("this key's host {host} is no longer served here"))
            }
            KeyRefusal::Store(e) => match Outage::of_store(&e, "minting on /invites_api") {
                Outage::Transient => Self::Unavailable,
                Outage::Permanent => Self::Internal,
            },
        }
    }
}

/// `OPTIONS /invites_api`: a CORS preflight; needs no credentials.
#[utoipa::path(
    options, path = "/invites_api", tag = "prosody",
    responses((status = 204, description = "The CORS preflight's answer",
               headers(("Allow" = String, description = "`OPTIONS, GET, POST`"))))
)]
async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ALLOW, ALLOWED_METHODS))
        .finish()
}

async fn method_not_allowed() -> Result<HttpResponse, MintError> {
    Err(MintError::MethodNotAllowed)
}

/// Adds the CORS headers to every answer of this endpoint, errors included, so
/// a browser client can read why a request failed. actix-cors sends the method
/// and header lists only on preflights and nothing without an Origin, which
/// Prosody-compatible clients do not expect.
async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| !o.is_empty() && o.as_bytes() != b"null")
        .cloned();
    let mut res = next.call(req).await?;
    let h = res.headers_mut();
    match origin {
        Some(o) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    // So a browser client can read the new invite's link and id.
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Invite-Id"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("7200"),
    );
    Ok(res)
}
