//! SQL for sign-in sessions beyond the basic create, find, touch and delete.

use rusqlite::{params, Connection};

use super::backend;
use crate::crypto::SecretDigest;
use crate::store::StoreError;

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
