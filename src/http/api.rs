//! The JSON invitation API (`/api/invite`, `/api/auth/*`), after a chat
//! server's invitation API. Every error answer is `{"error", "message"}`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, KeyError};
use super::body::{self, Body, BodyError};
use super::{AppState, MAX_BODY};
use crate::config::HostConfig;
use crate::domain::{AccountName, InviteToken, Password};
use crate::passwords::HashError;
use crate::service::{self, Minter, Unusable};
use crate::store::{AccountRecord, StoreError};

/// The header `/api/auth/check` names the signed-in account in.
pub const USER_HEADER: &str = "X-Invite-Server-User";

/// The `/api` scope with its routes and JSON fallbacks.
pub fn scope() -> actix_web::Scope {
    web::scope("/api")
        .service(
            web::resource("/invite")
                .route(web::post().to(create_invite))
                .default_service(only("POST")),
        )
        .service(
            web::resource("/invite/{id}")
                .route(web::get().to(show_invite))
                .route(web::post().to(accept_invite))
                .default_service(only("GET, POST")),
        )
        .service(
            web::resource("/auth/login")
                .route(web::post().to(login))
                .default_service(only("POST")),
        )
        .service(
            web::resource("/auth/logout")
                .route(web::post().to(logout))
                .default_service(only("POST")),
        )
        .service(
            web::resource("/auth/check")
                .route(web::get().to(check))
                .default_service(only("GET")),
        )
        .default_service(web::to(no_such_endpoint))
}

/// Everything the JSON API can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `code` names the problem for programs.
    #[error("{message}")]
    BadRequest {
        /// A stable machine-readable code.
        code: &'static str,
        /// What is wrong, for people.
        message: String,
    },
    /// Not signed in, or wrong name or password.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Signed in, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such invite (or used, or expired), or no such endpoint.
    #[error("{0}")]
    NotFound(&'static str),
    /// The method is not served here; the methods that are, for `Allow`.
    #[error("method not allowed: use {0}")]
    MethodNotAllowed(&'static str),
    /// The name is taken; the invite stays usable.
    #[error("that name is taken; choose another")]
    NameTaken,
    /// The body is over the limit.
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// Too many sign-in attempts from this address or at this account; retry
    /// after the seconds given.
    #[error("too many sign-in attempts; try again in {}", seconds(*.0))]
    TooManyRequests(u64),
    /// The store failed, or the hasher failed or is busy; nothing was changed.
    /// Answered with `Retry-After: 1`.
    #[error("temporarily unavailable; nothing was changed, try again")]
    Unavailable,
}

/// "1 second", "20 seconds".
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".to_owned()
    } else {
        format!("{n} seconds")
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::NameTaken => "name_taken",
            Self::TooLarge => "body_too_large",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::Unavailable => "unavailable",
        }
    }

    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NameTaken => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            Self::TooManyRequests(secs) => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            // Every 503 says when to come back, as /invites_api's do: a full
            // hashing queue or a busy store clears within a second or so.
            Self::Unavailable => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        if let Self::MethodNotAllowed(allow) = self {
            res.insert_header((header::ALLOW, *allow));
        }
        res.json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}

pub(super) fn store_failed(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure in the JSON API");
    ApiError::Unavailable
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Self::TooLarge,
            BodyError::Broken(why) => Self::bad("bad_body", why),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a JSON object body into `T`, with the error codes the API documents.
fn json_body<T: for<'de> Deserialize<'de>>(
    req: &HttpRequest,
    body: Body,
    allow_empty: bool,
) -> Result<Option<T>, ApiError> {
    parse_json(req, &body.bytes()?, allow_empty)
}

/// Parses a body already read; `None` for an empty one when that is allowed.
pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(
    req: &HttpRequest,
    raw: &[u8],
    allow_empty: bool,
) -> Result<Option<T>, ApiError> {
    if raw.is_empty() && allow_empty {
        return Ok(None);
    }
    match body::content_type(req).as_deref() {
        Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::bad(
                "wrong_content_type",
                format!("send application/json, not {other}"),
            ))
        }
        None => {
            return Err(ApiError::bad(
                "wrong_content_type",
                "send the body as application/json",
            ))
        }
    }
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad("bad_json", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad("bad_json", "the body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| ApiError::bad("bad_fields", format!("{e}")))
}

/// `POST /api/invite`: mints an invite for the signed-in account or the key.
async fn create_invite(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let _: Option<serde_json::Map<String, serde_json::Value>> = json_body(&req, body, true)?;
    let (account, key_record);
    let (minter, host) =
        if let Some(signed_in) = auth::signed_in(&state, &req).await.map_err(store_failed)? {
            // With a cookie, the request must say it is JSON: an HTML form
            // cannot, so a page on a sibling site cannot mint in its name.
            if body::content_type(&req).as_deref() != Some("application/json") {
                return Err(ApiError::bad(
                    "wrong_content_type",
                    "send the body as application/json",
                ));
            }
            // A session answers only for the host the request is addressed
            // to, as at /api/auth/check.
            let addressed = auth::addressed_host(&state, &req).map(|h| &h.name);
            if addressed != Some(&signed_in.host) {
                return Err(ApiError::Unauthorized("not signed in to this host"));
            }
            let host = served_host(&state, &signed_in)?;
            account = signed_in;
            (Minter::Account(&account), host)
        } else {
            let key = auth::api_key(&req, None).map_err(|e| match e {
                KeyError::Missing(_) => {
                    ApiError::Unauthorized("sign in, or send an API key as Authorization: Bearer")
                }
                KeyError::BadRequest(why) => ApiError::bad("bad_request", why),
                KeyError::Malformed(_) | KeyError::Invalid => {
                    ApiError::Unauthorized("the API key is not valid")
                }
                KeyError::Store(e) => store_failed(e),
            })?;
            let record = auth::verify_key(&state, &key).await.map_err(|e| match e {
                KeyError::Store(e) => store_failed(e),
                _ => ApiError::Unauthorized("the API key is not valid"),
            })?;
            let host = state.config.hosts.get(&record.host).ok_or_else(|| {
                ApiError::Forbidden(format!("host {} is no longer served here", record.host))
            })?;
            key_record = record;
            (Minter::Key(&key_record), host)
        };
    let issuer = minter.source().to_text();
    let minted = service::mint_invite(&*state.store, host, minter)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::Unauthorized("the account or key no longer exists"),
            other => store_failed(other),
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "id": minted.token.expose(),
            "issuer": issuer,
            "issued_at": rfc3339(minted.created_at),
            "expires_at": rfc3339(minted.expires_at),
            "url": minted.url,
        })))
}

fn served_host<'s>(
    state: &'s AppState,
    account: &AccountRecord,
) -> Result<&'s HostConfig, ApiError> {
    state.config.hosts.get(&account.host).ok_or_else(|| {
        ApiError::Forbidden(format!("host {} is no longer served here", account.host))
    })
}

pub(super) const INVITE_NOT_FOUND: &str = "no such invite, or it was used or has expired";

/// The invite a path names, if it can be used now, with its host; another
/// host's invite is not found on a host's address.
async fn usable_invite<'s>(
    state: &'s AppState,
    req: &HttpRequest,
) -> Result<(InviteToken, crate::store::InviteRecord, &'s HostConfig), ApiError> {
    let id = req.match_info().get("id").unwrap_or("");
    let addressed = auth::addressed_host(state, req).map(|h| &h.name);
    service::usable_invite(&*state.store, &state.config, addressed, id)
        .await
        .map_err(|e| match e {
            Unusable::Store(e) => store_failed(e),
            Unusable::NotFound | Unusable::Used(_) | Unusable::Expired(_) => {
                ApiError::NotFound(INVITE_NOT_FOUND)
            }
        })
}

/// `GET /api/invite/{id}`: who issued an outstanding invite, and when. The
/// name is the inviting account's, or `null` (a key's name is the
/// operator's label, never shown to invitees).
async fn show_invite(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, invite, _) = usable_invite(&state, &req).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "issuer": {
                "id": service::public_source(&invite),
                "name": service::public_inviter(&invite),
            },
            "issued_at": rfc3339(invite.created_at),
            "expires_at": rfc3339(invite.expires_at),
        })))
}

/// A name and password, as sent to accept an invite or to sign in.
#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

/// `POST /api/invite/{id}`: accepts an invite, creating and signing in an account.
async fn accept_invite(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A broken body is answered before the invite is looked up; the lookup
    // answers before the fields are judged, so an unknown invite is a 404.
    let raw = body.bytes()?;
    let (token, invite, host) = usable_invite(&state, &req).await?;
    if let Some(account_id) = invite.reset_account_id {
        return super::reset::accept_json(&req, &raw, &state, &token, account_id, host).await;
    }
    let creds: Credentials = parse_json(&req, &raw, false)?
        .ok_or_else(|| ApiError::bad("bad_json", "the body must be a JSON object"))?;
    let name = AccountName::parse(&creds.name).map_err(|e| ApiError::bad("invalid_name", e.0))?;
    let password = Password::parse(&creds.password, &name, &host.name)
        .map_err(|e| ApiError::bad("invalid_password", e.0))?;
    match service::register(&*state.store, &state.hasher, host, &token, name, password).await {
        Ok((_, identity)) => Ok(HttpResponse::NoContent()
            .cookie(auth::identity_cookie(&identity, host))
            .finish()),
        Err(StoreError::NameTaken) => Err(ApiError::NameTaken),
        Err(StoreError::NotFound | StoreError::InviteUsed | StoreError::InviteExpired) => {
            Err(ApiError::NotFound(INVITE_NOT_FOUND))
        }
        Err(e) => Err(store_failed(e)),
    }
}

const BAD_LOGIN: &str = "wrong name or password";

/// The host a sign-in is for: the one the request is addressed to; `name@host`
/// must name that same host. On a multi-host server reached by an address
/// that names none of them, `name@host` decides. `None` when they disagree
/// (answered, after the same work, like a wrong password).
fn login_host<'s>(
    state: &'s AppState,
    req: &HttpRequest,
    host_part: Option<&str>,
) -> Result<Option<&'s HostConfig>, ApiError> {
    match (auth::addressed_host(state, req), host_part) {
        (Some(addressed), Some(h)) => Ok(state
            .config
            .host(h)
            .filter(|named| named.name == addressed.name)),
        (Some(addressed), None) => Ok(Some(addressed)),
        (None, Some(h)) => Ok(state.config.host(h)),
        (None, None) => Err(ApiError::bad(
            "ambiguous_host",
            "this server has several hosts: sign in as name@host",
        )),
    }
}

/// `POST /api/auth/login`: signs in with name and password.
async fn login(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(ip) = super::client_ip(&req, &state.config.trusted_proxies) {
        state
            .login_limiter
            .check_address(ip)
            .map_err(ApiError::TooManyRequests)?;
    }
    let creds: Credentials = json_body(&req, body, false)?
        .ok_or_else(|| ApiError::bad("bad_json", "the body must be a JSON object"))?;
    let (name_part, host_part) = match creds.name.rsplit_once('@') {
        Some((n, h)) => (n, Some(h)),
        None => (creds.name.as_str(), None),
    };
    let host = login_host(&state, &req, host_part)?;
    let name = AccountName::parse(name_part);
    if let (Some(host), Ok(name)) = (host, &name) {
        // Counted whether or not the account exists, so the answer does not
        // tell which names do.
        state
            .login_limiter
            .check_account(&host.name, name)
            .map_err(ApiError::TooManyRequests)?;
    }
    // Unknown names and hosts still cost one hash, so timing reveals neither.
    let account = match (host, name) {
        (Some(host), Ok(name)) => match state.store.find_account(&host.name, &name).await {
            Ok(a) => Some(a),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(store_failed(e)),
        },
        _ => None,
    };
    let verified = state
        .hasher
        .verify(
            creds.password,
            account.as_ref().map(|a| a.password_hash.clone()),
        )
        .await
        .map_err(|e| {
            // A full queue is load, not a fault: the request log shows the 503.
            if !matches!(e, HashError::Busy) {
                tracing::error!(error = %e, "password verification failed");
            }
            ApiError::Unavailable
        })?;
    let (account, host) = match (account, host) {
        (Some(a), Some(h)) if verified => (a, h),
        _ => return Err(ApiError::Unauthorized(BAD_LOGIN)),
    };
    let (identity, session) = service::new_session().map_err(|_| ApiError::Unavailable)?;
    match state.store.create_session(account.id, session).await {
        Ok(()) => Ok(HttpResponse::NoContent()
            .cookie(auth::identity_cookie(&identity, host))
            .finish()),
        Err(StoreError::NotFound) => Err(ApiError::Unauthorized(BAD_LOGIN)),
        Err(e) => Err(store_failed(e)),
    }
}

/// `POST /api/auth/logout`: ends the session; the old cookie stops working.
async fn logout(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Nothing is sent, but a body that breaks is still a bad request.
    body.bytes()?;
    if let Some(token) = auth::identity_token(&state, &req) {
        state
            .store
            .delete_session(token.digest())
            .await
            .map_err(store_failed)?;
    }
    let mut res = HttpResponse::NoContent();
    // Addressed to no host, no cookie was read, and none is cleared.
    if let Some(host) = auth::addressed_host(&state, &req) {
        res.cookie(auth::clear_identity_cookie(host));
    }
    Ok(res.finish())
}

/// `GET /api/auth/check`: 200 with the account in a header for a valid
/// identity cookie, 401 otherwise; for nginx `auth_request` and Traefik
/// `forwardAuth`.
async fn check(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // An account answers only for the host this request is addressed to: a
    // proxy guarding one host must not let another host's accounts in.
    let addressed = auth::addressed_host(&state, &req).map(|h| &h.name);
    match auth::signed_in(&state, &req).await.map_err(store_failed)? {
        Some(account) if addressed == Some(&account.host) => Ok(HttpResponse::Ok()
            .insert_header((USER_HEADER, format!("{}@{}", account.name, account.host)))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "name": account.name.as_str(), "host": account.host.as_str() }))),
        Some(_) => Err(ApiError::Unauthorized("not signed in to this host")),
        None => Err(ApiError::Unauthorized("not signed in")),
    }
}

/// The fallback of a resource that serves only `allow` (a 405 must say which).
fn only(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) })
}

async fn no_such_endpoint() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such API endpoint"))
}
