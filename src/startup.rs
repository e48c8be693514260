//! Building and running the HTTP server. Tests and `serve` both go through
//! [`Application::build`], which binds first so port 0 works.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::http::{self, AppState, LoginLimiter};
use crate::passwords::Hasher;
use crate::store::Store;

/// Threads in each worker's blocking pool (SQLite reads, password hashing).
const BLOCKING_THREADS_PER_WORKER: usize = 4;

/// A bound, not yet running server.
pub struct Application {
    server: Server,
    addr: SocketAddr,
}

impl Application {
    /// Binds `listen` and prepares the server over `store`.
    pub fn build(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        listen: SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let state = web::Data::new(AppState {
            login_limiter: LoginLimiter::new(
                config.login_attempts_per_minute,
                config.login_attempts_per_account_per_minute,
            ),
            hasher: Hasher::with_queue(config.password_hash_queue),
            config,
            store,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::routes)
                .default_service(web::to(http::not_found))
                .wrap(security_headers())
                .wrap(from_fn(http::log_requests))
        })
        // Blocking work is short SQLite reads and Argon2 hashes (bounded to the
        // cores by the hasher); a few threads each suffice, and every extra
        // thread costs its own allocator arena.
        .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
        // A client that closes its side has gone (nginx takes a proxied
        // client's close the same way): the connection and the request's
        // future are dropped at once, so a sign-in it left queued skips its
        // hash instead of burning a core for nobody. The cost: a client that
        // half-closes and still waits for the answer gets none.
        .h1_allow_half_closed(false)
        .listen(listener)?
        .run();
        Ok(Self { server, addr })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGINT or SIGTERM, then drains open requests.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Headers every answer carries: pages load nothing from elsewhere, run no
/// script, cannot be framed, and leak no token through Referer.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("X-Frame-Options", "DENY"))
}
