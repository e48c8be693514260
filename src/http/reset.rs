//! Password-reset invites: the page that asks an existing account for its new
//! password (`/invite?TOKEN` of a reset invite) and the same over JSON
//! (`POST /api/invite/{token}` with `{"password"}`). Redeeming one sets the
//! password, ends every other session, signs in and uses the invite up, in
//! one store write.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::SecondsFormat;
use serde::Deserialize;

use super::api::{self, ApiError};
use super::pages::{self, PageError, Usable};
use super::{auth, AppState};
use crate::config::HostConfig;
use crate::crypto;
use crate::domain::{InviteToken, Password};
use crate::provision::ProvisionError;
use crate::service::accounts::redeem_reset;
use crate::service::{HashedWriteError, Outage};
use crate::store::{AccountRecord, StoreError};

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage<'a> {
    base: &'a str,
    site_name: &'a str,
    /// `name@host` of the account whose password is reset.
    address: String,
    expires_iso: String,
    expires_human: String,
    error: Option<String>,
    csrf: &'a str,
    /// `Some(name@host)` once the password is changed.
    done: Option<String>,
}

/// The account a reset invite is for; a gone account makes the invite unknown.
async fn target(state: &AppState, account_id: i64) -> Result<AccountRecord, StoreError> {
    state.store.find_account_by_id(account_id).await
}

fn page_error(host: &HostConfig, e: StoreError) -> PageError {
    match e {
        StoreError::NotFound => PageError::NotFound,
        StoreError::InviteUsed => PageError::Used {
            site_name: host.site_name.clone(),
            base: pages::base_path(host),
        },
        StoreError::InviteExpired => PageError::Expired {
            site_name: host.site_name.clone(),
            base: pages::base_path(host),
        },
        // Revoked between the page's load and its submission.
        StoreError::InviteRevoked => PageError::Revoked {
            site_name: host.site_name.clone(),
            base: pages::base_path(host),
        },
        StoreError::NameNotAllowed
        | StoreError::InviteQuota
        | StoreError::NameTaken
        | StoreError::InviteReserved
        | StoreError::Provision(_)
        | StoreError::Backend(_) => pages::store_failed(e),
    }
}

/// Renders the reset form with its CSRF cookie (the registration form's
/// scheme: the browser's nonce, signed with the invite's id).
pub(super) async fn reset_form(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    usable: &Usable<'_>,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let Usable { invite, host, .. } = usable;
    let account_id = invite.reset_account_id.ok_or(PageError::NotFound)?;
    let account = target(state, account_id)
        .await
        .map_err(|e| page_error(host, e))?;
    let nonce = match pages::csrf_nonce(req, host) {
        Some(n) => n,
        None => crypto::random_base64url(32).map_err(|_| PageError::Internal)?,
    };
    let csrf = state.form_key.sign(invite.id, &nonce);
    let base = pages::base_path(host);
    let page = ResetPage {
        base: &base,
        site_name: &host.site_name,
        address: format!("{}@{}", account.name, account.host),
        expires_iso: invite.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires_human: pages::human_time(invite.expires_at),
        error,
        csrf: &csrf,
        done: None,
    };
    let mut res = pages::render(status, &page);
    pages::no_store(&mut res);
    let _ = res.add_cookie(&pages::csrf_cookie_for(host, nonce));
    Ok(res)
}

/// The reset form's fields; missing ones count as empty.
#[derive(Debug, Default, Deserialize)]
struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

/// `POST /invite?TOKEN` of a reset invite: sets the new password and signs in.
pub(super) async fn redeem(
    req: &HttpRequest,
    raw: &[u8],
    state: &AppState,
    usable: &Usable<'_>,
) -> Result<HttpResponse, PageError> {
    let host = usable.host;
    let form: ResetForm = pages::form_body(req, raw)?;
    let retry = |status, why: String| reset_form(req, state, status, usable, Some(why));
    let csrf_ok = pages::csrf_nonce(req, host)
        .is_some_and(|nonce| state.form_key.verify(usable.invite.id, &nonce, &form.csrf));
    if !csrf_ok {
        return retry(
            StatusCode::FORBIDDEN,
            "This form had expired or came from another site. Nothing was saved; please submit it again.".into(),
        )
        .await;
    }
    if form.password != form.password2 {
        return retry(
            StatusCode::BAD_REQUEST,
            "The two passwords differ; please type them again.".into(),
        )
        .await;
    }
    let account_id = usable.invite.reset_account_id.ok_or(PageError::NotFound)?;
    let account = target(state, account_id)
        .await
        .map_err(|e| page_error(host, e))?;
    let password = match Password::parse(&form.password, &account.name, &host.name) {
        Ok(p) => p,
        Err(e) => return retry(StatusCode::BAD_REQUEST, pages::capitalise(&e.0)).await,
    };
    let (account, identity) = match redeem_reset(
        &*state.store,
        &state.hasher,
        host,
        &account.name,
        &usable.token,
        password,
    )
    .await
    {
        Ok(done) => done,
        Err(HashedWriteError::Store(StoreError::Provision(ProvisionError::PasswordRefused(
            why,
        )))) => {
            return retry(StatusCode::BAD_REQUEST, pages::capitalise(&why)).await;
        }
        Err(HashedWriteError::Store(StoreError::Provision(_))) => {
            let page = retry(StatusCode::SERVICE_UNAVAILABLE, pages::SERVICE_BUSY.into()).await;
            return pages::service_busy(page);
        }
        Err(HashedWriteError::Store(e)) => return Err(page_error(host, e)),
        Err(HashedWriteError::Hash(e)) => return Err(Outage::of_hash(&e, "a reset page").into()),
    };
    let base = pages::base_path(host);
    let address = format!("{}@{}", account.name, account.host);
    let page = ResetPage {
        base: &base,
        site_name: &host.site_name,
        address: address.clone(),
        expires_iso: String::new(),
        expires_human: String::new(),
        error: None,
        csrf: "",
        done: Some(address),
    };
    Ok(pages::signed_in_page(&page, &identity, host))
}

/// What `POST /api/invite/{token}` takes for a reset invite: the password
/// alone. A name is refused rather than ignored: the sender thinks it is
/// registering, and would be changing someone's password instead.
#[derive(Deserialize)]
struct ResetCredentials {
    password: String,
    #[serde(default)]
    name: Option<serde_json::Value>,
}

/// `POST /api/invite/{token}` of a reset invite: 204 with the new session's
/// cookie.
pub(super) async fn accept_json(
    req: &HttpRequest,
    raw: &[u8],
    state: &web::Data<AppState>,
    token: &InviteToken,
    account_id: i64,
    host: &HostConfig,
) -> Result<HttpResponse, ApiError> {
    let creds: ResetCredentials = api::parse_json(req, raw, false)?
        .ok_or_else(|| ApiError::bad("bad_json", "the body must be a JSON object"))?;
    if creds.name.is_some() {
        return Err(ApiError::bad(
            "reset_invite",
            "this invite resets the password of an existing account: send only \"password\"",
        ));
    }
    let not_found = || ApiError::NotFound(api::INVITE_NOT_FOUND);
    let account = match target(state, account_id).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(e) => return Err(api::store_failed(e)),
    };
    let password = Password::parse(&creds.password, &account.name, &host.name)
        .map_err(|e| ApiError::bad("invalid_password", e.0))?;
    match redeem_reset(
        &*state.store,
        &state.hasher,
        host,
        &account.name,
        token,
        password,
    )
    .await
    {
        Ok((_, identity)) => Ok(HttpResponse::NoContent()
            .cookie(auth::identity_cookie(&identity, host))
            .finish()),
        Err(HashedWriteError::Store(
            StoreError::NotFound
            | StoreError::InviteUsed
            | StoreError::InviteExpired
            | StoreError::InviteRevoked,
        )) => Err(not_found()),
        Err(e) => Err(api::hashed_write_failed(e)),
    }
}
