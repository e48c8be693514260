//! The webhook outbox: events written in the same transaction as the change
//! they report, and the delivery state the worker keeps on each.
//!
//! One row per event and target URL, so each target has its own attempts,
//! backoff and failure. Rows are claimed with a lease (`claimed_until`), not
//! a lock, so that a killed worker's rows are taken over once the lease
//! expires, and so that a backend with `FOR UPDATE SKIP LOCKED` can do the
//! same across nodes.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};

use super::rows::{backend, corrupt, host_at, micros, optional_time_at, time_at};
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

/// A fresh `webhook-id`: random, so ids from two processes never clash.
fn new_event_id() -> String {
    format!("msg_{:032x}", rand::random::<u128>())
}

/// Writes one outbox row per target of `host` that takes `event`; nothing,
/// not even a statement, when none does (webhooks off cost nothing).
pub(super) fn record(
    conn: &Connection,
    routes: &Routes,
    host: &HostName,
    event: EventKind,
    at: DateTime<Utc>,
    subject: Subject<'_>,
) -> Result<(), StoreError> {
    for url in routes.targets(host, event) {
        conn.prepare_cached(
            "INSERT INTO webhook_outbox
                (event_id, host, url, event, created_at, invite_row, source, account,
                 next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?5)",
        )
        .and_then(|mut st| {
            st.execute(params![
                new_event_id(),
                host.as_str(),
                url,
                event.as_str(),
                micros(at),
                subject.invite,
                subject.source,
                subject.account,
            ])
        })
        .map_err(backend)?;
    }
    Ok(())
}

/// Records `invite.revoked` for every invite of `source` on `host` that was
/// revoked at `at`: called right after the one UPDATE that revoked them, in
/// its transaction, so the rows it finds are exactly the ones it revoked
/// (revocation times are microseconds; the write lock is held).
pub(super) fn record_revocations(
    conn: &Connection,
    routes: &Routes,
    host: &HostName,
    source: &str,
    reset_account: Option<i64>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if routes
        .targets(host, EventKind::InviteRevoked)
        .next()
        .is_none()
    {
        return Ok(());
    }
    // The invites of `source` revoked at `at`, and with `reset_account` the
    // reset invites for that account too (deleting an account revokes both),
    // each reported with its own source.
    let revoked: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT id, source FROM invites
             WHERE host = ?2 AND revoked_at = ?3
               AND (source = ?1 OR reset_account_id = ?4)
             ORDER BY id",
        )
        .and_then(|mut st| {
            st.query_map(
                params![source, host.as_str(), micros(at), reset_account],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect()
        })
        .map_err(backend)?;
    for (id, source) in revoked {
        record(
            conn,
            routes,
            host,
            EventKind::InviteRevoked,
            at,
            Subject {
                invite: Some(id),
                source: Some(&source),
                account: None,
            },
        )?;
    }
    Ok(())
}

const COLUMNS: &str = "id, event_id, host, url, event, created_at, invite_row, source, account, \
    attempts, last_status, next_attempt_at, delivered_at, failed_at";

fn delivery_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let event: String = row.get(4)?;
    Ok(Delivery {
        id: row.get(0)?,
        event_id: row.get(1)?,
        host: host_at(row, 2)?,
        url: row.get(3)?,
        event: EventKind::parse(&event).ok_or_else(|| corrupt(4, "webhook event"))?,
        created_at: time_at(row, 5)?,
        invite_row: row.get(6)?,
        source: row.get(7)?,
        account: row.get(8)?,
        attempts: row.get(9)?,
        last_status: row.get(10)?,
        next_attempt_at: optional_time_at(row, 11)?,
        delivered_at: optional_time_at(row, 12)?,
        failed_at: optional_time_at(row, 13)?,
    })
}

/// Claims up to `limit` due rows whose lease is free or expired, leasing
/// them until `until`; one statement, so two workers never claim one row.
pub(super) fn claim(
    conn: &Connection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    conn.prepare_cached(&format!(
        "UPDATE webhook_outbox SET claimed_until = ?2
         WHERE id IN (SELECT id FROM webhook_outbox
                      WHERE next_attempt_at <= ?1
                        AND (claimed_until IS NULL OR claimed_until <= ?1)
                      ORDER BY next_attempt_at LIMIT ?3)
         RETURNING {COLUMNS}"
    ))
    .and_then(|mut st| {
        st.query_map(params![micros(now), micros(until), limit], delivery_row)?
            .collect()
    })
    .map_err(backend)
}

/// Records one attempt's result and releases the lease.
pub(super) fn finish(
    conn: &Connection,
    id: i64,
    result: &DeliveryResult,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (next, delivered, failed) = match result.next_attempt_at {
        Some(at) => (Some(micros(at)), None, None),
        None if result.delivered => (None, Some(micros(now)), None),
        None => (None, None, Some(micros(now))),
    };
    conn.prepare_cached(
        "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = ?2,
            next_attempt_at = ?3, delivered_at = ?4, failed_at = ?5, claimed_until = NULL
         WHERE id = ?1",
    )
    .and_then(|mut st| st.execute(params![id, result.status, next, delivered, failed]))
    .map_err(backend)?;
    Ok(())
}

/// A host's deliveries, newest first; with `failed_only`, those given up on.
pub(super) fn list(
    conn: &Connection,
    host: &HostName,
    failed_only: bool,
) -> Result<Vec<Delivery>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhook_outbox
         WHERE host = ?1 AND (?2 = 0 OR failed_at IS NOT NULL) ORDER BY id DESC"
    ))
    .and_then(|mut st| {
        st.query_map(params![host.as_str(), failed_only], delivery_row)?
            .collect()
    })
    .map_err(backend)
}

/// Makes one of a host's deliveries due now (also one given up on, or one
/// delivered, which is then sent again); `NotFound` for another host's.
pub(super) fn retry(
    conn: &Connection,
    host: &HostName,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE webhook_outbox SET next_attempt_at = ?3, failed_at = NULL,
                delivered_at = NULL, claimed_until = NULL
             WHERE id = ?1 AND host = ?2",
        )
        .and_then(|mut st| st.execute(params![id, host.as_str(), micros(now)]))
        .map_err(backend)?;
    match changed {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}
