//! The OpenAPI 3.1 document of the HTTP API, served at `GET /api/openapi.json`.
//!
//! Each handler carries its own `#[utoipa::path]` (beside it, so it changes
//! with it); this module assembles them, holds the shapes of the answers the
//! handlers build with `json!`, and adds what every operation of a surface
//! shares: the 503 of a store that is briefly unavailable and the 500 of one
//! that failed (from `status_code()` of the error enums, since they come
//! from shared helpers) and, on the admin API, the key check's 400/401/403.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document, built once from the annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "invite-server",
        description = "Mint sign-up invites with an API key, register with them, and check \
                       sessions for a reverse proxy. Every JSON error is `{\"error\", \"message\"}`."
    ),
    paths(
        super::invites_api::mint,
        super::invites_api::preflight,
        super::api::create_invite,
        super::api::show_invite,
        super::api::accept_invite,
        super::api::login,
        super::api::logout,
        super::api::check,
        super::admin::list_invites,
        super::admin::create_invite,
        super::admin::show_invite,
        super::admin::revoke_invite,
        super::admin::list_accounts,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Shared),
    tags(
        (name = "prosody", description = "Prosody mod_invites_api compatible minting"),
        (name = "invites", description = "Minting, showing and accepting invites"),
        (name = "auth", description = "Sessions: sign in, sign out, forward-auth check"),
        (name = "admin", description = "The admin API, for an admin-scope key"),
    )
)]
struct ApiDoc;

/// The document as JSON.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The resource serving the document; registered inside the `/api` scope.
pub fn resource() -> actix_web::Resource {
    web::resource("/openapi.json").route(web::get().to(openapi_json))
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "invites",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
               content_type = "application/json", body = Object))
)]
async fn openapi_json() -> HttpResponse {
    // Built per request (a few hundred microseconds, on a rare path) rather
    // than cached in the state, so it needs no place in AppState.
    HttpResponse::Ok().json(document())
}

/// Every JSON error answer: a stable code for programs, a sentence for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `bad_json`, `unauthorized`,
    /// `not_found`, `name_taken`, `too_many_requests`, `unavailable`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The invite `POST /api/invite` minted.
#[derive(Serialize, ToSchema)]
pub struct MintedInvite {
    /// The invite token (the secret part of the link).
    pub id: String,
    /// Who minted it: `api/token/<key id>` or `account/<account id>`.
    pub issuer: String,
    /// When it was minted (RFC 3339).
    pub issued_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The invite page's link.
    pub url: String,
    /// The invite's public id (not a secret), as the admin API and CLI name it.
    pub invite_id: String,
    /// How many accounts it can register.
    pub uses: u32,
}

/// Who issued an invite, as shown to its invitee.
#[derive(Serialize, ToSchema)]
pub struct Issuer {
    /// The public id of the issuer (an account or a key).
    pub id: String,
    /// The inviting account's name; `null` for a key.
    pub name: Option<String>,
}

/// An outstanding invite, as `GET /api/invite/{id}` shows it.
#[derive(Serialize, ToSchema)]
pub struct InviteInfo {
    /// Who issued it.
    pub issuer: Issuer,
    /// When it was minted (RFC 3339).
    pub issued_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// How many more accounts it can register.
    pub uses_remaining: u32,
    /// The one name it may register, or `null` for any.
    pub name: Option<String>,
}

/// A name and password: what registering with an invite, or signing in, takes.
#[derive(Serialize, ToSchema)]
pub struct Registration {
    /// The account name (`name` or, at sign-in, `name@host`).
    pub name: String,
    /// The password.
    pub password: String,
}

/// What accepting a password-reset invite takes: the new password only.
#[derive(Serialize, ToSchema)]
pub struct PasswordReset {
    /// The new password.
    pub password: String,
}

/// The body of `POST /api/invite/{id}`: a registration, or for a reset invite
/// only the new password.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a schema only: the handlers parse the two shapes themselves
pub enum Acceptance {
    /// Registers a new account.
    Registration(Registration),
    /// Sets a new password on the account a reset invite names.
    PasswordReset(PasswordReset),
}

/// The signed-in account `/api/auth/check` vouches for.
#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    /// The account name.
    pub name: String,
    /// Its host.
    pub host: String,
}

/// An invite as the admin API, `invites list --json` and `invites show` show it.
#[derive(Serialize, ToSchema)]
pub struct AdminInvite {
    /// Its public id.
    pub invite_id: String,
    /// Its host.
    pub host: String,
    /// Where it stands now.
    pub status: InviteStatus,
    /// What it does.
    pub kind: InviteKind,
    /// Who minted it: `api/token/<key id>`, `account/<account id>` or `cli`.
    pub source: String,
    /// The operator's note, if any.
    pub note: Option<String>,
    /// The one name it may register, or `null` for any.
    pub name: Option<String>,
    /// How many accounts it can register in all.
    pub uses_allowed: u32,
    /// How many it has registered.
    pub uses_spent: u32,
    /// When it was minted (RFC 3339).
    pub created_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// The accounts it registered.
    pub accounts: Vec<String>,
}

/// Where an invite stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the answers are built by `invites::invite_json`
pub enum InviteStatus {
    /// It can still register accounts.
    Pending,
    /// All its uses are spent.
    Used,
    /// It expired before they were.
    Expired,
    /// An operator revoked it.
    Revoked,
}

/// What an invite does.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only, as `InviteStatus`
pub enum InviteKind {
    /// It registers new accounts.
    Account,
    /// It resets the password of an existing account.
    Reset,
}

/// An invite just minted by the admin API: the invite object and its link.
#[derive(Serialize, ToSchema)]
pub struct AdminMinted {
    /// The invite.
    #[serde(flatten)]
    pub invite: AdminInvite,
    /// The invite page's link (shown only now).
    pub url: String,
}

/// One account an invite registered, and when.
#[derive(Serialize, ToSchema)]
pub struct InviteUse {
    /// The account name.
    pub name: String,
    /// When it registered (RFC 3339).
    pub registered_at: String,
}

/// An invite with when each of its accounts registered.
#[derive(Serialize, ToSchema)]
pub struct AdminInviteDetails {
    /// The invite.
    #[serde(flatten)]
    pub invite: AdminInvite,
    /// Its registrations, oldest first.
    pub registrations: Vec<InviteUse>,
}

/// A page of invites, newest first.
#[derive(Serialize, ToSchema)]
pub struct InvitePage {
    /// The invites of this page.
    pub invites: Vec<AdminInvite>,
    /// The cursor of the next page (`?after=`), or `null` on the last.
    pub next: Option<String>,
}

/// The host's accounts, oldest first.
#[derive(Serialize, ToSchema)]
pub struct AccountList {
    /// The accounts.
    pub accounts: Vec<crate::service::accounts::AccountView>,
}

/// Adds the security schemes, and the answers every operation of a surface
/// shares, which come from shared helpers rather than the handler's body.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<key id>/<secret>")
                    .description(Some("An API key, as `keys create` prints it"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "key_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("key"))),
        );
        // The cookie is `__Host-identity` when the server is reached over
        // https (secure cookies), `identity` otherwise.
        for (scheme, cookie) in [
            ("identity_cookie", "identity"),
            ("identity_cookie_secure", "__Host-identity"),
        ] {
            components.add_security_scheme(
                scheme,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(cookie))),
            );
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let text = path.as_str() == "/invites_api";
            let admin = path.starts_with("/api/admin/");
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("put", &mut item.put),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                // One handler serving two methods (`/invites_api`) gets one id
                // from its annotation; ids must be unique, so the second
                // method's says which it is.
                if method != "get" && text {
                    op.operation_id = op.operation_id.take().map(|id| format!("{id}_{method}"));
                }
                let responses = &mut op.responses.responses;
                if path.as_str() != "/api/openapi.json" {
                    responses
                        .entry("503".into())
                        .or_insert_with(|| unavailable(text));
                    responses
                        .entry("500".into())
                        .or_insert_with(|| internal(text));
                }
                if admin {
                    for (status, why) in ADMIN_KEY_ERRORS {
                        responses
                            .entry(status.to_string())
                            .or_insert_with(|| error(why, status == "401"));
                    }
                }
            }
        }
    }
}

/// What `admin_key` answers for every admin API operation.
const ADMIN_KEY_ERRORS: [(&str, &str); 3] = [
    (
        "400",
        "A malformed Authorization header, or a bad query or body",
    ),
    ("401", "No API key, or one that is not valid"),
    (
        "403",
        "The key is expired, not admin-scope, or its host is no longer served",
    ),
];

/// A JSON error answer; a 401 of the admin API asks for a Bearer key.
fn error(description: &str, bearer: bool) -> RefOr<utoipa::openapi::Response> {
    let mut res = ResponseBuilder::new()
        .description(description)
        .content("application/json", json_error());
    if bearer {
        res = res.header("WWW-Authenticate", text_header("`Bearer`"));
    }
    RefOr::T(res.build())
}

/// An error body: plain text on `/invites_api`, `ErrorBody` elsewhere.
fn error_body(text: bool) -> (&'static str, utoipa::openapi::Content) {
    if text {
        (
            "text/plain; charset=utf-8",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
    } else {
        ("application/json", json_error())
    }
}

/// The 500 of a store failure that trying again will not mend.
fn internal(text: bool) -> RefOr<utoipa::openapi::Response> {
    let (media, content) = error_body(text);
    RefOr::T(
        ResponseBuilder::new()
            .description(
                "The server failed in a way trying again will not mend; the cause is logged, \
                 never sent, and nothing was changed",
            )
            .content(media, content)
            .build(),
    )
}

/// The 503 of a store briefly unavailable (a lock, a restart) or a full
/// hashing queue: nothing was changed.
fn unavailable(text: bool) -> RefOr<utoipa::openapi::Response> {
    let (media, content) = error_body(text);
    RefOr::T(
        ResponseBuilder::new()
            .description(
                "Temporarily unavailable (the store is busy or restarting, or the hashing queue \
                 is full); nothing was changed",
            )
            .content(media, content)
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            )
            .build(),
    )
}

fn json_error() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build()
}

fn text_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_scheme() {
        let v = serde_json::to_value(document()).expect("the document serialises");
        assert!(v["openapi"].as_str().is_some_and(|s| s.starts_with("3.1.")));
        let schemes = &v["components"]["securitySchemes"];
        for name in [
            "bearer_key",
            "key_query",
            "identity_cookie",
            "identity_cookie_secure",
        ] {
            assert!(schemes.get(name).is_some(), "{name} missing: {schemes}");
        }
    }
}
