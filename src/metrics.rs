//! Prometheus metrics: every metric's name and labels, and one recording
//! helper per event, so a call site is one line. Recording goes through the
//! `metrics` facade; without `metrics_listen` no recorder is installed and
//! each helper is a no-op (an atomic load). With it, `metrics-exporter-prometheus`
//! keeps the values and renders them for the separate listener served here.
//!
//! No label carries a secret, a name, a token, a key id or an unbounded
//! value: routes are the route table's PATTERNS (one label for every path no
//! route serves), statuses are classes, hosts are the configured ones, and
//! every other label is one of a fixed set of words.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Config;
use crate::provision::ProvisionError;

/// Requests answered, by `route` and `status` class.
pub const HTTP_REQUESTS: &str = "invite_server_http_requests_total";
/// Time from a request's arrival to its answer, by `route`.
pub const HTTP_DURATION: &str = "invite_server_http_request_duration_seconds";
/// Invites minted, by `host` and `source` (`api`, `account` or `cli`).
pub const INVITES_MINTED: &str = "invite_server_invites_minted_total";
/// Accounts registered with an invite.
pub const REGISTRATIONS: &str = "invite_server_registrations_total";
/// Invites revoked by an operator.
pub const REVOCATIONS: &str = "invite_server_invites_revoked_total";
/// Sign-ins (and password checks) refused, by `reason`.
pub const SIGN_IN_FAILURES: &str = "invite_server_sign_in_failures_total";
/// Requests refused by a rate limit, by `limit`.
pub const RATE_LIMITED: &str = "invite_server_rate_limited_total";
/// Password hashes waiting for a hashing thread.
pub const HASH_QUEUE: &str = "invite_server_password_hash_queue_depth";
/// Writes carried by each commit of the SQLite writer thread.
pub const WRITE_BATCH: &str = "invite_server_write_batch_size";
/// Time each commit of the SQLite writer thread took, applying its writes included.
pub const COMMIT_DURATION: &str = "invite_server_commit_duration_seconds";

/// Webhook delivery attempts, by `outcome`: `delivered`, `retried` (failed,
/// another attempt is scheduled) or `failed` (given up).
pub const WEBHOOK_DELIVERIES: &str = "invite_server_webhook_deliveries_total";
/// Calls to a host's account service, by `kind` (`prosody`, `command`...)
/// and `outcome` (`done`, `taken`, `unavailable` or `unsupported`).
pub const PROVISION_CALLS: &str = "invite_server_provision_calls_total";

/// The route label of a request no route serves: its path might hold a token.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Why a sign-in failed, as the `reason` label says it.
#[derive(Debug, Clone, Copy)]
pub enum SignInFailure {
    /// Wrong name or password (an unknown name included).
    WrongPassword,
    /// The client's address is over its per-minute attempts.
    RateLimitedAddress,
    /// The account is over its per-minute attempts.
    RateLimitedAccount,
    /// Every hashing thread was busy and the queue full.
    Busy,
    /// The store or the hasher failed.
    Unavailable,
    /// The request named no host that could be told.
    AmbiguousHost,
}

impl SignInFailure {
    fn label(self) -> &'static str {
        match self {
            Self::WrongPassword => "wrong_password",
            Self::RateLimitedAddress => "rate_limited_address",
            Self::RateLimitedAccount => "rate_limited_account",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::AmbiguousHost => "ambiguous_host",
        }
    }
}

/// Histogram buckets for durations in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histogram buckets for batch sizes, up to the writer's largest batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often histograms drop samples that have been rendered already.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Set once the recorder is installed. Every request passes through
/// [`request`], `/api/auth/check` included: without a listener it skips
/// building the route label (an allocation) that the facade would drop.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Counts one answered request and its latency. `route` is the matched
/// route's pattern (`/api/invite/{id}`), never the path itself.
pub fn request(req: &HttpRequest, status: StatusCode, elapsed: Duration) {
    if !RECORDING.load(Ordering::Relaxed) {
        return;
    }
    let route = req
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status_class(status))
        .increment(1);
    histogram!(HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

/// `2xx`, `4xx`...: five values, whatever the status.
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counts one invite minted on `host` (a configured host's name) by a
/// source of `kind`: `api`, `account` or `cli`.
pub fn invite_minted(host: &str, kind: &'static str) {
    counter!(INVITES_MINTED, "host" => host.to_owned(), "source" => kind).increment(1);
}

/// Counts one account registered with an invite.
pub fn registration() {
    counter!(REGISTRATIONS).increment(1);
}

/// Counts one invite revoked.
pub fn invite_revoked() {
    counter!(REVOCATIONS).increment(1);
}

/// Counts one failed sign-in; a rate-limited one also counts as a refusal
/// of its limit.
pub fn sign_in_failed(why: SignInFailure) {
    counter!(SIGN_IN_FAILURES, "reason" => why.label()).increment(1);
    match why {
        SignInFailure::RateLimitedAddress => rate_limited("login_address"),
        SignInFailure::RateLimitedAccount => rate_limited("login_account"),
        _ => {}
    }
}

/// Counts one request refused by the rate limit `limit` (`login_address`,
/// `login_account` or `key_mint`).
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// Counts one webhook delivery attempt: delivered, retried later, or given
/// up. Neither the URL nor the host is a label: a URL can carry a secret.
pub fn webhook_attempt(delivered: bool, retried: bool) {
    let outcome = match (delivered, retried) {
        (true, _) => "delivered",
        (false, true) => "retried",
        (false, false) => "failed",
    };
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// Counts one call to an account service of `kind` and how it ended; the
/// account's name is never a label.
pub fn provision_call(kind: &'static str, result: &Result<(), ProvisionError>) {
    counter!(PROVISION_CALLS, "kind" => kind, "outcome" => provision_outcome(result)).increment(1);
}

/// The `outcome` label of a provisioner call: five words, whatever the
/// service said (its message can name the account, so it is no label).
fn provision_outcome(result: &Result<(), ProvisionError>) -> &'static str {
    match result {
        Ok(()) => "done",
        Err(ProvisionError::Taken) => "taken",
        Err(ProvisionError::Unavailable(_)) => "unavailable",
        Err(ProvisionError::Unsupported) => "unsupported",
        Err(ProvisionError::PasswordRefused(_)) => "password_refused",
    }
}

/// A hash joined the hashing queue (`+1`) or left it (`-1`).
pub fn hash_queue(change: f64) {
    gauge!(HASH_QUEUE).increment(change);
}

/// One commit of the writer thread: how many writes it carried and how long
/// applying and committing them took.
pub fn commit(writes: usize, elapsed: Duration) {
    histogram!(WRITE_BATCH).record(writes as f64);
    histogram!(COMMIT_DURATION).record(elapsed.as_secs_f64());
}

/// Refuses a `metrics_listen` the public listener would share: the metrics
/// are for the operator's scraper, never for the clients of the public port.
pub fn check_listen(config: &Config) -> anyhow::Result<()> {
    let Some(metrics) = config.metrics_listen else {
        return Ok(());
    };
    let public = config.listen;
    let overlaps = metrics.ip() == public.ip()
        || metrics.ip().is_unspecified()
        || public.ip().is_unspecified();
    if metrics.port() == public.port() && metrics.port() != 0 && overlaps {
        anyhow::bail!(
            "metrics_listen ({metrics}) is the listen address ({public}): \
             metrics must be on a port of their own, never on the public one"
        );
    }
    Ok(())
}

/// Installs the Prometheus recorder (once per process) and binds the metrics
/// listener at `addr`: `GET /metrics` answers the text format, anything else
/// 404. Returns the server to run and the address it bound.
pub fn serve(addr: SocketAddr) -> anyhow::Result<(Server, SocketAddr)> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(WRITE_BATCH.to_owned()), BATCH_BUCKETS)
        })
        .context("cannot set the metrics' histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe();
    RECORDING.store(true, Ordering::Relaxed);
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let handle = web::Data::new(handle);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(handle.clone())
            .route("/metrics", web::get().to(scrape))
            .default_service(web::to(crate::http::not_found))
    })
    // A scraper every few seconds: one worker is plenty.
    .workers(1)
    .listen(listener)?
    .run();
    Ok((server, bound))
}

/// `GET /metrics`: every series in Prometheus' text format.
async fn scrape(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// The HELP lines of every metric.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "Requests answered, by route pattern and status class."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a request, by route pattern."
    );
    describe_counter!(INVITES_MINTED, "Invites minted, by host and source kind.");
    describe_counter!(REGISTRATIONS, "Accounts registered with an invite.");
    describe_counter!(REVOCATIONS, "Invites revoked.");
    describe_counter!(SIGN_IN_FAILURES, "Sign-ins refused, by reason.");
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by limit.");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts, by outcome (delivered, retried, failed)."
    );
    describe_counter!(
        PROVISION_CALLS,
        "Calls to an account service, by kind and outcome."
    );
    describe_gauge!(HASH_QUEUE, "Password hashes waiting for a hashing thread.");
    describe_histogram!(WRITE_BATCH, "Writes carried by each database commit.");
    describe_histogram!(
        COMMIT_DURATION,
        metrics::Unit::Seconds,
        "Time each database commit took, applying its writes included."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_are_five_words() {
        for (code, class) in [
            (101, "1xx"),
            (204, "2xx"),
            (303, "3xx"),
            (429, "4xx"),
            (503, "5xx"),
        ] {
            assert_eq!(status_class(StatusCode::from_u16(code).unwrap()), class);
        }
    }

    #[test]
    fn provisioning_outcomes_are_four_words_and_never_the_services_message() {
        for (result, outcome) in [
            (Ok(()), "done"),
            (Err(ProvisionError::Taken), "taken"),
            (
                Err(ProvisionError::Unavailable("alice: exit status 1".into())),
                "unavailable",
            ),
            (Err(ProvisionError::Unsupported), "unsupported"),
        ] {
            assert_eq!(provision_outcome(&result), outcome);
        }
    }

    #[test]
    fn the_metrics_listener_may_not_be_the_public_one() {
        let mut config = Config::load(None).unwrap();
        assert!(check_listen(&config).is_ok(), "off by default");
        config.metrics_listen = Some(config.listen);
        assert!(check_listen(&config).is_err());
        config.metrics_listen = Some(SocketAddr::from(([0, 0, 0, 0], config.listen.port())));
        assert!(check_listen(&config).is_err());
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 9280)));
        assert!(check_listen(&config).is_ok());
    }
}
