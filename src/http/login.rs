//! Pages for people who already have an account: `/login` (sign in, then on
//! to `?next=`), `/logout`, and `/account` (change the password, sign out
//! other sessions). Same look, headers and CSRF protection as the invite page.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use url::Url;

use super::auth;
use super::body::Body;
use super::pages::{
    self, base_path, csrf_nonce, form_body, form_nonce, no_store, render, set_form_nonce, PageError,
};
use super::AppState;
use crate::config::HostConfig;
use crate::domain::Password;
use crate::service::sessions;
use crate::service::signin::{self, ChangeError, SignInContext, SignInError};
use crate::store::AccountRecord;

/// What the sign-in form's CSRF tag is bound to (there is no invite).
const LOGIN_FORM: &str = "login";
/// What the account page's forms' CSRF tags are bound to.
const ACCOUNT_FORM: &str = "account";

/// Registers `/login`, `/logout`, `/account` and its two form targets.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/login")
            .route(web::get().to(show_login))
            .route(web::head().to(show_login))
            .route(web::post().to(login)),
    )
    .service(web::resource("/logout").route(web::post().to(logout)))
    .service(
        web::resource("/account")
            .route(web::get().to(show_account))
            .route(web::head().to(show_account)),
    )
    .service(web::resource("/account/password").route(web::post().to(change_password)))
    .service(web::resource("/account/sessions").route(web::post().to(end_other_sessions)));
}

/// Where a sign-in attempt comes from and which host it is addressed to, as
/// the sign-in use case needs it; shared with `POST /api/auth/login`.
pub(super) fn sign_in_context<'s>(state: &'s AppState, req: &HttpRequest) -> SignInContext<'s> {
    SignInContext {
        limiter: &state.login_limiter,
        client: super::client_ip(req, &state.config.trusted_proxies),
        addressed: auth::addressed_host(state, req),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    base: &'a str,
    site_name: &'a str,
    host: &'a str,
    error: Option<&'a str>,
    name: &'a str,
    next: &'a str,
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    base: &'a str,
    site_name: &'a str,
    address: String,
    error: Option<&'a str>,
    notice: Option<&'a str>,
    csrf: &'a str,
}

/// The sign-in form's fields; all optional so a missing one is judged as a
/// wrong sign-in or a stale form, not as unreadable.
#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `?next=` of the sign-in page.
#[derive(Debug, Default, Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// The password form's fields.
#[derive(Debug, Default, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

/// The fields of a form that carries nothing but its CSRF tag.
#[derive(Debug, Default, Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

const STALE_FORM: &str =
    "This form had expired or came from another site. Nothing was changed; please submit it again.";

/// Where `next` may send someone who signed in on `host`: a path on this
/// host (a single `/` then anything but `/` or `\`), or an absolute http(s)
/// URL on this host's public origin or an origin it lists in
/// `allowed_redirects`. `None` for anything else.
///
/// Browsers read `\` as `/` and drop tabs and newlines inside URLs, so
/// `/\evil` or `/<TAB>/evil` would leave the host: any byte outside visible
/// ASCII, and any `\`, refuses the target outright. What passes is
/// re-serialised by the `url` crate (the WHATWG URL parser browsers follow),
/// and a path that normalises to `//...` is refused too.
fn redirect_target(next: &str, host: &HostConfig) -> Option<String> {
    if next.is_empty()
        || next
            .bytes()
            .any(|b| !(0x21..=0x7e).contains(&b) || b == b'\\')
    {
        return None;
    }
    if next.starts_with('/') {
        if next.starts_with("//") {
            return None;
        }
        // Resolved against a stand-in origin: only the path, query and
        // fragment are kept, and they must stay on that origin.
        let base = Url::parse("http://this-host.invalid/").ok()?;
        let url = base.join(next).ok()?;
        if url.origin() != base.origin() || url.path().starts_with("//") {
            return None;
        }
        let mut target = url.path().to_owned();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        if let Some(f) = url.fragment() {
            target.push('#');
            target.push_str(f);
        }
        return Some(target);
    }
    let url = Url::parse(next).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    let own = Url::parse(host.public_url.as_str())
        .ok()?
        .origin()
        .ascii_serialization();
    (origin == own || host.allowed_redirects.contains(&origin)).then(|| url.to_string())
}

/// The Content-Security-Policy of the sign-in page: `form-action` must also
/// allow the origins a sign-in may be sent on to, as browsers apply it to
/// the redirect that follows the form.
fn login_policy(host: &HostConfig) -> Option<String> {
    if host.allowed_redirects.is_empty() {
        return None;
    }
    let extra = host.allowed_redirects.join(" ");
    Some(
        super::CONTENT_SECURITY_POLICY
            .replace("form-action 'self'", &format!("form-action 'self' {extra}")),
    )
}

/// 303 to `location`, never cached.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The sign-in page's address that comes back to the account page.
fn login_for_account(base: &str) -> String {
    let next: String =
        url::form_urlencoded::byte_serialize(format!("{base}/account").as_bytes()).collect();
    format!("{base}/login?next={next}")
}

/// Renders the sign-in form with `status`, `error` and the name typed.
fn login_page(
    req: &HttpRequest,
    state: &AppState,
    host: &HostConfig,
    status: StatusCode,
    form: &LoginForm,
    error: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let nonce = form_nonce(req, host)?;
    let csrf = state.form_key.sign_page(LOGIN_FORM, &nonce);
    let base = base_path(host);
    let page = LoginPage {
        base: &base,
        site_name: &host.site_name,
        host: host.name.as_str(),
        error,
        name: &form.name,
        next: &form.next,
        csrf: &csrf,
    };
    let mut res = render(status, &page);
    no_store(&mut res);
    if let Some(policy) = login_policy(host) {
        if let Ok(value) = header::HeaderValue::from_str(&policy) {
            res.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    set_form_nonce(&mut res, host, nonce);
    Ok(res)
}

/// The host a page request is addressed to; pages for none are not found
/// (no cookie of theirs could be read back there).
/// The first steps of every form POST on these pages, in this order: the
/// body is read (so a broken one is refused before anything else), the host
/// the request is addressed to is found (`None`: the caller answers 404),
/// and the form is parsed from the body.
fn posted<'s, F: for<'de> Deserialize<'de>>(
    state: &'s AppState,
    req: &HttpRequest,
    body: Body,
) -> Result<Option<(&'s HostConfig, F)>, PageError> {
    let raw = body.bytes()?;
    let Some(host) = addressed(state, req) else {
        return Ok(None);
    };
    Ok(Some((host, form_body(req, &raw)?)))
}

fn addressed<'s>(state: &'s AppState, req: &HttpRequest) -> Option<&'s HostConfig> {
    auth::addressed_host(state, req)
}

/// `GET /login[?next=...]`: the sign-in form. Changes nothing on the server.
async fn show_login(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some(host) = addressed(&state, &req) else {
        return Ok(super::not_found().await);
    };
    // An unreadable query only loses its `next`.
    let query: NextQuery = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let form = LoginForm {
        next: query.next,
        ..LoginForm::default()
    };
    login_page(&req, &state, host, StatusCode::OK, &form, None)
}

/// `POST /login`: signs in and sends the browser on (303) to `next` when it
/// is allowed, else to the account page.
async fn login(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some((host, mut form)) = posted::<LoginForm>(&state, &req, body)? else {
        return Ok(super::not_found().await);
    };
    let password = std::mem::take(&mut form.password);
    let retry = |status, why: &str| login_page(&req, &state, host, status, &form, Some(why));
    let result = match sign_in_context(&state, &req).count_attempt() {
        Err(e) => Err(e),
        Ok(attempt) => {
            let csrf_ok = csrf_nonce(&req, host)
                .is_some_and(|nonce| state.form_key.verify_page(LOGIN_FORM, &nonce, &form.csrf));
            if !csrf_ok {
                return retry(StatusCode::FORBIDDEN, STALE_FORM);
            }
            signin::sign_in(
                &*state.store,
                &state.hasher,
                &state.config,
                attempt,
                &form.name,
                password,
            )
            .await
        }
    };
    match result {
        Ok(signed) => {
            let base = base_path(host);
            let target =
                redirect_target(&form.next, host).unwrap_or_else(|| format!("{base}/account"));
            let mut res = see_other(&target);
            let _ = res.add_cookie(&auth::identity_cookie(&signed.identity, signed.host));
            Ok(res)
        }
        Err(SignInError::Wrong) => retry(
            StatusCode::UNAUTHORIZED,
            "Wrong name or password; please try again.",
        ),
        Err(SignInError::TooMany(secs)) => too_many(
            retry(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts; please wait a minute and try again.",
            ),
            secs,
        ),
        // Cannot happen here (the request names its host); worded anyway.
        Err(SignInError::AmbiguousHost) => retry(
            StatusCode::BAD_REQUEST,
            "Sign in with your whole address, name@host.",
        ),
        Err(SignInError::Unavailable(outage)) => Err(outage.into()),
    }
}

/// Adds `Retry-After` to a 429 page.
fn too_many(page: Result<HttpResponse, PageError>, secs: u64) -> Result<HttpResponse, PageError> {
    page.map(|mut res| {
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        res
    })
}

/// The account signed in on the host this request is addressed to, if any.
async fn account_of(
    state: &AppState,
    req: &HttpRequest,
    host: &HostConfig,
) -> Result<Option<AccountRecord>, PageError> {
    match auth::signed_in(state, req).await {
        Ok(account) => Ok(account.filter(|a| a.host == host.name)),
        Err(e) => Err(pages::store_failed(e)),
    }
}

/// Renders the account page.
fn account_page(
    req: &HttpRequest,
    state: &AppState,
    host: &HostConfig,
    account: &AccountRecord,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let nonce = form_nonce(req, host)?;
    let csrf = account_binding(state, req, &nonce)
        .map(|bound| state.form_key.sign_page(ACCOUNT_FORM, &bound))
        .ok_or(PageError::Unavailable)?;
    let base = base_path(host);
    let page = AccountPage {
        base: &base,
        site_name: &host.site_name,
        address: format!("{}@{}", account.name, account.host),
        error,
        notice,
        csrf: &csrf,
    };
    let mut res = render(status, &page);
    no_store(&mut res);
    set_form_nonce(&mut res, host, nonce);
    Ok(res)
}

/// What the account page's forms are signed for: the browser's nonce and
/// its session, so that a nonce cookie planted by a sibling site (possible
/// on http hosts, where the cookie has no `__Host-` prefix) together with a
/// tag that site got for its own session signs nothing for this one.
fn account_binding(state: &AppState, req: &HttpRequest, nonce: &str) -> Option<String> {
    let session = auth::identity_token(state, req)?.digest();
    Some(format!(
        "{nonce}.{}",
        crate::crypto::encode_base64url(session.as_bytes())
    ))
}

/// Whether a form on the account page carries the tag signed for this
/// browser and this session.
fn account_csrf_ok(state: &AppState, req: &HttpRequest, host: &HostConfig, field: &str) -> bool {
    csrf_nonce(req, host)
        .and_then(|nonce| account_binding(state, req, &nonce))
        .is_some_and(|bound| state.form_key.verify_page(ACCOUNT_FORM, &bound, field))
}

/// `GET /account`: who is signed in, with the account's forms; not signed
/// in, 303 to the sign-in page, which comes back here.
async fn show_account(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some(host) = addressed(&state, &req) else {
        return Ok(super::not_found().await);
    };
    match account_of(&state, &req, host).await? {
        Some(account) => account_page(&req, &state, host, &account, StatusCode::OK, None, None),
        None => Ok(see_other(&login_for_account(&base_path(host)))),
    }
}

/// `POST /account/password`: changes the password with the current one and
/// signs out every other session.
async fn change_password(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some((host, form)) = posted::<PasswordForm>(&state, &req, body)? else {
        return Ok(super::not_found().await);
    };
    let Some(account) = account_of(&state, &req, host).await? else {
        return Ok(see_other(&login_for_account(&base_path(host))));
    };
    let again =
        |status, error: &str| account_page(&req, &state, host, &account, status, Some(error), None);
    if !account_csrf_ok(&state, &req, host, &form.csrf) {
        return again(StatusCode::FORBIDDEN, STALE_FORM);
    }
    if form.password != form.password2 {
        return again(
            StatusCode::BAD_REQUEST,
            "The two new passwords differ; please type them again.",
        );
    }
    let password = match Password::parse(&form.password, &account.name, &account.host) {
        Ok(p) => p,
        Err(e) => return again(StatusCode::BAD_REQUEST, &super::pages::capitalise(&e.0)),
    };
    // Signed in, so the request carries its identity token.
    let Some(keep) = auth::identity_token(&state, &req).map(|t| t.digest()) else {
        return Ok(see_other(&login_for_account(&base_path(host))));
    };
    let attempt = match sign_in_context(&state, &req).count_attempt() {
        Ok(a) => a,
        Err(e) => return change_failed(ChangeError::SignIn(e), again, host),
    };
    match signin::change_password(
        &*state.store,
        &state.hasher,
        attempt,
        &account,
        form.current,
        password,
        keep,
    )
    .await
    {
        Ok(()) => account_page(
            &req,
            &state,
            host,
            &account,
            StatusCode::OK,
            None,
            Some("Your password was changed, and every other session was signed out."),
        ),
        Err(e) => change_failed(e, again, host),
    }
}

/// The answer to a password change that failed, on the account page
/// (`again`) where it can be told there.
fn change_failed(
    e: ChangeError,
    again: impl Fn(StatusCode, &str) -> Result<HttpResponse, PageError>,
    host: &HostConfig,
) -> Result<HttpResponse, PageError> {
    match e {
        ChangeError::SignIn(SignInError::Wrong) => again(
            StatusCode::UNAUTHORIZED,
            "Your current password is wrong; nothing was changed.",
        ),
        ChangeError::SignIn(SignInError::TooMany(secs)) => too_many(
            again(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts; please wait a minute and try again.",
            ),
            secs,
        ),
        ChangeError::Gone => Ok(see_other(&login_for_account(&base_path(host)))),
        ChangeError::SignIn(SignInError::Unavailable(outage)) => Err(outage.into()),
        // Cannot happen: the account page knows its host.
        ChangeError::SignIn(SignInError::AmbiguousHost) => Err(PageError::Internal),
    }
}

/// `POST /account/sessions`: signs out every other session, keeping the
/// password.
async fn end_other_sessions(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some((host, form)) = posted::<CsrfOnly>(&state, &req, body)? else {
        return Ok(super::not_found().await);
    };
    let (Some(account), Some(token)) = (
        account_of(&state, &req, host).await?,
        auth::identity_token(&state, &req),
    ) else {
        return Ok(see_other(&login_for_account(&base_path(host))));
    };
    if !account_csrf_ok(&state, &req, host, &form.csrf) {
        return account_page(
            &req,
            &state,
            host,
            &account,
            StatusCode::FORBIDDEN,
            Some(STALE_FORM),
            None,
        );
    }
    match sessions::end_others(&*state.store, &account, &token).await {
        Ok(_) => account_page(
            &req,
            &state,
            host,
            &account,
            StatusCode::OK,
            None,
            Some("Every other session was signed out."),
        ),
        Err(e) => Err(pages::store_failed(e)),
    }
}

/// `POST /logout`: ends this session, clears the cookie, 303 to `/login`.
/// Without a session there is nothing to forge, and the answer is the same.
async fn logout(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some((host, form)) = posted::<CsrfOnly>(&state, &req, body)? else {
        return Ok(super::not_found().await);
    };
    if let Some(account) = account_of(&state, &req, host).await? {
        if !account_csrf_ok(&state, &req, host, &form.csrf) {
            return account_page(
                &req,
                &state,
                host,
                &account,
                StatusCode::FORBIDDEN,
                Some(STALE_FORM),
                None,
            );
        }
        if let Some(token) = auth::identity_token(&state, &req) {
            if let Err(e) = sessions::end(&*state.store, &token).await {
                return Err(pages::store_failed(e));
            }
        }
    }
    let mut res = see_other(&format!("{}/login", base_path(host)));
    let _ = res.add_cookie(&auth::clear_identity_cookie(host));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::redirect_target;
    use crate::config::Config;

    fn host() -> crate::config::HostConfig {
        let mut h = Config::load(None)
            .unwrap()
            .hosts
            .into_values()
            .next()
            .unwrap();
        h.public_url = crate::config::PublicUrl::parse("https://chat.test").unwrap();
        h.allowed_redirects = vec!["https://app.test".to_owned()];
        h
    }

    #[test]
    fn next_keeps_paths_on_this_host_and_listed_origins() {
        let h = host();
        for (next, target) in [
            ("/some/path?a=1#top", "/some/path?a=1#top"),
            ("/", "/"),
            ("/a/../b", "/b"),
            ("/%2F%2Fevil.test", "/%2F%2Fevil.test"),
            ("https://app.test/x", "https://app.test/x"),
            ("https://APP.test:443/x", "https://app.test/x"),
            ("https://chat.test/y", "https://chat.test/y"),
        ] {
            assert_eq!(redirect_target(next, &h).as_deref(), Some(target), "{next}");
        }
    }

    #[test]
    fn next_refuses_every_way_off_the_host() {
        let h = host();
        for next in [
            "",
            "//evil.test",
            "///evil.test",
            "/\\evil.test",
            "\\\\evil.test",
            "/\t/evil.test",
            "/\n/evil.test",
            " /x",
            "/a/../..//evil.test",
            "https://evil.test",
            "https:evil.test",
            "http://app.test/x",
            "https://app.test:8443/",
            "https://app.test@evil.test/",
            "https://user:pw@app.test/",
            "https://evil.test\\@app.test/",
            "javascript:alert(1)",
            "data:text/html,x",
            "evil.test",
            "%2F%2Fevil.test",
            "/\u{3000}/evil.test",
        ] {
            assert_eq!(redirect_target(next, &h), None, "{next:?}");
        }
    }
}
