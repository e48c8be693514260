//! The SQL of API keys: creating, listing, finding, deleting (with the
//! revocation of their pending invites) and recording their use.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::audit::audit;
use super::rows::{all_rows, backend, corrupt, digest_at, host_at, micros, one, time_at};
use crate::domain::{HostName, KeyId, KeyScope, MintRate};
use crate::store::{InviteSource, KeyRecord, ListedKey, StoreError};

/// The columns [`key_row`] reads, in its order, from `api_keys k`.
const KEY_COLUMNS: &str = "k.id, k.host, k.name, k.created_at, k.secret_digest, k.scope, \
     k.expires_at, k.rate_limit, k.rate_period_secs, k.last_used_at";

/// The time of the statement that uses it, in microseconds since the epoch,
/// as SQLite sees it (to the millisecond): a condition on it inside a write
/// holds at commit time, not at whatever time the caller read its clock.
pub(super) const SQL_NOW_MICROS: &str =
    "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

fn optional_time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        Some(_) => time_at(row, idx).map(Some),
        None => Ok(None),
    }
}

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let rate = match (row.get::<_, Option<u32>>(7)?, row.get::<_, Option<u32>>(8)?) {
        (Some(limit), Some(period)) => {
            Some(MintRate::from_parts(limit, period).map_err(|_| corrupt(7, "bad rate"))?)
        }
        _ => None,
    };
    Ok(KeyRecord {
        id: KeyId::parse(&row.get::<_, String>(0)?).map_err(|_| corrupt(0, "bad key id"))?,
        host: host_at(row, 1)?,
        name: row.get(2)?,
        created_at: time_at(row, 3)?,
        secret_digest: digest_at(row, 4)?,
        scope: KeyScope::parse(&row.get::<_, String>(5)?).map_err(|_| corrupt(5, "bad scope"))?,
        expires_at: optional_time_at(row, 6)?,
        rate,
        last_used_at: optional_time_at(row, 9)?,
    })
}

/// Inserts a key and its audit row (the caller runs both in one savepoint).
pub(super) fn insert_key(
    conn: &Connection,
    key: &KeyRecord,
    actor: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, host, name, created_at, secret_digest, scope, expires_at,
            rate_limit, rate_period_secs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            key.id.as_str(),
            key.host.as_str(),
            key.name,
            micros(key.created_at),
            key.secret_digest.as_bytes().as_slice(),
            key.scope.as_str(),
            key.expires_at.map(micros),
            key.rate.map(|r| r.limit().get()),
            key.rate.map(|r| r.period_secs().get()),
        ])
    })
    .map_err(backend)?;
    audit(
        conn,
        key.created_at,
        &key.host,
        actor,
        "key.create",
        key.id.as_str(),
        Some(&key.created_detail()),
    )
}

/// The keys of a host, oldest first, each with the invites it minted: those
/// still stored (found through `invites_by_source`) and those purged.
pub(super) fn list_keys(conn: &Connection, host: &HostName) -> Result<Vec<ListedKey>, StoreError> {
    all_rows(
        conn,
        &format!(
            "SELECT {KEY_COLUMNS},
                k.invites_purged
                + (SELECT count(*) FROM invites i WHERE i.source = 'api/token/' || k.id)
             FROM api_keys k WHERE k.host = ?1 ORDER BY k.created_at, k.id"
        ),
        host,
        |row| {
            Ok(ListedKey {
                key: key_row(row)?,
                invites_minted: row.get(10)?,
            })
        },
    )
}

/// One key by its id.
pub(super) fn find_key(conn: &Connection, id: &KeyId) -> Result<KeyRecord, StoreError> {
    one(conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = ?1"
        ))
        .and_then(|mut st| st.query_row([id.as_str()], key_row).optional()))
}

/// Deletes a key of `host`, revokes its pending invites when asked, and
/// audits it: one step, so no invite of a deleted key is left pending
/// unless the operator chose to keep them. How many it revoked.
pub(super) fn delete_key(
    conn: &Connection,
    routes: &crate::webhooks::Routes,
    host: &HostName,
    id: &KeyId,
    revoke_invites: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM api_keys WHERE id = ?1 AND host = ?2")
        .and_then(|mut st| st.execute(params![id.as_str(), host.as_str()]))
        .map_err(backend)?;
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    let revoked = if revoke_invites {
        // "Pending" as everywhere: not revoked, uses left, not expired.
        let revoked = conn
            .prepare_cached(
                "UPDATE invites SET revoked_at = ?1, ended_at = ?1
             WHERE source = ?2 AND host = ?3
               AND revoked_at IS NULL AND uses_spent < uses_allowed AND expires_at > ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    micros(now),
                    InviteSource::Key(id.clone()).to_text(),
                    host.as_str()
                ])
            })
            .map_err(backend)? as u64;
        let source = InviteSource::Key(id.clone()).to_text();
        super::outbox::record_revocations(conn, routes, host, &source, None, now)?;
        revoked
    } else {
        0
    };
    let detail = if revoke_invites {
        format!("revoked {revoked} pending invites")
    } else {
        "kept its pending invites".to_owned()
    };
    audit(
        conn,
        now,
        host,
        actor,
        "key.delete",
        id.as_str(),
        Some(&detail),
    )?;
    Ok(revoked)
}

/// Records a key's last use; a key deleted meanwhile is no error.
pub(super) fn touch_key(
    conn: &Connection,
    id: &KeyId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id.as_str(), micros(now)]))
        .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::*;
    use crate::crypto::SecretDigest;
    use crate::store::{NewInvite, Store};

    fn host() -> HostName {
        HostName::parse("example.com").unwrap()
    }

    fn key(id: &str, expires_at: Option<DateTime<Utc>>) -> KeyRecord {
        KeyRecord {
            id: KeyId::parse(id).unwrap(),
            host: host(),
            name: None,
            created_at: Utc::now(),
            secret_digest: SecretDigest::of("secret"),
            scope: KeyScope::Admin,
            expires_at,
            rate: Some(MintRate::parse("60/h").unwrap()),
            last_used_at: None,
        }
    }

    fn minted_with(id: &KeyId, token: &str, expires_at: DateTime<Utc>) -> NewInvite {
        NewInvite {
            token_digest: SecretDigest::of(token),
            host: host(),
            source: InviteSource::Key(id.clone()),
            issuer_name: None,
            created_at: Utc::now(),
            expires_at,
            uses_allowed: 1,
            note: None,
            fixed_name: None,
            pending_limit: None,
        }
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_key_reads_back_with_its_scope_expiry_and_rate() {
        let (_dir, store) = open();
        let k = key("ReadsBack001", Some(Utc::now() + chrono::Duration::days(1)));
        store.create_key(k.clone(), "cli").await.unwrap();
        let found = store.find_key(&k.id).await.unwrap();
        assert_eq!(found.scope, KeyScope::Admin);
        assert_eq!(found.rate, k.rate);
        assert_eq!(found.expires_at.map(micros), k.expires_at.map(micros));
        assert_eq!(found.last_used_at, None);
        let now = Utc::now();
        store.touch_key(&k.id, now).await.unwrap();
        let found = store.find_key(&k.id).await.unwrap();
        assert_eq!(found.last_used_at.map(micros), Some(micros(now)));
    }

    #[tokio::test]
    async fn the_store_refuses_to_mint_with_a_key_past_its_expiry_even_if_the_caller_did_not_check()
    {
        let (_dir, store) = open();
        let k = key(
            "ExpiredKey01",
            Some(Utc::now() - chrono::Duration::seconds(1)),
        );
        store.create_key(k.clone(), "cli").await.unwrap();
        let later = Utc::now() + chrono::Duration::days(1);
        assert_eq!(
            store.create_invite(minted_with(&k.id, "t", later)).await,
            Err(StoreError::NotFound)
        );
        let listed = store.list_keys(&host()).await.unwrap();
        assert_eq!(listed[0].invites_minted, 0);
    }

    #[tokio::test]
    async fn deleting_a_key_revokes_only_its_pending_invites_and_audits_both_steps() {
        let (dir, store) = open();
        let k = key("DeletedKey01", None);
        store.create_key(k.clone(), "cli").await.unwrap();
        let later = Utc::now() + chrono::Duration::days(1);
        let pending = store
            .create_invite(minted_with(&k.id, "pending", later))
            .await
            .unwrap();
        let ended = store
            .create_invite(minted_with(
                &k.id,
                "ended",
                Utc::now() + chrono::Duration::milliseconds(1),
            ))
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.list_keys(&host()).await.unwrap()[0].invites_minted, 2);
        let revoked = store.delete_key(&host(), &k.id, true, "cli").await;
        assert_eq!(revoked, Ok(1));

        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        let revoked_at = |id: i64| -> Option<i64> {
            conn.query_row("SELECT revoked_at FROM invites WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert!(revoked_at(pending).is_some());
        assert!(
            revoked_at(ended).is_none(),
            "an expired invite is not revoked"
        );
        let audit: Vec<(String, String, String, Option<String>)> = conn
            .prepare("SELECT actor, action, subject, detail FROM audit_log ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(audit.len(), 2, "{audit:?}");
        assert_eq!(audit[0].1, "key.create");
        assert_eq!(audit[0].3.as_deref(), Some("scope admin, rate 60/h"));
        assert_eq!(
            (
                audit[1].0.as_str(),
                audit[1].1.as_str(),
                audit[1].2.as_str()
            ),
            ("cli", "key.delete", "DeletedKey01")
        );
        assert_eq!(audit[1].3.as_deref(), Some("revoked 1 pending invites"));
        assert_eq!(
            store.delete_key(&host(), &k.id, true, "cli").await,
            Err(StoreError::NotFound)
        );
    }
}
