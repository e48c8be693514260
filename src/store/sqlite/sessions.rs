//! SQL for sign-in sessions beyond the basic create, find, touch and delete.

use rusqlite::{params, Connection};

use super::backend;
use crate::crypto::SecretDigest;
use crate::store::StoreError;

/// Deletes every session of `account_id` but the one whose token digest is
/// `keep`, in one statement; how many ended.
pub(super) fn end_others(
    conn: &Connection,
    account_id: i64,
    keep: &SecretDigest,
) -> Result<u64, StoreError> {
    conn.prepare_cached("DELETE FROM sessions WHERE account_id = ?1 AND token_digest != ?2")
        .and_then(|mut st| st.execute(params![account_id, keep.as_bytes().as_slice()]))
        .map(|n| n as u64)
        .map_err(backend)
}
