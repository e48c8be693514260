//! The invite landing page and web registration (`/invite?TOKEN`), in the
//! manner of Prosody's mod_invites_page and mod_invites_register_web.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

use super::body::{self, Body, BodyError};
use super::AppState;
use super::{auth, reset};
use crate::config::HostConfig;
use crate::crypto::{self, FormKey};
use crate::domain::{AccountName, IdentityToken, InviteToken, Password};
use crate::provision::ProvisionError;
use crate::service::{self, HashedWriteError, Outage, Unusable};
use crate::store::{InviteRecord, StoreError};

/// The cookie that pairs a registration form with the browser that loaded it:
/// a random nonce, whose HMAC with the invite's id under the server's form
/// key is the form's hidden field (see [`FormKey`]). On https it carries the
/// `__Host-` prefix, so no sibling subdomain can plant a value of its own
/// (browsers refuse such a cookie unless it is Secure, host-only and on `/`).
pub(super) fn csrf_cookie(host: &HostConfig) -> &'static str {
    if host.public_url.is_https() {
        "__Host-invite_csrf"
    } else {
        "invite_csrf"
    }
}

/// `/invite`: GET shows the page, POST registers.
pub fn resource() -> actix_web::Resource {
    web::resource("/invite")
        .route(web::get().to(show))
        .route(web::head().to(show))
        .route(web::post().to(register))
}

/// `/static/style.css`: the pages' only stylesheet, compiled in.
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(include_str!("../../static/style.css"))
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage<'a> {
    base: &'a str,
    site_name: &'a str,
    host: &'a str,
    inviter: Option<&'a str>,
    expires_iso: String,
    expires_human: String,
    error: Option<String>,
    name: &'a str,
    /// The only name this invite registers, shown read-only.
    fixed_name: bool,
    /// How many accounts it can still create.
    uses_remaining: u32,
    csrf: &'a str,
    qr_svg: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    base: &'a str,
    site_name: &'a str,
    heading: &'a str,
    message: &'a str,
    advice: Option<&'a str>,
    /// Offers the sign-in page (to someone whose invite is spent).
    sign_in: bool,
}

#[derive(Template)]
#[template(path = "registered.html")]
struct RegisteredPage<'a> {
    base: &'a str,
    site_name: &'a str,
    address: String,
    next_text: Option<&'a str>,
    next_url: Option<&'a str>,
}

/// Everything that ends in an error page rather than the form.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No such invite (or not a token at all).
    #[error("invite not found")]
    NotFound,
    /// The invite was used.
    #[error("invite used")]
    Used { site_name: String, base: String },
    /// The invite expired.
    #[error("invite expired")]
    Expired { site_name: String, base: String },
    #[error("invite withdrawn")]
    Revoked { site_name: String, base: String },
    /// The body was too large.
    #[error("request too large")]
    TooLarge,
    /// The body could not be read.
    #[error("bad request")]
    BadRequest(String),
    /// The store is briefly unavailable, or the hashing queue is full.
    #[error("unavailable")]
    Unavailable,
    /// Something failed that trying again will not mend; it was logged.
    #[error("internal error")]
    Internal,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Used { .. } | Self::Expired { .. } | Self::Revoked { .. } => StatusCode::GONE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let ask = "Ask the person who invited you for a new invite.";
        let (site, base, heading, message, advice) = match self {
            Self::NotFound => (
                "invite-server",
                "",
                "Invite not found",
                "This invite link is not valid. Check that you copied the whole link.",
                Some(ask),
            ),
            Self::Used { site_name, base } => (
                site_name.as_str(),
                base.as_str(),
                "This invite has already been used",
                "Each invite creates one account, and this one has been used.",
                Some("If you created an account with it, sign in with that account. Otherwise ask the person who invited you for a new invite."),
            ),
            Self::Expired { site_name, base } => (
                site_name.as_str(),
                base.as_str(),
                "This invite has expired",
                "Invites are only valid for a limited time, and this one has run out.",
                Some(ask),
            ),
            Self::Revoked { site_name, base } => (
                site_name.as_str(),
                base.as_str(),
                "This invite was withdrawn",
                "The people who run this site withdrew this invite, so it can no longer be used.",
                Some(ask),
            ),
            Self::TooLarge => (
                "invite-server",
                "",
                "Request too large",
                "The form sent more data than a registration needs.",
                None,
            ),
            Self::BadRequest(why) => (
                "invite-server",
                "",
                "Bad request",
                why.as_str(),
                None,
            ),
            Self::Unavailable => (
                "invite-server",
                "",
                "Temporarily unavailable",
                "Something went wrong on our side. Nothing was changed; please try again in a moment.",
                None,
            ),
            Self::Internal => (
                "invite-server",
                "",
                "Something went wrong",
                "Something went wrong on our side, and it has been logged for the people who run this site. Nothing was changed.",
                None,
            ),
        };
        let page = MessagePage {
            base,
            site_name: site,
            heading,
            message,
            advice,
            sign_in: matches!(self, Self::Used { .. }),
        };
        let mut res = render(self.status_code(), &page);
        no_store(&mut res);
        if matches!(self, Self::Unavailable) {
            // A busy store or a full hashing queue clears within a second or so.
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }
}

pub(super) fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "page rendering failed");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body("The page could not be rendered; please try again.\n")
        }
    }
}

/// Pages that carry a token must not be kept by caches or leak via Referer.
pub(super) fn no_store(res: &mut HttpResponse) {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
}

/// The path prefix of a host's public URL, for links to the stylesheet.
pub(super) fn base_path(host: &HostConfig) -> String {
    url::Url::parse(host.public_url.as_str())
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

impl From<BodyError> for PageError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Self::TooLarge,
            BodyError::Broken(why) => Self::BadRequest(why),
        }
    }
}

/// The page for a store error that the request had no answer of its own for.
pub(super) fn store_failed(e: StoreError) -> PageError {
    Outage::of_store(&e, "an invite page").into()
}

impl From<Outage> for PageError {
    fn from(outage: Outage) -> Self {
        match outage {
            Outage::Transient => Self::Unavailable,
            Outage::Permanent => Self::Internal,
        }
    }
}

/// An invite that can be used now, with its token and host.
pub(super) struct Usable<'s> {
    pub(super) token: InviteToken,
    pub(super) invite: InviteRecord,
    pub(super) host: &'s HostConfig,
}

/// The invite named by the query string, with its host, if it can be used
/// now; another host's invite is not found on a host's address.
async fn usable_invite<'s>(
    state: &'s AppState,
    req: &HttpRequest,
) -> Result<Usable<'s>, PageError> {
    let addressed = auth::addressed_host(state, req).map(|h| &h.name);
    service::usable_invite(&*state.store, &state.config, addressed, req.query_string())
        .await
        .map(|(token, invite, host)| Usable {
            token,
            invite,
            host,
        })
        .map_err(|e| match e {
            Unusable::NotFound => PageError::NotFound,
            Unusable::Used(host) => PageError::Used {
                site_name: host.site_name.clone(),
                base: base_path(host),
            },
            Unusable::Expired(host) => PageError::Expired {
                site_name: host.site_name.clone(),
                base: base_path(host),
            },
            Unusable::Revoked(host) => PageError::Revoked {
                site_name: host.site_name.clone(),
                base: base_path(host),
            },
            Unusable::Store(e) => store_failed(e),
        })
}

pub(super) fn human_time(t: DateTime<Utc>) -> String {
    t.format("%-d %B %Y at %H:%M UTC").to_string()
}

/// The invite link as an inline SVG QR code, at least 200 px across with a
/// four-module quiet zone, drawn as one path of horizontal runs of dark
/// modules in module units (scaled by `viewBox`). The `qrcode` crate's own
/// SVG renderer writes every dark module as its own subpath in pixel units:
/// the same picture in about four times the bytes. Written here because no
/// SVG renderer in a well-kept crate draws runs.
///
/// The mask each invite's code was drawn with is remembered, so that views
/// after the first skip scoring the eight masks (two thirds of the page's
/// cost even done as [`mask_penalty`] does it).
fn qr_svg(url: &str, invite_id: i64) -> String {
    match qr_modules(url, invite_id) {
        Some((colors, modules)) => render_qr(&colors, modules),
        // Only URLs longer than a QR code holds fail; the page works without it.
        None => String::new(),
    }
}

/// The modules of exactly the code `QrCode::new(url)` makes (row by row),
/// and how many there are across. Built from the crate's parts because its
/// choice of mask scores each of the eight with a boxed closure per module
/// (over 90 % of a code's cost, 350 µs per view here); [`mask_penalty`]
/// computes the same scores on a plain matrix.
fn qr_modules(url: &str, invite_id: i64) -> Option<(Vec<qrcode::Color>, usize)> {
    use qrcode::canvas::Canvas;
    use qrcode::EcLevel;
    // What `QrCode::new` does: the smallest version at error correction M.
    let bits = qrcode::bits::encode_auto(url.as_bytes(), EcLevel::M).ok()?;
    let version = bits.version();
    let (data, ec) =
        qrcode::ec::construct_codewords(&bits.into_bytes(), version, EcLevel::M).ok()?;
    let mut canvas = Canvas::new(version, EcLevel::M);
    canvas.draw_all_functional_patterns();
    canvas.draw_data(&data, &ec);
    let modules = usize::from(version.width().unsigned_abs());
    if let Some(mask) = QR_MASKS.remembered(invite_id) {
        canvas.apply_mask(mask);
        return Some((canvas.into_colors(), modules));
    }
    // As the crate does: the first of the masks with the least penalty.
    let (n, _, colors) = MASK_PATTERNS
        .iter()
        .enumerate()
        .map(|(n, mask)| {
            let mut c = canvas.clone();
            c.apply_mask(*mask);
            let colors = c.into_colors();
            let dark: Vec<bool> = colors.iter().map(|c| *c == qrcode::Color::Dark).collect();
            (n, mask_penalty(&dark, modules), colors)
        })
        .min_by_key(|(_, penalty, _)| *penalty)?;
    QR_MASKS.remember(invite_id, n);
    Some((colors, modules))
}

/// The masks the QR codes of recent invites were drawn with, by invite id.
static QR_MASKS: QrMasks = QrMasks(std::sync::Mutex::new(None));

/// The mask of each invite's QR code (its index in [`MASK_PATTERNS`]). A map
/// of ids to one byte, cleared when full, rather than an LRU crate: an
/// evicted entry only costs one more scoring, and a wrong one (impossible
/// while ids are unique) would still draw a valid code, since every mask does.
struct QrMasks(std::sync::Mutex<Option<std::collections::HashMap<i64, u8>>>);

/// At most this many invites' masks are kept (a few hundred KiB).
const QR_MASKS_KEPT: usize = 16_384;

impl QrMasks {
    fn remembered(&self, invite_id: i64) -> Option<qrcode::canvas::MaskPattern> {
        let masks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = *masks.as_ref()?.get(&invite_id)?;
        MASK_PATTERNS.get(usize::from(n)).copied()
    }

    fn remember(&self, invite_id: i64, n: usize) {
        let Ok(n) = u8::try_from(n) else { return };
        let mut masks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let masks = masks.get_or_insert_with(Default::default);
        if masks.len() >= QR_MASKS_KEPT {
            masks.clear();
        }
        masks.insert(invite_id, n);
    }
}

/// The eight masks of a (non-micro) QR code, in the crate's order.
const MASK_PATTERNS: [qrcode::canvas::MaskPattern; 8] = {
    use qrcode::canvas::MaskPattern::*;
    [
        Checkerboard,
        HorizontalLines,
        VerticalLines,
        DiagonalLines,
        LargeCheckerboard,
        Fields,
        Diamonds,
        Meadow,
    ]
};

/// The penalty `qrcode` 0.14 gives a masked code (`dark`, `n` x `n`, row by
/// row), computed as it does (`Canvas::compute_total_penalty_scores`, with
/// its u16 arithmetic), so the same mask wins: runs of five or more, 2x2
/// blocks, finder-like patterns, and the dark/light balance.
fn mask_penalty(dark: &[bool], n: usize) -> u16 {
    let at = |row: usize, col: usize, horizontal: bool| {
        if horizontal {
            dark[row * n + col]
        } else {
            dark[col * n + row]
        }
    };
    let mut total: u16 = 0;
    for horizontal in [true, false] {
        // Runs of 5 + k modules of one color cost 3 + k.
        for line in 0..n {
            let mut run = 1u16;
            for k in 1..=n {
                if k < n && at(line, k, horizontal) == at(line, k - 1, horizontal) {
                    run += 1;
                } else {
                    if run >= 5 {
                        total = total.wrapping_add(run - 2);
                    }
                    run = 1;
                }
            }
        }
    }
    // Every 2x2 block of one color costs 3.
    for y in 0..n - 1 {
        for x in 0..n - 1 {
            let c = dark[y * n + x];
            if dark[y * n + x + 1] == c
                && dark[(y + 1) * n + x] == c
                && dark[(y + 1) * n + x + 1] == c
            {
                total = total.wrapping_add(3);
            }
        }
    }
    // Dark-light-dark-dark-dark-light-dark without four light modules on one
    // side costs 40; the crate then takes off the 360 its finders score.
    const FINDER: [bool; 7] = [true, false, true, true, true, false, true];
    for horizontal in [true, false] {
        let mut score: u16 = 0;
        for line in 0..n {
            for j in 0..n.saturating_sub(6) {
                if (0..7).any(|k| at(line, j + k, horizontal) != FINDER[k]) {
                    continue;
                }
                let dark_in =
                    |from: usize, to: usize| (from..to.min(n)).any(|k| at(line, k, horizontal));
                if !dark_in(j.saturating_sub(4), j) || !dark_in(j + 7, j + 11) {
                    score = score.wrapping_add(40);
                }
            }
        }
        total = total.wrapping_add(score.wrapping_sub(360));
    }
    // The share of dark modules away from half, in half-percent.
    let ratio = dark.iter().filter(|d| **d).count() * 200 / dark.len().max(1);
    let balance = ratio.abs_diff(100);
    // At most 100: `ratio` is at most 200.
    total.wrapping_add(balance as u16)
}

/// The quiet zone around a QR code, in modules, as the standard asks.
const QR_QUIET_ZONE: usize = 4;
/// The least width and height of the QR image, in CSS pixels.
const QR_MIN_PIXELS: usize = 200;

/// The SVG for a `modules` x `modules` matrix of `colors` (row by row).
fn render_qr(colors: &[qrcode::Color], modules: usize) -> String {
    use std::fmt::Write as _;
    let across = modules + 2 * QR_QUIET_ZONE;
    // Whole pixels per module, as the crate's `min_dimensions(200, 200)` chose.
    let pixels = QR_MIN_PIXELS.div_ceil(across) * across;
    let mut svg = String::with_capacity(256 + colors.len() * 3);
    // Writing to a String cannot fail.
    let _ = write!(
        svg,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{px}" height="{px}""#,
            r#" viewBox="0 0 {n} {n}" shape-rendering="crispEdges">"#,
            r##"<rect width="{n}" height="{n}" fill="#fff"/><path fill="#000" d=""##,
        ),
        px = pixels,
        n = across,
    );
    for (y, row) in colors.chunks(modules.max(1)).enumerate() {
        let mut x = 0;
        while x < row.len() {
            if row[x] == qrcode::Color::Light {
                x += 1;
                continue;
            }
            let run = row[x..]
                .iter()
                .take_while(|c| **c == qrcode::Color::Dark)
                .count();
            let _ = write!(
                svg,
                "M{} {}h{run}v1h-{run}z",
                x + QR_QUIET_ZONE,
                y + QR_QUIET_ZONE
            );
            x += run;
        }
    }
    svg.push_str(r#""/></svg>"#);
    svg
}

/// The CSRF nonce in the request's cookie for `host`, if it is well formed.
pub(super) fn csrf_nonce(req: &HttpRequest, host: &HostConfig) -> Option<String> {
    req.cookie(csrf_cookie(host))
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 43 && crypto::is_base64url(v))
}

/// Renders the form for an invite, with its CSRF cookie. The browser's
/// existing nonce is kept, so a second tab or the back button still works.
fn form_page(
    req: &HttpRequest,
    key: &FormKey,
    status: StatusCode,
    usable: &Usable<'_>,
    name: &str,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let Usable {
        token,
        invite,
        host,
    } = usable;
    let nonce = form_nonce(req, host)?;
    let csrf = key.sign(invite.id, &nonce);
    let base = base_path(host);
    let page = InvitePage {
        base: &base,
        site_name: &host.site_name,
        host: host.name.as_str(),
        inviter: service::public_inviter(invite),
        expires_iso: invite.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires_human: human_time(invite.expires_at),
        error,
        name: invite.fixed_name.as_deref().unwrap_or(name),
        fixed_name: invite.fixed_name.is_some(),
        uses_remaining: invite.uses_remaining(),
        csrf: &csrf,
        qr_svg: qr_svg(&host.invite_url(token.expose()), invite.id),
    };
    let mut res = render(status, &page);
    no_store(&mut res);
    set_form_nonce(&mut res, host, nonce);
    Ok(res)
}

/// The browser's CSRF nonce if it has one (so a second tab or the back
/// button still works), or a new one.
pub(super) fn form_nonce(req: &HttpRequest, host: &HostConfig) -> Result<String, PageError> {
    match csrf_nonce(req, host) {
        Some(n) => Ok(n),
        None => crypto::random_base64url(32).map_err(|_| PageError::Internal),
    }
}

/// Sets the CSRF nonce cookie a page's forms were signed for.
pub(super) fn set_form_nonce(res: &mut HttpResponse, host: &HostConfig, nonce: String) {
    // A cookie that cannot be added only costs the form a resubmission.
    let _ = res.add_cookie(&csrf_cookie_for(host, nonce));
}

/// The cookie that carries a form's CSRF nonce on `host`.
pub(super) fn csrf_cookie_for<'c>(host: &HostConfig, nonce: String) -> Cookie<'c> {
    Cookie::build(csrf_cookie(host), nonce)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(host.public_url.is_https())
        .finish()
}

/// A form body, which must be sent as `application/x-www-form-urlencoded`.
pub(super) fn form_body<T: for<'de> Deserialize<'de>>(
    req: &HttpRequest,
    raw: &[u8],
) -> Result<T, PageError> {
    if body::content_type(req).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(PageError::BadRequest(
            "The form must be sent as application/x-www-form-urlencoded.".into(),
        ));
    }
    serde_urlencoded::from_bytes(raw)
        .map_err(|_| PageError::BadRequest("The form data could not be read.".into()))
}

/// `GET /invite?TOKEN`: the landing page. Changes nothing on the server.
async fn show(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    let usable = usable_invite(&state, &req).await?;
    if usable.invite.reset_account_id.is_some() {
        return reset::reset_form(&req, &state, StatusCode::OK, &usable, None).await;
    }
    form_page(&req, &state.form_key, StatusCode::OK, &usable, "", None)
}

/// The registration form's fields; all optional so a missing one is reported
/// as a rule, not as a parse failure.
#[derive(Debug, Default, Deserialize)]
struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

/// `POST /invite?TOKEN`: creates the account, consumes the invite and signs in.
async fn register(
    req: HttpRequest,
    body: Body,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let raw = body.bytes()?;
    let usable = usable_invite(&state, &req).await?;
    let host = usable.host;
    if usable.invite.reset_account_id.is_some() {
        return reset::redeem(&req, &raw, &state, &usable).await;
    }
    let form: RegisterForm = form_body(&req, &raw)?;
    let retry = |status: StatusCode, why: String| {
        form_page(
            &req,
            &state.form_key,
            status,
            &usable,
            &form.name,
            Some(why),
        )
    };

    // Only a field the server signed, for this invite and this browser's
    // nonce, passes; an equal cookie and field of the sender's making do not.
    let csrf_ok = csrf_nonce(&req, host)
        .is_some_and(|nonce| state.form_key.verify(usable.invite.id, &nonce, &form.csrf));
    if !csrf_ok {
        return retry(
            StatusCode::FORBIDDEN,
            "This form had expired or came from another site. Nothing was saved; please submit it again.".into(),
        );
    }
    let name = match AccountName::parse(&form.name) {
        Ok(n) => n,
        Err(e) => {
            return retry(
                StatusCode::BAD_REQUEST,
                format!("Please choose another name: {e}."),
            )
        }
    };
    if form.password != form.password2 {
        return retry(
            StatusCode::BAD_REQUEST,
            "The two passwords differ; please type them again.".into(),
        );
    }
    let password = match Password::parse(&form.password, &name, &host.name) {
        Ok(p) => p,
        Err(e) => return retry(StatusCode::BAD_REQUEST, capitalise(&e.0)),
    };
    let taken = format!(
        "The name {name} is taken on {}; please choose another.",
        host.name
    );
    match service::register(
        &*state.store,
        &state.hasher,
        host,
        &usable.token,
        &usable.invite,
        name,
        password,
    )
    .await
    {
        Ok((account, identity)) => {
            let base = base_path(host);
            let page = RegisteredPage {
                base: &base,
                site_name: &host.site_name,
                address: format!("{}@{}", account.name, account.host),
                next_text: host.after_registration_text.as_deref(),
                next_url: host.after_registration_url.as_deref(),
            };
            Ok(signed_in_page(&page, &identity, host))
        }
        Err(HashedWriteError::Hash(e)) => Err(Outage::of_hash(&e, "an invite page").into()),
        Err(HashedWriteError::Store(e)) => match e {
            StoreError::NameTaken => retry(StatusCode::CONFLICT, taken),
            StoreError::InviteUsed => Err(PageError::Used {
                site_name: host.site_name.clone(),
                base: base_path(host),
            }),
            StoreError::InviteExpired => Err(PageError::Expired {
                site_name: host.site_name.clone(),
                base: base_path(host),
            }),
            StoreError::InviteRevoked => Err(PageError::Revoked {
                site_name: host.site_name.clone(),
                base: base_path(host),
            }),
            StoreError::NameNotAllowed => retry(
                StatusCode::BAD_REQUEST,
                "This invite is for one name only; please register with that name.".into(),
            ),
            StoreError::NotFound => Err(PageError::NotFound),
            StoreError::Provision(ProvisionError::PasswordRefused(why)) => {
                retry(StatusCode::BAD_REQUEST, capitalise(&why))
            }
            StoreError::Provision(_) => {
                service_busy(retry(StatusCode::SERVICE_UNAVAILABLE, SERVICE_BUSY.into()))
            }
            StoreError::InviteReserved => service_busy(retry(
                StatusCode::SERVICE_UNAVAILABLE,
                INVITE_RESERVED.into(),
            )),
            StoreError::InviteQuota | StoreError::Backend(_) => Err(store_failed(e)),
        },
    }
}

/// In words, why a registration could not finish now though nothing was
/// wrong with it: another registration holds the invite's last use.
pub(super) const INVITE_RESERVED: &str = "Someone is registering with this invite right now. \
    Nothing was saved; if their registration does not finish, please try again in a minute.";

/// In words, why a registration could not finish now though nothing was
/// wrong with it: the account service failed; the invite stays usable.
pub(super) const SERVICE_BUSY: &str = "The service your account is for could not create it just \
    now. Nothing was saved and your invite still works; please try again in a few minutes.";

/// Marks a form page answered because the account service (or another
/// registration) is busy: 503 with `Retry-After`.
pub(super) fn service_busy(
    page: Result<HttpResponse, PageError>,
) -> Result<HttpResponse, PageError> {
    page.map(|mut res| {
        res.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static(RETRY_LATER_SECS),
        );
        res
    })
}

/// What `Retry-After` says when the account service failed: long enough for
/// a restart, short enough that a person waiting is not lost.
pub(super) const RETRY_LATER_SECS: &str = "30";

/// The page after a form signed the browser in: the identity cookie set,
/// the form's CSRF cookie removed, nothing cached.
pub(super) fn signed_in_page(
    page: &impl Template,
    identity: &IdentityToken,
    host: &HostConfig,
) -> HttpResponse {
    let mut res = render(StatusCode::OK, page);
    no_store(&mut res);
    let _ = res.add_cookie(&auth::identity_cookie(identity, host));
    let mut clear = Cookie::build(csrf_cookie(host), "")
        .path("/")
        .secure(host.public_url.is_https())
        .finish();
    clear.make_removal();
    let _ = res.add_cookie(&clear);
    res
}

pub(super) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::qr_modules;
    use qrcode::QrCode;

    #[test]
    fn the_qr_code_is_the_one_the_crate_makes_whatever_the_link() {
        // Lengths across several versions, and many contents per length, so
        // that every mask is the winner somewhere.
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..300u32 {
            let token: String = (0..(20 + i % 60))
                .map(|k| {
                    char::from(
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                            [((k * 7 + i * 13 + k * k * i) % 64) as usize],
                    )
                })
                .collect();
            let url = format!("https://chat{i}.example.org/invite?{token}");
            let code = QrCode::new(url.as_bytes()).expect("encodes");
            // Scored on the first call, drawn with the remembered mask on the second.
            for _ in 0..2 {
                let (colors, modules) = qr_modules(&url, i64::from(i)).expect("encodes");
                assert_eq!(modules, code.width(), "{url}");
                assert_eq!(colors, code.to_colors(), "{url}");
            }
            seen.insert(code.width());
        }
        assert!(seen.len() > 2, "too few versions tried: {seen:?}");
    }
}
