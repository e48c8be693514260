//! SQL for sign-in sessions: creating, finding (on every forward-auth
//! check), recording use, and ending them.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{account_row, backend, micros, one, time_at, ACCOUNT_COLUMNS};
use crate::crypto::SecretDigest;
use crate::store::{NewSession, SessionRecord, StoreError};

/// The session of a token digest with its account, if the account is not
/// disabled. Built once: formatting it on every check cost an allocation
/// per call, and this runs on every `/api/auth/check`.
static FIND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ACCOUNT_COLUMNS}, s.last_used_at
         FROM sessions s JOIN accounts a ON a.id = s.account_id
         WHERE s.token_digest = ?1 AND a.disabled_at IS NULL"
    )
});

/// The session whose token has digest `digest`, with its (enabled) account.
pub(super) fn find(conn: &Connection, digest: &SecretDigest) -> Result<SessionRecord, StoreError> {
    one(conn.prepare_cached(&FIND).and_then(|mut st| {
        st.query_row([digest.as_bytes().as_slice()], |row| {
            Ok(SessionRecord {
                account: account_row(row)?,
                last_used_at: time_at(row, 8)?,
            })
        })
        .optional()
    }))
}

/// Records that the session was used at `now`.
pub(super) fn touch(
    conn: &Connection,
    digest: &SecretDigest,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE sessions SET last_used_at = ?1 WHERE token_digest = ?2")
        .and_then(|mut st| st.execute(params![micros(now), digest.as_bytes().as_slice()]))
        .map_err(backend)?;
    Ok(())
}

/// Ends one session.
pub(super) fn delete(conn: &Connection, digest: &SecretDigest) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM sessions WHERE token_digest = ?1")
        .and_then(|mut st| st.execute([digest.as_bytes().as_slice()]))
        .map_err(backend)?;
    Ok(())
}

/// Deletes every session of `account_id` but the one whose token digest is
/// `keep` (all of them without one), in one statement; how many ended. The
/// one way sessions end when a password changes, an account is disabled or
/// its owner signs out elsewhere.
pub(super) fn end_sessions(
    conn: &Connection,
    account_id: i64,
    keep: Option<&SecretDigest>,
) -> Result<u64, StoreError> {
    // A zero-length digest matches no session: keep none.
    let keep: &[u8] = keep.map_or(&[], |d| d.as_bytes().as_slice());
    conn.prepare_cached("DELETE FROM sessions WHERE account_id = ?1 AND token_digest != ?2")
        .and_then(|mut st| st.execute(params![account_id, keep]))
        .map(|n| n as u64)
        .map_err(backend)
}

pub(super) fn insert_session(
    conn: &Connection,
    account_id: i64,
    s: &NewSession,
) -> Result<(), StoreError> {
    // A disabled account gets no session, whichever surface signs it in.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO sessions (token_digest, account_id, created_at, last_used_at)
             SELECT ?1, id, ?3, ?3 FROM accounts WHERE id = ?2 AND disabled_at IS NULL",
        )
        .and_then(|mut st| {
            st.execute(params![
                s.token_digest.as_bytes().as_slice(),
                account_id,
                micros(s.created_at)
            ])
        })
        .map_err(backend)?;
    match inserted {
        // The account is gone or disabled.
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}
