//! The JSON invitation API (`/api/invite`, `/api/auth/*`), after a chat
//! server's invitation API. Every error answer is `{"error", "message"}`.

use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, KeyError};
use super::body::{self, Body, BodyError};
use super::{AppState, MAX_BODY};
use crate::config::HostConfig;
use crate::domain::{
    AccountName, InviteOptions, InviteToken, KeyScope, Password, RawInviteOptions,
};
use crate::provision::ProvisionError;
use crate::service::keys::{self, KeyRefusal};
use crate::service::signin::{self, SignInError};
use crate::service::{self, HashedWriteError, Minter, Outage, Unusable};
use crate::store::{AccountRecord, StoreError};

/// The header `/api/auth/check` names the signed-in account in.
pub const USER_HEADER: &str = "X-Invite-Server-User";
/// [`USER_HEADER`] as a header name (lower case, as `from_static` wants),
/// so a check does not parse the name again on every answer.
const USER_HEADER_NAME: HeaderName = HeaderName::from_static("x-invite-server-user");

/// The `/api` scope with its routes and JSON fallbacks.
pub fn scope() -> actix_web::Scope {
    web::scope("/api")
        // First: it answers every request to every app behind forward-auth,
        // and routes are tried in order (`/invite/{id}` costs a regex match).
        .service(
            web::resource("/auth/check")
                .route(web::get().to(check))
                .default_service(only("GET")),
        )
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
        .service(super::openapi::resource())
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
    /// The signed-in account holds as many pending invites as the host allows.
    #[error("{0}")]
    InviteQuota(String),
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
    /// The API key's mint rate is used up; retry after the seconds given.
    #[error("this API key's mint rate is used up; try again in {}", seconds(*.0))]
    KeyRateLimited(u64),
    /// The store is briefly unavailable, or the hashing queue is full;
    /// nothing was changed. Answered with `Retry-After: 1`.
    #[error("temporarily unavailable; nothing was changed, try again")]
    Unavailable,
    /// Something failed on the server's side that trying again will not
    /// mend; the cause is logged, never sent.
    #[error("internal server error; the failure was logged")]
    Internal,
    /// The account service refused or failed, or another registration holds
    /// the invite's last use; nothing was changed and the invite stays
    /// usable. Answered 503 with `Retry-After`.
    #[error("{0}")]
    ServiceBusy(&'static str),
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
            Self::InviteQuota(_) => "invite_quota",
            Self::TooLarge => "body_too_large",
            Self::TooManyRequests(_) | Self::KeyRateLimited(_) => "too_many_requests",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::ServiceBusy(_) => "service_unavailable",
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
            Self::Forbidden(_) | Self::InviteQuota(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NameTaken => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) | Self::KeyRateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::ServiceBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            Self::TooManyRequests(secs) | Self::KeyRateLimited(secs) => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            // Every 503 says when to come back, as /invites_api's do: a full
            // hashing queue or a busy store clears within a second or so.
            Self::Unavailable => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::ServiceBusy(_) => {
                res.insert_header((header::RETRY_AFTER, super::pages::RETRY_LATER_SECS));
            }
            _ => {}
        }
        if let Self::MethodNotAllowed(allow) = self {
            res.insert_header((header::ALLOW, *allow));
        }
        res.json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}

impl From<Outage> for ApiError {
    fn from(outage: Outage) -> Self {
        match outage {
            Outage::Transient => Self::Unavailable,
            Outage::Permanent => Self::Internal,
        }
    }
}

/// The answer to a store error that the request had no answer of its own for.
pub(super) fn store_failed(e: StoreError) -> ApiError {
    match e {
        StoreError::InviteReserved => ApiError::ServiceBusy(
            "a registration with this invite is in progress; nothing was changed, try again",
        ),
        StoreError::Provision(ProvisionError::PasswordRefused(why)) => {
            ApiError::bad("invalid_password", why)
        }
        StoreError::Provision(_) => ApiError::ServiceBusy(
            "the account service could not create or change the account; nothing was \
             changed and the invite is still usable, try again later",
        ),
        StoreError::Backend(_)
        | StoreError::NotFound
        | StoreError::InviteUsed
        | StoreError::InviteExpired
        | StoreError::InviteRevoked
        | StoreError::NameNotAllowed
        | StoreError::InviteQuota
        | StoreError::NameTaken => Outage::of_store(&e, "the JSON API").into(),
    }
}

/// The answer to a use case that hashed a password and then failed.
pub(super) fn hashed_write_failed(e: HashedWriteError) -> ApiError {
    match e {
        HashedWriteError::Store(e) => store_failed(e),
        e @ HashedWriteError::Hash(_) => e.outage("the JSON API").into(),
    }
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
#[utoipa::path(
    post, path = "/api/invite", tag = "invites",
    request_body(content = Option<MintBody>, content_type = "application/json",
                 description = "Invite options; none (or `{}`) mints with the host's defaults"),
    responses(
        (status = 200, description = "Minted", body = super::openapi::MintedInvite),
        (status = 400, description = "A malformed body or Authorization header, or an invalid \
                                      option", body = super::openapi::ErrorBody),
        (status = 401, description = "Neither signed in to this host nor a valid API key",
         body = super::openapi::ErrorBody),
        (status = 403, description = "The key expired, its host is no longer served, or the \
                                      account holds as many invites as allowed",
         body = super::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = super::openapi::ErrorBody),
        (status = 429, description = "The key's mint rate is used up",
         body = super::openapi::ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until a mint is allowed"))),
    ),
    security(("bearer_key" = []), ("identity_cookie" = []), ("identity_cookie_secure" = []))
)]
async fn create_invite(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let wanted: MintBody = json_body(&req, body, true)?.unwrap_or_default();
    let (account, verified);
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
                KeyError::Malformed(_) => ApiError::Unauthorized("the API key is not valid"),
            })?;
            let (key, host) = keys::authorize(&*state.store, &state.config, &key, KeyScope::Mint)
                .await
                .map_err(key_refused)?;
            verified = key;
            (Minter::Key(&verified.record), host)
        };
    let options = InviteOptions::validate(&wanted.into_raw(), host)
        .map_err(|e| ApiError::bad("invalid_option", e.0))?;
    // After validation, as on /invites_api: a refused request spends no rate.
    if let Minter::Key(record) = minter {
        state
            .mint_limiter
            .check(record)
            .map_err(ApiError::KeyRateLimited)?;
    }
    let issuer = minter.source().to_text();
    let minted = service::mint_invite(&*state.store, host, minter, &options)
        .await
        .map_err(|e| match (minter, e) {
            (_, StoreError::InviteQuota) => ApiError::InviteQuota(format!(
                "you may hold at most {} pending invites on {}; wait until some are used or expire",
                host.account_invites, host.name
            )),
            (Minter::Key(record), e) => key_refused(keys::refusal_at_commit(record, e)),
            (Minter::Account(_), StoreError::NotFound) => {
                ApiError::Unauthorized("the account no longer exists")
            }
            (Minter::Account(_), other) => store_failed(other),
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "id": minted.token.expose(),
            "issuer": issuer,
            "issued_at": rfc3339(minted.created_at),
            "expires_at": rfc3339(minted.expires_at),
            "url": minted.url,
            "invite_id": state.invite_ids.public(minted.row_id).as_str(),
            "uses": minted.uses,
        })))
}

/// The answer to a key that [`keys::verify`] (or the mint's own re-check)
/// refused: an expired key is told so, as a 403, since its holder proved it
/// has the secret; a wrong or deleted one is only "not valid".
pub(super) fn key_refused(refusal: KeyRefusal) -> ApiError {
    match refusal {
        KeyRefusal::Invalid => ApiError::Unauthorized("the API key is not valid"),
        KeyRefusal::Expired => ApiError::Forbidden("the API key has expired".into()),
        KeyRefusal::Scope => ApiError::Forbidden(
            "this API key may only mint invites; the admin API needs an admin-scope key".into(),
        ),
        KeyRefusal::HostGone(host) => {
            ApiError::Forbidden(format!("host {host} is no longer served here"))
        }
        KeyRefusal::Store(e) => store_failed(e),
    }
}

/// The invite options `POST /api/invite` takes; `{}` (or no body) mints
/// with the host's defaults, as before options existed.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct MintBody {
    /// How long the invite lasts, e.g. `2d` or `12h`.
    pub(super) ttl: Option<String>,
    /// How many accounts it may register.
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub(super) uses: Option<serde_json::Number>,
    /// A note for the operator.
    pub(super) note: Option<String>,
    /// The one name it may register.
    pub(super) name: Option<String>,
}

impl MintBody {
    pub(super) fn into_raw(self) -> RawInviteOptions {
        RawInviteOptions {
            ttl: self.ttl,
            uses: self.uses.map(|n| n.to_string()),
            note: self.note,
            name: self.name,
        }
    }
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
            Unusable::NotFound
            | Unusable::Used(_)
            | Unusable::Expired(_)
            | Unusable::Revoked(_) => ApiError::NotFound(INVITE_NOT_FOUND),
        })
}

/// `GET /api/invite/{id}`: who issued an outstanding invite, and when. The
/// name is the inviting account's, or `null` (a key's name is the
/// operator's label, never shown to invitees).
#[utoipa::path(
    get, path = "/api/invite/{id}", tag = "invites",
    params(("id" = String, Path, description = "The invite token")),
    responses(
        (status = 200, description = "The invite can be used", body = super::openapi::InviteInfo),
        (status = 404, description = "No such invite, or it was used, revoked or has expired",
         body = super::openapi::ErrorBody),
    )
)]
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
            "uses_remaining": invite.uses_remaining(),
            "name": invite.fixed_name,
        })))
}

/// A name and password, as sent to accept an invite or to sign in.
#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

/// `POST /api/invite/{id}`: accepts an invite, creating and signing in an account.
#[utoipa::path(
    post, path = "/api/invite/{id}", tag = "invites",
    params(("id" = String, Path, description = "The invite token")),
    request_body(content = super::openapi::Acceptance, content_type = "application/json"),
    responses(
        (status = 204, description = "Registered (or the password reset) and signed in",
         headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, description = "A malformed body, or an invalid name or password",
         body = super::openapi::ErrorBody),
        (status = 404, description = "No such invite, or it was used, revoked or has expired",
         body = super::openapi::ErrorBody),
        (status = 409, description = "The name is taken; the invite stays usable",
         body = super::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = super::openapi::ErrorBody),
    )
)]
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
    let registered = service::register(
        &*state.store,
        &state.hasher,
        host,
        &token,
        &invite,
        name,
        password,
    );
    match registered.await {
        Ok((_, identity)) => Ok(HttpResponse::NoContent()
            .cookie(auth::identity_cookie(&identity, host))
            .finish()),
        Err(HashedWriteError::Store(StoreError::NameTaken)) => Err(ApiError::NameTaken),
        Err(HashedWriteError::Store(StoreError::NameNotAllowed)) => Err(ApiError::bad(
            "name_not_allowed",
            "this invite is for one name only: register with the name it names",
        )),
        Err(HashedWriteError::Store(
            StoreError::NotFound
            | StoreError::InviteUsed
            | StoreError::InviteExpired
            | StoreError::InviteRevoked,
        )) => Err(ApiError::NotFound(INVITE_NOT_FOUND)),
        Err(e) => Err(hashed_write_failed(e)),
    }
}

const BAD_LOGIN: &str = "wrong name or password";

/// `POST /api/auth/login`: signs in with name and password.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body(content = super::openapi::Registration, content_type = "application/json"),
    responses(
        (status = 204, description = "Signed in",
         headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, description = "A malformed body, or a bare name on a server of several \
                                      hosts", body = super::openapi::ErrorBody),
        (status = 401, description = "Wrong name or password", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = super::openapi::ErrorBody),
        (status = 429, description = "Too many sign-in attempts", body = super::openapi::ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until an attempt is allowed"))),
    )
)]
async fn login(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let map = |e| match e {
        SignInError::TooMany(secs) => ApiError::TooManyRequests(secs),
        SignInError::AmbiguousHost => ApiError::bad(
            "ambiguous_host",
            "this server has several hosts: sign in as name@host",
        ),
        SignInError::Wrong => ApiError::Unauthorized(BAD_LOGIN),
        SignInError::Unavailable(outage) => outage.into(),
    };
    let attempt = super::login::sign_in_context(&state, &req)
        .count_attempt()
        .map_err(map)?;
    let creds: Credentials = json_body(&req, body, false)?
        .ok_or_else(|| ApiError::bad("bad_json", "the body must be a JSON object"))?;
    let signed = signin::sign_in(
        &*state.store,
        &state.hasher,
        &state.config,
        attempt,
        &creds.name,
        creds.password,
    )
    .await
    .map_err(map)?;
    Ok(HttpResponse::NoContent()
        .cookie(auth::identity_cookie(&signed.identity, signed.host))
        .finish())
}

/// `POST /api/auth/logout`: ends the session; the old cookie stops working.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Signed out (or was not signed in)",
         headers(("Set-Cookie" = String, description = "Clears the session cookie"))),
        (status = 400, description = "The body could not be read", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = super::openapi::ErrorBody),
    ),
    security((), ("identity_cookie" = []), ("identity_cookie_secure" = []))
)]
async fn logout(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Nothing is sent, but a body that breaks is still a bad request.
    body.bytes()?;
    if let Some(token) = auth::identity_token(&state, &req) {
        service::sessions::end(&*state.store, &token)
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
#[utoipa::path(
    get, path = "/api/auth/check", tag = "auth",
    responses(
        (status = 200, description = "Signed in to the host addressed",
         body = super::openapi::SignedIn,
         headers(("X-Invite-Server-User" = String, description = "`name@host`"))),
        (status = 401, description = "Not signed in to the host addressed",
         body = super::openapi::ErrorBody),
    ),
    security(("identity_cookie" = []), ("identity_cookie_secure" = []))
)]
async fn check(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // An account answers only for the host this request is addressed to: a
    // proxy guarding one host must not let another host's accounts in.
    let addressed = auth::addressed_host(&state, &req).map(|h| &h.name);
    match auth::signed_in(&state, &req).await.map_err(store_failed)? {
        Some(account) if addressed == Some(&account.host) => {
            let (name, host) = (account.name.as_str(), account.host.as_str());
            // Sized once: `format!` grew it twice.
            let mut user = String::with_capacity(name.len() + 1 + host.len());
            user.extend([name, "@", host]);
            Ok(HttpResponse::Ok()
                .insert_header((USER_HEADER_NAME, user))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(SignedIn { host, name }))
        }
        Some(_) => Err(ApiError::Unauthorized("not signed in to this host")),
        None => Err(ApiError::Unauthorized("not signed in")),
    }
}

/// The body of a check's 200 (documented as [`super::openapi::SignedIn`]),
/// borrowed from the account: a `json!` map cost an allocation per key and
/// value on every check. Fields in the order the map wrote them.
#[derive(serde::Serialize)]
struct SignedIn<'a> {
    host: &'a str,
    name: &'a str,
}

/// The fallback of a resource that serves only `allow` (a 405 must say which).
fn only(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) })
}

async fn no_such_endpoint() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such API endpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_store_failure_answers_503_with_retry_after_and_a_permanent_one_500() {
        let res = store_failed(StoreError::transient("database is locked")).error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");

        let res = store_failed(StoreError::permanent("no such table: invites")).error_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!res.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn the_user_header_is_sent_under_its_documented_name() {
        assert!(USER_HEADER_NAME.as_str().eq_ignore_ascii_case(USER_HEADER));
    }

    #[test]
    fn a_full_hashing_queue_answers_503_with_retry_after() {
        let e = HashedWriteError::Hash(crate::passwords::HashError::Busy);
        let res = hashed_write_failed(e).error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }
}
