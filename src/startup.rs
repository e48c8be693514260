//! Building and running the HTTP server. Tests and `serve` both go through
//! [`Application::build`], which binds first so port 0 works.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::config::Config;
use crate::http::{self, AppState, LoginLimiter};
use crate::passwords::Hasher;
use crate::service;
use crate::store::Store;

/// Threads in each worker's blocking pool (SQLite reads, password hashing).
const BLOCKING_THREADS_PER_WORKER: usize = 4;

/// File descriptors the server needs besides its connections: the listener,
/// each worker's event loop, the database and its journal files, the logs.
const FDS_BESIDES_CONNECTIONS: u64 = 64;

/// A bound, not yet running server.
pub struct Application {
    server: Server,
    addr: SocketAddr,
}

impl Application {
    /// Reads (or, on a new database, makes) the form key from `store`, binds
    /// `listen` and prepares the server over `store`. Without configured
    /// hosts, the built-in host's links name the bound address.
    pub async fn build(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        crate::metrics::check_listen(&config)?;
        let form_key = service::form_key(&*store)
            .await
            .context("cannot read the server's form key from the database")?;
        let listener =
            TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let mut config = Arc::unwrap_or_clone(config);
        config.follow_listen_address(addr);
        let config = Arc::new(config);
        raise_open_file_limit(config.max_connections);
        let (workers, per_worker) = split_connections(config.max_connections);
        crate::webhooks::spawn_worker(
            Arc::clone(&store),
            Arc::clone(&config),
            form_key.invite_ids(),
        );
        let state = web::Data::new(AppState {
            login_limiter: LoginLimiter::new(
                config.login_attempts_per_minute,
                config.login_attempts_per_account_per_minute,
            ),
            hasher: Hasher::with_queue(config.password_hash_queue),
            invite_ids: form_key.invite_ids(),
            config: Arc::clone(&config),
            store: Arc::clone(&store),
            form_key,
            mint_limiter: service::keys::MintLimiter::default(),
        });
        spawn_metrics(&config)?;
        spawn_purger(store, config);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::routes)
                .default_service(web::to(http::not_found))
                .wrap(security_headers())
                // Inside the logger, so a request whose body breaks is logged.
                .wrap(from_fn(http::read_bodies))
                .wrap(from_fn(http::log_requests))
        })
        // Blocking work is short SQLite reads and Argon2 hashes (bounded to the
        // cores by the hasher); a few threads each suffice, and every extra
        // thread costs its own allocator arena.
        .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
        // actix counts connections per worker; past the limit a worker stops
        // accepting and further clients wait in the kernel's listen queue,
        // instead of every idle socket costing a descriptor and memory.
        .workers(workers)
        .max_connections(per_worker)
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

/// Purges ended invites and idle sessions every `purge_interval`, the first
/// time one interval after startup. Runs on the system's runtime beside the
/// server; a failure is logged by the purge and the next round tries again.
fn spawn_purger(store: Arc<dyn Store>, config: Arc<Config>) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(config.purge_interval);
        // The first tick completes at once: skip it, the database was just opened.
        tick.tick().await;
        loop {
            tick.tick().await;
            service::invites::purge_every_host(&*store, &config).await;
        }
    });
}

/// Starts the metrics listener when `metrics_listen` is set, beside the
/// server on the system's runtime; a bind failure stops startup.
fn spawn_metrics(config: &Config) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        let (server, bound) = crate::metrics::serve(addr)?;
        tracing::info!(addr = %bound, "metrics listening");
        actix_web::rt::spawn(server);
    }
    Ok(())
}

/// Workers (one per core, but never more than connections allowed) and the
/// connections each may hold, so that together they hold at most `total`.
fn split_connections(total: usize) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.min(total).max(1);
    (workers, (total / workers).max(1))
}

/// Raises the soft limit on open files to the hard limit (the soft one is
/// often 1024): `max_connections` is the intended bound, not the OS default.
/// Warns when even the hard limit leaves too little room.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let needed = (max_connections as u64).saturating_add(FDS_BESIDES_CONNECTIONS);
            if limit < needed {
                tracing::warn!(
                    open_file_limit = limit,
                    max_connections,
                    "the open-file limit is below max_connections plus {FDS_BESIDES_CONNECTIONS}: \
                     lower max_connections or raise the limit (ulimit -n, LimitNOFILE=)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Headers every answer carries: pages load nothing from elsewhere, run no
/// script, cannot be framed, and leak no token through Referer.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Content-Security-Policy", http::CONTENT_SECURITY_POLICY))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("X-Frame-Options", "DENY"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_together_hold_at_most_max_connections() {
        for total in [1, 2, 3, 7, 32, 1024, 1_000_000] {
            let (workers, each) = split_connections(total);
            assert!(workers >= 1 && each >= 1, "{total}");
            assert!(workers * each <= total, "{total}: {workers} x {each}");
            // Rounding down loses less than one connection per worker.
            assert!(
                total - workers * each < workers,
                "{total}: {workers} x {each}"
            );
        }
    }
}
