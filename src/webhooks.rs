//! Signed webhooks (the Standard Webhooks specification): which events go
//! where, how a message is signed, and the worker that delivers the outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::config::Config;
use crate::crypto::InviteIds;
use crate::domain::HostName;
use crate::store::{Delivery, DeliveryResult, Store};

/// The events a webhook may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// An invite was minted.
    InviteCreated,
    /// An account registered with an invite.
    InviteRedeemed,
    /// An invite was withdrawn (by an operator, or with its key or account).
    InviteRevoked,
    /// An account was created (by registration or `accounts create`).
    AccountCreated,
    /// An account was deleted.
    AccountDeleted,
}

impl EventKind {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [EventKind; 5] = [
        Self::InviteCreated,
        Self::InviteRedeemed,
        Self::InviteRevoked,
        Self::AccountCreated,
        Self::AccountDeleted,
    ];

    /// The name in configuration and in the body's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InviteCreated => "invite.created",
            Self::InviteRedeemed => "invite.redeemed",
            Self::InviteRevoked => "invite.revoked",
            Self::AccountCreated => "account.created",
            Self::AccountDeleted => "account.deleted",
        }
    }

    /// The event of that name, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A Standard Webhooks signing secret (`whsec_` + base64), decoded. Its
/// `Debug` prints nothing of it, so no log or error can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses the file's text: `whsec_` and base64 of at least 16 bytes,
    /// surrounding whitespace ignored. The error never repeats the text.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let b64 = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or("it does not start with `whsec_`")?;
        let key = BASE64
            .decode(b64)
            .map_err(|_| "the part after `whsec_` is not base64")?;
        if key.len() < 16 {
            return Err("the secret is shorter than 16 bytes");
        }
        Ok(Self(key))
    }

    /// `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // new_from_slice fails only for a key length the MAC cannot take;
        // HMAC takes any length, so the fallback is never used.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// One configured webhook of a host.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// The signing secret, read from `secret_file` at load.
    pub secret: WebhookSecret,
    /// The events it takes.
    pub events: Vec<EventKind>,
    /// Waits between attempts; after the last, the delivery is given up.
    pub retry: Vec<Duration>,
}

/// The default retry schedule: eight retries over about a day.
pub const DEFAULT_RETRY: [u64; 8] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000, 36_000];

/// Which URLs take which events, per host: what the store needs to write
/// the outbox. Empty when no webhook is configured.
#[derive(Debug, Clone, Default)]
pub struct Routes(BTreeMap<HostName, Vec<(String, Vec<EventKind>)>>);

impl Routes {
    /// The routes of every host's webhooks.
    pub fn of(config: &Config) -> Self {
        Self(
            config
                .hosts
                .iter()
                .filter(|(_, h)| !h.webhooks.is_empty())
                .map(|(name, h)| {
                    let hooks = h
                        .webhooks
                        .iter()
                        .map(|w| (w.url.clone(), w.events.clone()))
                        .collect();
                    (name.clone(), hooks)
                })
                .collect(),
        )
    }

    /// The URLs of `host` that take `event`.
    pub fn targets<'a>(
        &'a self,
        host: &HostName,
        event: EventKind,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .get(host)
            .into_iter()
            .flatten()
            .filter(move |(_, events)| events.contains(&event))
            .map(|(url, _)| url.as_str())
    }
}

/// The body of a delivery: `{"type", "timestamp", "data"}`, where data names
/// the host, the PUBLIC invite id, its source and the account as they apply.
pub fn body(d: &Delivery, ids: &InviteIds) -> String {
    let mut data = Map::new();
    data.insert("host".into(), json!(d.host.as_str()));
    if let Some(row) = d.invite_row {
        data.insert("invite_id".into(), json!(ids.public(row).as_str()));
    }
    if let Some(source) = &d.source {
        data.insert("source".into(), json!(source));
    }
    if let Some(account) = &d.account {
        data.insert("account".into(), json!(account));
    }
    json!({
        "type": d.event.as_str(),
        "timestamp": d.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": Value::Object(data),
    })
    .to_string()
}

fn time_text(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Where a delivery stands: `pending`, `delivered` or `failed`.
fn state(d: &Delivery) -> &'static str {
    if d.delivered_at.is_some() {
        "delivered"
    } else if d.failed_at.is_some() {
        "failed"
    } else {
        "pending"
    }
}

/// A delivery as `webhooks list --json` prints it.
pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "webhook_id": d.event_id,
        "event": d.event.as_str(),
        "target": d.url,
        "state": state(d),
        "attempts": d.attempts,
        "last_status": d.last_status,
        "created_at": time_text(Some(d.created_at)),
        "next_attempt_at": time_text(d.next_attempt_at),
        "delivered_at": time_text(d.delivered_at),
        "failed_at": time_text(d.failed_at),
    })
}

/// A delivery as `webhooks list` prints it: one tab-separated line.
pub fn delivery_line(d: &Delivery) -> String {
    let next = match state(d) {
        "pending" => time_text(d.next_attempt_at).unwrap_or_default(),
        other => other.to_owned(),
    };
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        d.id,
        d.event.as_str(),
        d.url,
        d.attempts,
        d.last_status.as_deref().unwrap_or("-"),
        next
    )
}

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// A claim's lease: longer than an attempt, so a live worker keeps its rows.
const LEASE: Duration = Duration::from_secs(60);
/// How often the worker looks for due deliveries.
const POLL: Duration = Duration::from_secs(1);
/// The most deliveries one round claims.
const BATCH: u32 = 32;
/// The longest `Retry-After` honoured (a receiver cannot park a row forever).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Delivers the outbox until the process ends: a tokio task beside `serve`.
pub fn spawn_worker(store: Arc<dyn Store>, config: Arc<Config>, ids: InviteIds) {
    if config.hosts.values().all(|h| h.webhooks.is_empty()) {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "cannot start the webhook client; no webhook is delivered");
            return;
        }
    };
    actix_web::rt::spawn(async move {
        loop {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            match store.claim_deliveries(now, until, BATCH).await {
                Ok(batch) if !batch.is_empty() => {
                    let sends = batch
                        .into_iter()
                        .map(|d| deliver(&*store, &config, &client, &ids, d));
                    futures_util::future::join_all(sends).await;
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot read the webhook outbox"),
            }
            actix_web::rt::time::sleep(POLL).await;
        }
    });
}

/// One attempt at one delivery, and its result written back.
async fn deliver(
    store: &dyn Store,
    config: &Config,
    client: &reqwest::Client,
    ids: &InviteIds,
    d: Delivery,
) {
    let hook = config
        .hosts
        .get(&d.host)
        .and_then(|h| h.webhooks.iter().find(|w| w.url == d.url));
    let result = match hook {
        // The webhook was removed from the configuration: give up on it.
        None => DeliveryResult {
            status: "no longer configured".into(),
            delivered: false,
            next_attempt_at: None,
        },
        Some(hook) => attempt(client, ids, hook, &d).await,
    };
    tracing::info!(
        delivery = d.id,
        event = d.event.as_str(),
        host = %d.host,
        url = %d.url,
        status = %result.status,
        delivered = result.delivered,
        "webhook attempt"
    );
    crate::metrics::webhook_attempt(result.delivered, result.next_attempt_at.is_some());
    if let Err(error) = store.finish_delivery(d.id, result, Utc::now()).await {
        // The lease expires and the attempt is made again: at least once.
        tracing::warn!(%error, delivery = d.id, "cannot record a webhook attempt");
    }
}

async fn attempt(
    client: &reqwest::Client,
    ids: &InviteIds,
    hook: &Webhook,
    d: &Delivery,
) -> DeliveryResult {
    let body = body(d, ids);
    let timestamp = Utc::now().timestamp();
    let signature = hook.secret.sign(&d.event_id, timestamp, &body);
    let sent = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let attempt_no = usize::try_from(d.attempts).unwrap_or(usize::MAX);
    let (status, retry_after) = match sent {
        Ok(r) if r.status().is_success() => {
            return DeliveryResult {
                status: r.status().as_u16().to_string(),
                delivered: true,
                next_attempt_at: None,
            }
        }
        // 410 Gone: the receiver says never again.
        Ok(r) if r.status() == reqwest::StatusCode::GONE => {
            return DeliveryResult {
                status: "410".into(),
                delivered: false,
                next_attempt_at: None,
            }
        }
        Ok(r) => (r.status().as_u16().to_string(), retry_after(&r)),
        Err(e) if e.is_timeout() => ("timeout".to_owned(), None),
        Err(e) if e.is_connect() => ("connection failed".to_owned(), None),
        Err(_) => ("request failed".to_owned(), None),
    };
    DeliveryResult {
        status,
        delivered: false,
        next_attempt_at: next_attempt(&hook.retry, attempt_no, retry_after, Utc::now()),
    }
}

/// `Retry-After` in seconds or as an HTTP date, capped.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    let v = r.headers().get("retry-after")?.to_str().ok()?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
            (at - Utc::now()).to_std().unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// When to try again after the failed attempt number `done` (0 for the
/// first), or `None` when the schedule is spent: the scheduled wait with
/// up to 20 % jitter either way, but never before `Retry-After`.
pub fn next_attempt(
    schedule: &[Duration],
    done: usize,
    retry_after: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let base = *schedule.get(done)?;
    let jitter = base.as_secs_f64() * (rand::random::<f64>() * 0.4 - 0.2);
    let wait = Duration::from_secs_f64((base.as_secs_f64() + jitter).max(0.0));
    let wait = retry_after.map_or(wait, |r| wait.max(r));
    Some(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_repeating_them() {
        for bad in [
            "",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!!",
            "whsec_AAAA",
        ] {
            let e = WebhookSecret::parse(bad).unwrap_err();
            assert!(bad.len() < 7 || !e.contains(&bad[6..]), "{e}");
        }
        let s = WebhookSecret::parse(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(format!("{s:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn the_schedule_ends_and_retry_after_is_a_floor() {
        let now = Utc::now();
        let s = [Duration::from_secs(10), Duration::from_secs(100)];
        let first = next_attempt(&s, 0, None, now).unwrap();
        let secs = (first - now).num_milliseconds();
        assert!((8_000..=12_000).contains(&secs), "{secs}");
        let later = next_attempt(&s, 1, Some(Duration::from_secs(1000)), now).unwrap();
        assert!((later - now).num_seconds() >= 1000);
        assert_eq!(next_attempt(&s, 2, None, now), None);
    }

    #[test]
    fn every_event_name_parses_back() {
        for e in EventKind::ALL {
            assert_eq!(EventKind::parse(e.as_str()), Some(e));
        }
        assert_eq!(EventKind::parse("invite.used"), None);
    }
}
