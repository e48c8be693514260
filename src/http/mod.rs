//! The HTTP surface: shared state, the route table, and one module per surface.

mod admin;
mod api;
mod auth;
mod body;
mod client_addr;
mod health;
mod invites_api;
mod logging;
mod login;
mod openapi;
mod pages;
mod reset;

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::config::Config;
use crate::crypto::{FormKey, InviteIds};
use crate::passwords::Hasher;
use crate::store::Store;

// Part of the sign-in use case; the server's state holds one.
pub use crate::service::login_limits::LoginLimiter;

pub use api::USER_HEADER;
pub use client_addr::client_ip;
pub use logging::redact_query;

/// What every handler can reach.
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The password hasher.
    pub hasher: Hasher,
    /// Limits sign-in attempts per client address.
    pub login_limiter: LoginLimiter,
    /// Signs registration forms; read from the database once at startup.
    pub form_key: FormKey,
    /// Counts mints against the rates of keys that have one.
    pub mint_limiter: crate::service::keys::MintLimiter,
    /// Turns invite row ids into public invite ids; made from the form key
    /// once at startup.
    pub invite_ids: InviteIds,
}

/// The Content-Security-Policy every answer carries unless it sets its own:
/// pages load nothing from elsewhere, run no script, cannot be framed, and
/// post forms only to this server.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest request body any endpoint reads; larger ones get 413.
pub const MAX_BODY: usize = 16 * 1024;

/// The route table: every path the server answers, in one place.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health::health)))
        .service(invites_api::resource())
        .service(pages::resource())
        .configure(login::routes)
        .service(web::resource("/static/style.css").route(web::get().to(pages::stylesheet)))
        .service(admin::scope())
        .service(api::scope());
}

/// The answer for a path no route serves.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("Not found.\n")
}

pub use body::read_bodies;
pub use logging::log_requests;
