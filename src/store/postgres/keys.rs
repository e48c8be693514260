//! The SQL of API keys: creating, listing, finding, deleting (with the
//! revocation of their pending invites) and recording their use.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::audit::audit;
use super::outbox::record_revocations;
use super::rows::{all, backend, corrupt, get, host_at, one, time_at, total_at};
use crate::crypto::SecretDigest;
use crate::domain::{HostName, KeyId, KeyScope, MintRate};
use crate::store::{InviteSource, KeyRecord, ListedKey, StoreError};
use crate::webhooks::Routes;

/// The columns [`key_row`] reads, in its order, from `api_keys k`.
const KEY_COLUMNS: &str = "k.id, k.host, k.name, k.created_at, k.secret_digest, k.scope, \
     k.expires_at, k.rate_limit, k.rate_period_secs, k.last_used_at";

fn key_row(row: &Row) -> Result<KeyRecord, StoreError> {
    let part = |idx| -> Result<Option<u32>, StoreError> {
        get::<Option<i64>>(row, idx)?
            .map(|v| u32::try_from(v).map_err(|_| corrupt("bad rate")))
            .transpose()
    };
    let rate = match (part(7)?, part(8)?) {
        (Some(limit), Some(period)) => {
            Some(MintRate::from_parts(limit, period).map_err(|_| corrupt("bad rate"))?)
        }
        _ => None,
    };
    Ok(KeyRecord {
        id: KeyId::parse(get(row, 0)?).map_err(|_| corrupt("bad key id"))?,
        host: host_at(row, 1)?,
        name: get(row, 2)?,
        created_at: time_at(row, 3)?,
        secret_digest: SecretDigest::from_slice(get(row, 4)?).ok_or_else(|| corrupt("digest"))?,
        scope: KeyScope::parse(get(row, 5)?).map_err(|_| corrupt("bad scope"))?,
        expires_at: get(row, 6)?,
        rate,
        last_used_at: get(row, 9)?,
    })
}

/// Inserts a key and its audit row (the caller runs both in one transaction).
pub(super) async fn insert_key(
    db: &impl GenericClient,
    key: &KeyRecord,
    actor: &str,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached(
            "INSERT INTO api_keys (id, host, name, created_at, secret_digest, scope, expires_at,
                rate_limit, rate_period_secs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(backend)?;
    db.execute(
        &st,
        &[
            &key.id.as_str(),
            &key.host.as_str(),
            &key.name,
            &key.created_at,
            &key.secret_digest.as_bytes().as_slice(),
            &key.scope.as_str(),
            &key.expires_at,
            &key.rate.map(|r| i64::from(r.limit().get())),
            &key.rate.map(|r| i64::from(r.period_secs().get())),
        ],
    )
    .await
    .map_err(backend)?;
    audit(
        db,
        key.created_at,
        &key.host,
        actor,
        "key.create",
        key.id.as_str(),
        Some(&key.created_detail()),
    )
    .await
}

/// The keys of a host, oldest first, each with the invites it minted: those
/// still stored and those purged.
pub(super) async fn list_keys(
    db: &impl GenericClient,
    host: &HostName,
) -> Result<Vec<ListedKey>, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS},
                k.invites_purged
                + (SELECT count(*) FROM invites i WHERE i.source = 'api/token/' || k.id)
             FROM api_keys k WHERE k.host = $1 ORDER BY k.created_at, k.id COLLATE \"C\""
        ))
        .await
        .map_err(backend)?;
    let rows = db.query(&st, &[&host.as_str()]).await.map_err(backend)?;
    all(rows, |row| {
        Ok(ListedKey {
            key: key_row(row)?,
            invites_minted: total_at(row, 10)?,
        })
    })
}

/// One key by its id.
pub(super) async fn find_key(db: &impl GenericClient, id: &KeyId) -> Result<KeyRecord, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = $1"
        ))
        .await
        .map_err(backend)?;
    one(
        db.query_opt(&st, &[&id.as_str()]).await.map_err(backend)?,
        key_row,
    )
}

/// Deletes a key of `host`, revokes its pending invites when asked, and
/// audits it, in the caller's transaction.
///
/// Race-free under READ COMMITTED with mints on other nodes: the DELETE
/// takes the key row's exclusive lock, which conflicts with the KEY SHARE
/// lock every mint with this key takes on it (see `invites::insert`). A
/// mint that locked the key first makes this DELETE wait until it commits,
/// and the revoking UPDATE below, a later statement, then sees its invite;
/// a mint that comes after the DELETE finds no key to lock and mints nothing.
pub(super) async fn delete_key(
    db: &impl GenericClient,
    routes: &Routes,
    host: &HostName,
    id: &KeyId,
    revoke_invites: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let st = db
        .prepare_cached("DELETE FROM api_keys WHERE id = $1 AND host = $2")
        .await
        .map_err(backend)?;
    let deleted = db
        .execute(&st, &[&id.as_str(), &host.as_str()])
        .await
        .map_err(backend)?;
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    let source = InviteSource::Key(id.clone()).to_text();
    let revoked = if revoke_invites {
        let revoked = super::invites::revoke_pending(db, host, &source, None, now).await?;
        record_revocations(db, routes, host, &revoked, now).await?;
        revoked.len() as u64
    } else {
        0
    };
    let detail = if revoke_invites {
        format!("revoked {revoked} pending invites")
    } else {
        "kept its pending invites".to_owned()
    };
    audit(
        db,
        now,
        host,
        actor,
        "key.delete",
        id.as_str(),
        Some(&detail),
    )
    .await?;
    Ok(revoked)
}

/// Records a key's last use; a key deleted meanwhile is no error.
pub(super) async fn touch_key(
    db: &impl GenericClient,
    id: &KeyId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&id.as_str(), &now])
        .await
        .map_err(backend)?;
    Ok(())
}
