//! The webhook outbox: events written in the transaction of the change they
//! report, and the delivery state the workers of every node keep on each.
//!
//! Rows are claimed with a lease (`claimed_until`) taken in one statement
//! whose inner SELECT locks the rows it picks `FOR UPDATE SKIP LOCKED`: two
//! nodes claiming at once pick disjoint rows instead of waiting on each
//! other, and a row whose lease expired (its node died mid-delivery) is due
//! again for whichever node claims next.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::rows::{all, backend, corrupt, get, host_at, time_at};
use crate::domain::HostName;
use crate::store::{Delivery, DeliveryResult, StoreError};
use crate::webhooks::{EventKind, Routes};

/// What an event is about; every field is public (never a token or secret).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Subject<'a> {
    /// The invite's row id (made public when the body is built).
    pub invite: Option<i64>,
    /// The invite's source as stored (`api/token/<id>`, `account/<id>`, `cli`).
    pub source: Option<&'a str>,
    /// The account's name.
    pub account: Option<&'a str>,
}

/// A fresh `webhook-id`: random, so ids from two nodes never clash.
fn new_event_id() -> String {
    format!("msg_{:032x}", rand::random::<u128>())
}

/// Writes one outbox row per target of `host` that takes `event`; nothing,
/// not even a statement, when none does.
pub(super) async fn record(
    db: &impl GenericClient,
    routes: &Routes,
    host: &HostName,
    event: EventKind,
    at: DateTime<Utc>,
    subject: Subject<'_>,
) -> Result<(), StoreError> {
    for url in routes.targets(host, event) {
        let st = db
            .prepare_cached(
                "INSERT INTO webhook_outbox
                    (event_id, host, url, event, created_at, invite_row, source, account,
                     next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5)",
            )
            .await
            .map_err(backend)?;
        db.execute(
            &st,
            &[
                &new_event_id(),
                &host.as_str(),
                &url,
                &event.as_str(),
                &at,
                &subject.invite,
                &subject.source,
                &subject.account,
            ],
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Records `invite.revoked` for each `(id, source)` just revoked, as the
/// UPDATE that revoked them returned them (in its transaction).
pub(super) async fn record_revocations(
    db: &impl GenericClient,
    routes: &Routes,
    host: &HostName,
    revoked: &[(i64, String)],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    for (id, source) in revoked {
        record(
            db,
            routes,
            host,
            EventKind::InviteRevoked,
            at,
            Subject {
                invite: Some(*id),
                source: Some(source),
                account: None,
            },
        )
        .await?;
    }
    Ok(())
}

const COLUMNS: &str = "id, event_id, host, url, event, created_at, invite_row, source, account, \
    attempts, last_status, next_attempt_at, delivered_at, failed_at";

fn delivery_row(row: &Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: get(row, 0)?,
        event_id: get(row, 1)?,
        host: host_at(row, 2)?,
        url: get(row, 3)?,
        event: EventKind::parse(get(row, 4)?).ok_or_else(|| corrupt("webhook event"))?,
        created_at: time_at(row, 5)?,
        invite_row: get(row, 6)?,
        source: get(row, 7)?,
        account: get(row, 8)?,
        attempts: super::rows::count_at(row, 9)?,
        last_status: get(row, 10)?,
        next_attempt_at: get(row, 11)?,
        delivered_at: get(row, 12)?,
        failed_at: get(row, 13)?,
    })
}

/// Claims up to `limit` due rows whose lease is free or expired, leasing
/// them until `until`. The inner SELECT locks what it picks and skips rows
/// another node is claiming this instant; the outer UPDATE re-checks nothing
/// it needs to, since a locked row cannot change under it.
pub(super) async fn claim(
    db: &impl GenericClient,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "UPDATE webhook_outbox SET claimed_until = $2
             WHERE id IN (SELECT id FROM webhook_outbox
                          WHERE next_attempt_at <= $1
                            AND (claimed_until IS NULL OR claimed_until <= $1)
                          ORDER BY next_attempt_at LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ))
        .await
        .map_err(backend)?;
    let rows = db
        .query(&st, &[&now, &until, &i64::from(limit)])
        .await
        .map_err(backend)?;
    let mut claimed = all(rows, delivery_row)?;
    // RETURNING comes in no set order; the worker sends the oldest first.
    claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
    Ok(claimed)
}

/// Records one attempt's result and releases the lease.
pub(super) async fn finish(
    db: &impl GenericClient,
    id: i64,
    result: &DeliveryResult,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (next, delivered, failed) = match result.next_attempt_at {
        Some(at) => (Some(at), None, None),
        None if result.delivered => (None, Some(now), None),
        None => (None, None, Some(now)),
    };
    let st = db
        .prepare_cached(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $2,
                next_attempt_at = $3, delivered_at = $4, failed_at = $5, claimed_until = NULL
             WHERE id = $1",
        )
        .await
        .map_err(backend)?;
    db.execute(&st, &[&id, &result.status, &next, &delivered, &failed])
        .await
        .map_err(backend)?;
    Ok(())
}

/// A host's deliveries, newest first; with `failed_only`, those given up on.
pub(super) async fn list(
    db: &impl GenericClient,
    host: &HostName,
    failed_only: bool,
) -> Result<Vec<Delivery>, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhook_outbox
             WHERE host = $1 AND (NOT $2::boolean OR failed_at IS NOT NULL) ORDER BY id DESC"
        ))
        .await
        .map_err(backend)?;
    let rows = db
        .query(&st, &[&host.as_str(), &failed_only])
        .await
        .map_err(backend)?;
    all(rows, delivery_row)
}

/// Makes one of a host's deliveries due now; `NotFound` for another host's.
pub(super) async fn retry(
    db: &impl GenericClient,
    host: &HostName,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached(
            "UPDATE webhook_outbox SET next_attempt_at = $3, failed_at = NULL,
                delivered_at = NULL, claimed_until = NULL
             WHERE id = $1 AND host = $2",
        )
        .await
        .map_err(backend)?;
    match db
        .execute(&st, &[&id, &host.as_str(), &now])
        .await
        .map_err(backend)?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}
