//! SQL for sign-in sessions beyond the basic create, find, touch and delete.

use rusqlite::{params, Connection};

use super::rows::{backend, micros};
use crate::crypto::SecretDigest;
use crate::store::{NewSession, StoreError};

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
