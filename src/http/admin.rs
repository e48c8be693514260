//! The admin API (`/api/admin`): an `admin`-scope key lists, mints, shows
//! and revokes the invites of its own host and lists its accounts. JSON in
//! and out, errors in the `{"error", "message"}` shape of the JSON API; the
//! invite and account objects are the ones `invites list --json` and
//! `accounts list --json` print.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::api::{key_refused, parse_json, store_failed, ApiError, MintBody};
use super::auth::{self, KeyError};
use super::body::Body;
use super::AppState;
use crate::config::HostConfig;
use crate::domain::{AccountName, InviteId, InviteOptions, KeyScope};
use crate::query::QueryParams;
use crate::service::admin::{self, Mint};
use crate::service::invites;
use crate::service::keys::{self, VerifiedKey};
use crate::store::{InviteStatus, StatusFilter, StoreError};

/// How many invites a page holds unless `?limit=` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// The most invites one page may hold.
const MAX_LIMIT: u32 = 1000;

/// The `/api/admin` scope. Registered before `/api`, whose catch-all would
/// otherwise answer for it.
pub fn scope() -> actix_web::Scope {
    web::scope("/api/admin")
        .service(
            web::resource("/invites")
                .route(web::get().to(list_invites))
                .route(web::post().to(create_invite))
                .default_service(only("GET, POST")),
        )
        .service(
            web::resource("/invites/{invite_id}")
                .route(web::get().to(show_invite))
                .route(web::delete().to(revoke_invite))
                .default_service(only("GET, DELETE")),
        )
        .service(
            web::resource("/accounts")
                .route(web::get().to(list_accounts))
                .default_service(only("GET")),
        )
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(AdminError::from(ApiError::NotFound("no such API endpoint")))
        }))
}

/// An admin API error: the JSON API's, and a revoke of an invite that has
/// ended already. Every 401 asks for a Bearer key (RFC 6750).
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// Answered as the JSON API answers it.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The invite was used up or expired before it could be revoked.
    #[error("{0}")]
    Ended(&'static str),
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Api(e) => e.status_code(),
            Self::Ended(_) => StatusCode::CONFLICT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Api(e) => {
                let mut res = e.error_response();
                if res.status() == StatusCode::UNAUTHORIZED {
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                }
                res
            }
            Self::Ended(why) => HttpResponse::Conflict()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "error": "invite_ended", "message": why })),
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> AdminError {
    ApiError::bad(code, message).into()
}

/// The admin key of a request, verified, and its host: a key of another
/// scope, an expired one, or one whose host is no longer served is 403.
async fn admin_key<'s>(
    state: &'s AppState,
    req: &HttpRequest,
) -> Result<(VerifiedKey, &'s HostConfig), AdminError> {
    // Bearer only: a key in a URL ends up in logs and browser histories.
    let key = auth::api_key(req, None).map_err(|e| match e {
        KeyError::Missing(_) => ApiError::Unauthorized(
            "send an admin-scope API key as Authorization: Bearer <id>/<secret>",
        ),
        KeyError::BadRequest(why) => ApiError::bad("bad_request", why),
        KeyError::Malformed(_) => ApiError::Unauthorized("the API key is not valid"),
    })?;
    keys::authorize(&*state.store, &state.config, &key, KeyScope::Admin)
        .await
        .map_err(|refused| key_refused(refused).into())
}

/// A JSON answer that is never cached: invites carry their page URL.
fn answer(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// One query parameter's value (`?x` counts as empty).
fn param<'q>(query: &'q QueryParams, name: &str) -> Result<Option<&'q str>, AdminError> {
    let value = query
        .get(name)
        .map_err(|e| bad("bad_query", e.0))?
        .map(|v| v.unwrap_or(""));
    Ok(value)
}

/// `GET /api/admin/invites?status=&limit=&after=`: a page of the host's
/// invites, newest first, and the cursor of the next page or `null`.
#[utoipa::path(
    get, path = "/api/admin/invites", tag = "admin", operation_id = "admin_list_invites",
    params(
        ("status" = Option<String>, Query,
         description = "`pending` (the default), `used`, `expired`, `revoked` or `all`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
         description = "Invites per page, 100 unless given"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page"),
    ),
    responses((status = 200, description = "A page of invites", body = super::openapi::InvitePage)),
    security(("bearer_key" = []))
)]
async fn list_invites(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let (_, host) = admin_key(&state, &req).await?;
    let query = QueryParams::parse(req.query_string()).map_err(|e| bad("bad_query", e.0))?;
    let status = match param(&query, "status")? {
        None => StatusFilter::Only(InviteStatus::Pending),
        Some(s) => invites::parse_status(s).map_err(|e| bad("invalid_status", e.0))?,
    };
    let limit = match param(&query, "limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    "invalid_limit",
                    format!(
                        "limit: `{}` is not a whole number from 1 to {MAX_LIMIT}",
                        text.escape_default()
                    ),
                )
            })?,
    };
    let after = param(&query, "after")?
        .map(|text| {
            InviteId::parse(text).map_err(|_| {
                bad(
                    "invalid_cursor",
                    "after: not a cursor; pass back the `next` of the previous page",
                )
            })
        })
        .transpose()?;
    let now = Utc::now();
    let page = admin::page(
        &*state.store,
        &state.invite_ids,
        host,
        status,
        after.as_ref(),
        limit,
        now,
    )
    .await
    .map_err(store_failed)?;
    let list: Vec<_> = page
        .invites
        .iter()
        .map(|d| invites::invite_json(d, &state.invite_ids, now))
        .collect();
    let next = page.next.as_ref().map(InviteId::as_str);
    Ok(answer(
        StatusCode::OK,
        json!({ "invites": list, "next": next }),
    ))
}

/// The body of `POST /api/admin/invites`: the invite options, or `reset`
/// with an optional `ttl`. Unknown fields are refused, so a misspelt option
/// is not silently left at its default.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    /// The account whose password a reset invite resets.
    reset: Option<String>,
    /// How long the invite lasts, e.g. `2d` or `12h`.
    ttl: Option<String>,
    /// How many accounts it may register (not with `reset`).
    #[schema(value_type = Option<u32>, minimum = 1)]
    uses: Option<serde_json::Number>,
    /// A note for the operator (not with `reset`).
    note: Option<String>,
    /// The one name it may register (not with `reset`).
    name: Option<String>,
}

impl MintRequest {
    /// What to mint, validated as on every minting surface.
    fn validate(self, host: &HostConfig) -> Result<Mint, AdminError> {
        let invalid = |e: crate::domain::Invalid| bad("invalid_option", e.0);
        let Some(account) = self.reset else {
            let wanted = MintBody {
                ttl: self.ttl,
                uses: self.uses,
                note: self.note,
                name: self.name,
            };
            let options = InviteOptions::validate(&wanted.into_raw(), host).map_err(invalid)?;
            return Ok(Mint::Invite(options));
        };
        if self.uses.is_some() || self.note.is_some() || self.name.is_some() {
            return Err(bad(
                "invalid_option",
                "a reset invite takes only `ttl`, not uses, note or name",
            ));
        }
        // A name that cannot exist names no account.
        let name = AccountName::parse(&account)
            .map_err(|_| AdminError::from(ApiError::NotFound("no such account")))?;
        let ttl = self
            .ttl
            .map(|t| InviteOptions::parse_ttl(&t, host))
            .transpose()
            .and_then(|ttl| crate::service::accounts::reset_ttl(ttl, host))
            .map_err(invalid)?;
        Ok(Mint::Reset { name, ttl })
    }
}

/// `POST /api/admin/invites`: mints an invite (or a reset invite) for the
/// key's host; 201 with the invite object, its `url` and a `Location`.
#[utoipa::path(
    post, path = "/api/admin/invites", tag = "admin", operation_id = "admin_create_invite",
    request_body(content = Option<MintRequest>, content_type = "application/json",
                 description = "Invite options, or `reset` (an account name) with an optional `ttl`"),
    responses(
        (status = 201, description = "Minted", body = super::openapi::AdminMinted,
         headers(("Location" = String, description = "The invite's admin API path"))),
        (status = 404, description = "A reset of no such account", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = super::openapi::ErrorBody),
        (status = 429, description = "The key's mint rate is used up", body = super::openapi::ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until a mint is allowed"))),
    ),
    security(("bearer_key" = []))
)]
async fn create_invite(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let raw = body.bytes().map_err(ApiError::from)?;
    let (key, host) = admin_key(&state, &req).await?;
    let wanted: MintRequest = parse_json(&req, &raw, true)?.unwrap_or_default();
    let what = wanted.validate(host)?;
    state
        .mint_limiter
        .check(&key.record)
        .map_err(ApiError::KeyRateLimited)?;
    let (minted, details) = admin::mint(&*state.store, host, &key, &what)
        .await
        .map_err(|e| match (&what, e) {
            (Mint::Reset { .. }, StoreError::NotFound) => ApiError::NotFound("no such account"),
            (_, e) => key_refused(keys::refusal_at_commit(&key.record, e)),
        })?;
    let id = state.invite_ids.public(minted.row_id);
    let mut v = invites::invite_json(&details, &state.invite_ids, Utc::now());
    v["url"] = json!(minted.url);
    let mut res = answer(StatusCode::CREATED, v);
    if let Ok(location) = header::HeaderValue::from_str(&format!("/api/admin/invites/{id}")) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

/// The invite id in the path; one that cannot be an id names no invite.
fn path_id(req: &HttpRequest) -> Result<InviteId, AdminError> {
    let text = req.match_info().get("invite_id").unwrap_or("");
    InviteId::parse(text).map_err(|_| ApiError::NotFound(NO_INVITE).into())
}

const NO_INVITE: &str = "no such invite on this key's host";

/// `GET /api/admin/invites/{invite_id}`: the invite, with when each account
/// registered; 404 for an unknown id or another host's invite.
#[utoipa::path(
    get, path = "/api/admin/invites/{invite_id}", tag = "admin", operation_id = "admin_show_invite",
    params(("invite_id" = String, Path, description = "The invite's public id")),
    responses(
        (status = 200, description = "The invite", body = super::openapi::AdminInviteDetails),
        (status = 404, description = "No such invite on this key's host", body = super::openapi::ErrorBody),
    ),
    security(("bearer_key" = []))
)]
async fn show_invite(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let (_, host) = admin_key(&state, &req).await?;
    let id = path_id(&req)?;
    let found = invites::find(&*state.store, &state.invite_ids, host, &id).await;
    let details = match found {
        Ok(d) => d,
        Err(StoreError::NotFound) => return Err(ApiError::NotFound(NO_INVITE).into()),
        Err(e) => return Err(store_failed(e).into()),
    };
    let v = invites::invite_details_json(&details, &state.invite_ids, Utc::now());
    Ok(answer(StatusCode::OK, v))
}

/// `DELETE /api/admin/invites/{invite_id}`: revokes a pending invite (204;
/// again for one revoked already), audited as `key <id>`; 404 for an
/// unknown id or another host's invite, 409 for one used up or expired.
#[utoipa::path(
    delete, path = "/api/admin/invites/{invite_id}", tag = "admin", operation_id = "admin_revoke_invite",
    params(("invite_id" = String, Path, description = "The invite's public id")),
    responses(
        (status = 204, description = "Revoked (or was already)"),
        (status = 404, description = "No such invite on this key's host", body = super::openapi::ErrorBody),
        (status = 409, description = "The invite is used up or has expired already", body = super::openapi::ErrorBody),
    ),
    security(("bearer_key" = []))
)]
async fn revoke_invite(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let (key, host) = admin_key(&state, &req).await?;
    let id = path_id(&req)?;
    let revoked = invites::revoke(&*state.store, &state.invite_ids, host, &id, &key.actor()).await;
    match revoked {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(StoreError::NotFound) => Err(ApiError::NotFound(NO_INVITE).into()),
        Err(StoreError::InviteUsed) => Err(AdminError::Ended("the invite is used up already")),
        Err(StoreError::InviteExpired) => Err(AdminError::Ended("the invite has expired already")),
        Err(e) => Err(store_failed(e).into()),
    }
}

/// `GET /api/admin/accounts`: the host's accounts, oldest first.
#[utoipa::path(
    get, path = "/api/admin/accounts", tag = "admin", operation_id = "admin_list_accounts",
    responses((status = 200, description = "The host's accounts", body = super::openapi::AccountList)),
    security(("bearer_key" = []))
)]
async fn list_accounts(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let (_, host) = admin_key(&state, &req).await?;
    let accounts = admin::accounts(&*state.store, &state.invite_ids, host)
        .await
        .map_err(store_failed)?;
    Ok(answer(StatusCode::OK, json!({ "accounts": accounts })))
}

/// The fallback of a resource that serves only `allow` (a 405 must say which).
fn only(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        Err::<HttpResponse, _>(AdminError::from(ApiError::MethodNotAllowed(allow)))
    })
}
