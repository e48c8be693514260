//! SQL for sign-in sessions.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::rows::{account_row, backend, one, time_at, ACCOUNT_COLUMNS};
use crate::crypto::SecretDigest;
use crate::store::{NewSession, SessionRecord, StoreError};

/// Deletes every session of `account_id` but the one whose token digest is
/// `keep` (all of them without one), in one statement; how many ended.
pub(super) async fn end_sessions(
    db: &impl GenericClient,
    account_id: i64,
    keep: Option<&SecretDigest>,
) -> Result<u64, StoreError> {
    // A zero-length digest matches no session: keep none.
    let keep: &[u8] = keep.map_or(&[], |d| d.as_bytes().as_slice());
    let st = db
        .prepare_cached("DELETE FROM sessions WHERE account_id = $1 AND token_digest <> $2")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&account_id, &keep])
        .await
        .map_err(backend)
}

/// Opens a session for an account that exists and is not disabled
/// (`NotFound` otherwise). The account row is read `FOR SHARE`, so a
/// disabling on another node (an UPDATE of that row) either commits first
/// and is seen here, or waits for this session and then ends it.
pub(super) async fn insert_session(
    db: &impl GenericClient,
    account_id: i64,
    s: &NewSession,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached(
            "INSERT INTO sessions (token_digest, account_id, created_at, last_used_at)
             SELECT $1::bytea, id, $3::timestamptz, $3::timestamptz FROM accounts
             WHERE id = $2 AND disabled_at IS NULL FOR SHARE",
        )
        .await
        .map_err(backend)?;
    match db
        .execute(
            &st,
            &[
                &s.token_digest.as_bytes().as_slice(),
                &account_id,
                &s.created_at,
            ],
        )
        .await
        .map_err(backend)?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// A session of an enabled account, with the account.
pub(super) async fn find_session(
    db: &impl GenericClient,
    digest: &SecretDigest,
) -> Result<SessionRecord, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {ACCOUNT_COLUMNS}, s.last_used_at
             FROM sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.token_digest = $1 AND a.disabled_at IS NULL"
        )
    });
    let st = db.prepare_cached(&SQL).await.map_err(backend)?;
    let row = db
        .query_opt(&st, &[&digest.as_bytes().as_slice()])
        .await
        .map_err(backend)?;
    one(row, |row| {
        Ok(SessionRecord {
            account: account_row(row)?,
            last_used_at: time_at(row, 8)?,
        })
    })
}

/// Records that a session was used at `now`.
pub(super) async fn touch_session(
    db: &impl GenericClient,
    digest: &SecretDigest,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached("UPDATE sessions SET last_used_at = $1 WHERE token_digest = $2")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&now, &digest.as_bytes().as_slice()])
        .await
        .map_err(backend)?;
    Ok(())
}

/// Ends one session.
pub(super) async fn delete_session(
    db: &impl GenericClient,
    digest: &SecretDigest,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached("DELETE FROM sessions WHERE token_digest = $1")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&digest.as_bytes().as_slice()])
        .await
        .map_err(backend)?;
    Ok(())
}
