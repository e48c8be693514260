//! SQL for managing invites: redeeming with uses, listing, revoking, purging.
//! Every change is one conditional statement (or several in one savepoint of
//! the writer's batch), so racing requests cannot spend more uses than an
//! invite has, nor register after a revocation has committed.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::accounts::insert_account;
use super::audit::audit;
use super::keys;
use super::outbox::{self, Subject};
use super::rows::{
    backend, digest_at, invite_row, is_primary_key_clash, micros, one, time_at, INVITE_COLUMNS,
};
use super::sessions::insert_session;
use crate::domain::{AccountName, HostName, InviteLookup};
use crate::store::{new_invite_id, ID_ATTEMPTS};
use crate::store::{
    AccountRecord, InviteDetails, InviteRecord, InviteSource, InviteStatus, InviteUse, NewAccount,
    NewInvite, NewSession, Purged, StatusFilter, StoreError,
};
use crate::webhooks::{EventKind, Routes};

/// Why an insert guarded by the minter's existence and quota inserted
/// nothing: the minting account holds its quota of pending invites
/// (`InviteQuota`), or the key or account is gone (`NotFound`).
pub(super) fn why_not_minted(conn: &Connection, inv: &NewInvite, minter: &Value) -> StoreError {
    if let InviteSource::Account(_) = inv.source {
        let exists = conn
            // A disabled account is refused as a deleted one is (NotFound).
            .prepare_cached(
                "SELECT 1 FROM accounts WHERE id = ?1 AND host = ?2 AND disabled_at IS NULL",
            )
            .and_then(|mut st| {
                st.query_row(params![minter, inv.host.as_str()], |_| Ok(()))
                    .optional()
            });
        match exists {
            Ok(Some(())) => return StoreError::InviteQuota,
            Ok(None) => {}
            Err(e) => return backend(e),
        }
    }
    StoreError::NotFound
}

/// In the caller's savepoint: checks the invite, creates the account, spends
/// one use, records who registered with it, and opens a session.
pub(super) fn redeem(
    conn: &Connection,
    routes: &Routes,
    lookup: &InviteLookup,
    account: NewAccount,
    session: &NewSession,
    now: DateTime<Utc>,
) -> Result<AccountRecord, StoreError> {
    let invite = find_invite(conn, lookup)?;
    invite.admits(&account.host, &account.name, now)?;
    // `invited_by` is the caller's to choose (the service derives it from
    // the invite); the store writes what it is given.
    let account = insert_account(conn, &account)?;
    // The one conditional write that spends a use: the batch runs writes one
    // after another, so the last use goes to exactly one of many racers.
    let spent = conn
        .prepare_cached(
            "UPDATE invites SET uses_spent = uses_spent + 1,
                used_at = CASE WHEN uses_spent + 1 >= uses_allowed THEN ?1 ELSE used_at END,
                used_by = CASE WHEN uses_spent + 1 >= uses_allowed THEN ?2 ELSE used_by END,
                ended_at = CASE WHEN uses_spent + 1 >= uses_allowed THEN ?1 ELSE ended_at END
             WHERE id = ?3 AND revoked_at IS NULL AND uses_spent < uses_allowed
               AND expires_at > ?1",
        )
        .and_then(|mut st| st.execute(params![micros(now), account.id, invite.id]))
        .map_err(backend)?;
    if spent != 1 {
        return Err(StoreError::InviteUsed);
    }
    conn.prepare_cached("UPDATE accounts SET invite_id = ?1 WHERE id = ?2")
        .and_then(|mut st| st.execute(params![invite.id, account.id]))
        .map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO invite_uses (invite_id, account_id, name, used_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| {
        st.execute(params![
            invite.id,
            account.id,
            account.name.as_str(),
            micros(now)
        ])
    })
    .map_err(backend)?;
    insert_session(conn, account.id, session)?;
    let subject = Subject {
        invite: Some(invite.id),
        source: Some(&invite.source),
        account: Some(account.name.as_str()),
    };
    for event in [EventKind::InviteRedeemed, EventKind::AccountCreated] {
        outbox::record(conn, routes, &account.host, event, now, subject)?;
    }
    Ok(account)
}

/// The SQL condition for a status at `?4` (now).
fn status_condition(status: StatusFilter) -> &'static str {
    match status {
        StatusFilter::Only(InviteStatus::Pending) => {
            "revoked_at IS NULL AND uses_spent < uses_allowed AND expires_at > ?4"
        }
        StatusFilter::Only(InviteStatus::Used) => {
            "revoked_at IS NULL AND uses_spent >= uses_allowed AND ?4 IS NOT NULL"
        }
        StatusFilter::Only(InviteStatus::Expired) => {
            "revoked_at IS NULL AND uses_spent < uses_allowed AND expires_at <= ?4"
        }
        StatusFilter::Only(InviteStatus::Revoked) => "revoked_at IS NOT NULL AND ?4 IS NOT NULL",
        StatusFilter::All => "?4 IS NOT NULL",
    }
}

fn uses_of(conn: &Connection, invite: InviteRecord) -> Result<InviteDetails, StoreError> {
    let uses = conn
        .prepare_cached(
            "SELECT name, used_at FROM invite_uses WHERE invite_id = ?1 ORDER BY used_at, rowid",
        )
        .and_then(|mut st| {
            st.query_map([invite.id], |row| {
                Ok(InviteUse {
                    name: row.get(0)?,
                    used_at: time_at(row, 1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(backend)?;
    Ok(InviteDetails { invite, uses })
}

/// A page of a host's invites, newest first (ids grow with time).
pub(super) fn list(
    conn: &Connection,
    host: &HostName,
    status: StatusFilter,
    after: Option<i64>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Vec<InviteDetails>, StoreError> {
    let sql = format!(
        "SELECT {INVITE_COLUMNS} FROM invites
         WHERE host = ?1 AND id < ?2 AND {}
         ORDER BY id DESC LIMIT ?3",
        status_condition(status)
    );
    let invites = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(
                params![host.as_str(), after.unwrap_or(i64::MAX), limit, micros(now)],
                invite_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(backend)?;
    invites.into_iter().map(|i| uses_of(conn, i)).collect()
}

/// One invite of `host` by row id.
pub(super) fn details(
    conn: &Connection,
    host: &HostName,
    id: i64,
) -> Result<InviteDetails, StoreError> {
    let invite = one(conn
        .prepare_cached(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE id = ?1 AND host = ?2"
        ))
        .and_then(|mut st| {
            st.query_row(params![id, host.as_str()], invite_row)
                .optional()
        }))?;
    uses_of(conn, invite)
}

/// Revokes a pending invite: one conditional UPDATE, and its audit row.
pub(super) fn revoke(
    conn: &Connection,
    routes: &Routes,
    host: &HostName,
    id: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE invites SET revoked_at = ?3, ended_at = ?3
             WHERE id = ?1 AND host = ?2 AND revoked_at IS NULL
               AND uses_spent < uses_allowed AND expires_at > ?3",
        )
        .and_then(|mut st| st.execute(params![id, host.as_str(), micros(now)]))
        .map_err(backend)?;
    if changed == 1 {
        let source: String = conn
            .prepare_cached("SELECT source FROM invites WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| r.get(0)))
            .map_err(backend)?;
        outbox::record(
            conn,
            routes,
            host,
            EventKind::InviteRevoked,
            now,
            Subject {
                invite: Some(id),
                source: Some(&source),
                account: None,
            },
        )?;
        return audit(
            conn,
            now,
            host,
            actor,
            "invite.revoke",
            &format!("invite #{id}"),
            None,
        );
    }
    // Nothing pending: say why, or succeed on an invite revoked already.
    match details(conn, host, id)?.invite.usable_at(now) {
        Err(StoreError::InviteRevoked) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => Err(StoreError::permanent("a pending invite was not revoked")),
    }
}

/// The invites of `?1` that ended before `?2`: spent or revoked then
/// (ended_at), or expired then unspent and unrevoked.
const ENDED: &str = "host = ?1 AND ((ended_at IS NOT NULL AND ended_at < ?2)
    OR (ended_at IS NULL AND revoked_at IS NULL AND expires_at < ?2))";

/// Deletes ended invites (with their use records) and idle sessions of a host.
pub(super) fn purge(
    conn: &Connection,
    host: &HostName,
    ended_before: DateTime<Utc>,
    idle_before: DateTime<Utc>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Purged, StoreError> {
    let run = |sql: &str, p: &[&dyn rusqlite::ToSql]| {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute(p))
            .map_err(backend)
    };
    let (h, cutoff) = (host.as_str(), micros(ended_before));
    // Counted first, so a key's count of minted invites survives the purge.
    run(
        &format!(
            "UPDATE api_keys SET invites_purged = invites_purged +
                (SELECT count(*) FROM invites WHERE source = 'api/token/' || api_keys.id AND {ENDED})
             WHERE host = ?1"
        ),
        &[&h, &cutoff],
    )?;
    run(
        &format!(
            "DELETE FROM invite_uses WHERE invite_id IN (SELECT id FROM invites WHERE {ENDED})"
        ),
        &[&h, &cutoff],
    )?;
    let invites = run(
        &format!("DELETE FROM invites WHERE {ENDED}"),
        &[&h, &cutoff],
    )?;
    let sessions = run(
        "DELETE FROM sessions WHERE last_used_at < ?2
           AND account_id IN (SELECT id FROM accounts WHERE host = ?1)",
        &[&h, &micros(idle_before)],
    )?;
    let purged = Purged {
        invites: invites as u64,
        sessions: sessions as u64,
    };
    // An hourly purge that found nothing leaves no trace: the log would
    // otherwise grow by a row per host per hour per node, saying nothing.
    if purged.invites > 0 || purged.sessions > 0 {
        audit(
            conn,
            now,
            host,
            actor,
            "invites.purge",
            host.as_str(),
            Some(&format!(
                "{} invites, {} sessions",
                purged.invites, purged.sessions
            )),
        )?;
    }
    Ok(purged)
}

pub(super) fn find_invite(
    conn: &Connection,
    lookup: &InviteLookup,
) -> Result<InviteRecord, StoreError> {
    match lookup {
        InviteLookup::ById { id, digest } => {
            let (invite, stored) = one(conn
                .prepare_cached(&format!(
                    "SELECT {INVITE_COLUMNS}, token_digest FROM invites
                     WHERE id = ?1 AND token_format = 2"
                ))
                .and_then(|mut st| {
                    st.query_row([id], |row| Ok((invite_row(row)?, digest_at(row, 13)?)))
                        .optional()
                }))?;
            // A right id with a wrong secret is no invite at all.
            if stored.matches(digest) {
                Ok(invite)
            } else {
                Err(StoreError::NotFound)
            }
        }
        // The format repeats the partial index's own condition, so that
        // SQLite uses it.
        InviteLookup::Legacy(digest) => one(conn
            .prepare_cached(&format!(
                "SELECT {INVITE_COLUMNS} FROM invites
                 WHERE token_digest = ?1 AND token_format = 1"
            ))
            .and_then(|mut st| {
                st.query_row([digest.as_bytes().as_slice()], invite_row)
                    .optional()
            })),
    }
}

/// Inserts an invite and its `invite.created` event.
pub(super) fn minted(
    conn: &Connection,
    routes: &Routes,
    inv: &NewInvite,
) -> Result<i64, StoreError> {
    let id = insert_invite(conn, inv)?;
    let source = inv.source.to_text();
    outbox::record(
        conn,
        routes,
        &inv.host,
        EventKind::InviteCreated,
        inv.created_at,
        Subject {
            invite: Some(id),
            source: Some(&source),
            account: None,
        },
    )?;
    Ok(id)
}

pub(super) fn insert_invite(conn: &Connection, inv: &NewInvite) -> Result<i64, StoreError> {
    let ids = std::iter::repeat_with(|| new_invite_id(inv.created_at)).take(ID_ATTEMPTS);
    insert_invite_with_ids(conn, inv, ids)
}

/// Inserts under the first of `ids` not yet taken.
pub(super) fn insert_invite_with_ids(
    conn: &Connection,
    inv: &NewInvite,
    ids: impl IntoIterator<Item = i64>,
) -> Result<i64, StoreError> {
    use rusqlite::types::Value;
    // The guard makes the check and the insert one atomic step inside the batch:
    // once `keys delete` has committed, no later mint with that key can land.
    let (guard, minter) = match &inv.source {
        // An expired key is refused here too, at commit time, so a key
        // that expires between its lookup and this write mints nothing.
        InviteSource::Key(id) => (KEY_GUARD.as_str(), Value::Text(id.to_string())),
        // The quota is counted in the same statement: two mints racing for
        // an account's last free slot cannot both land.
        InviteSource::Account(id) => (
            // Counted in sign-ups still open, the new invite's included, so
            // a multi-use invite cannot stretch the quota; a disabled
            // account mints nothing, even racing its disabling.
            "WHERE EXISTS (SELECT 1 FROM accounts
                           WHERE id = ?7 AND host = ?2 AND disabled_at IS NULL)
               AND (?12 IS NULL OR (SELECT coalesce(sum(uses_allowed - uses_spent), 0)
                    FROM invites
                    WHERE source = ?3 AND revoked_at IS NULL
                      AND uses_spent < uses_allowed AND expires_at > ?5) + ?9 <= ?12)",
            Value::Integer(*id),
        ),
        InviteSource::Cli => ("WHERE ?7 IS NULL AND ?12 IS NULL", Value::Null),
    };
    static KEY_GUARD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?7 AND host = ?2
                AND (expires_at IS NULL OR expires_at > {}))
             AND ?12 IS NULL",
            keys::SQL_NOW_MICROS
        )
    });
    let sql = format!(
        "INSERT INTO invites
            (id, token_digest, host, source, issuer_name, created_at, expires_at, token_format,
             uses_allowed, note, fixed_name)
         SELECT ?8, ?1, ?2, ?3, ?4, ?5, ?6, 2, ?9, ?10, ?11 {guard}"
    );
    let mut st = conn.prepare_cached(&sql).map_err(backend)?;
    let source = inv.source.to_text();
    for id in ids {
        let inserted = st.execute(params![
            inv.token_digest.as_bytes().as_slice(),
            inv.host.as_str(),
            source,
            inv.issuer_name,
            micros(inv.created_at),
            micros(inv.expires_at),
            minter,
            id,
            inv.uses_allowed,
            inv.note,
            inv.fixed_name.as_ref().map(AccountName::as_str),
            inv.pending_limit,
        ]);
        match inserted {
            Ok(0) => return Err(why_not_minted(conn, inv, &minter)),
            Ok(_) => return Ok(id),
            // Another invite has this id: draw again. A failed statement
            // undoes only itself.
            Err(e) if is_primary_key_clash(&e) => continue,
            Err(e) => return Err(backend(e)),
        }
    }
    Err(StoreError::permanent("no free invite id in as many draws"))
}

#[cfg(test)]
mod tests {
    use super::super::rows::is_constraint_violation;
    use super::super::test_support::{cli_invite, scratch};
    use super::super::SqliteStore;
    use super::{insert_invite_with_ids, new_invite_id};
    use crate::crypto::SecretDigest;
    use crate::store::{NewInvite, Store};
    use chrono::{DateTime, Utc};
    use rusqlite::params;

    #[test]
    fn a_schema_1_server_still_running_on_a_migrated_file_cannot_mint() {
        let (_dir, conn) = scratch();
        // The statement a schema 1 server runs for every mint.
        let old = conn.execute(
            "INSERT INTO invites (token_digest, host, source, issuer_name, created_at, expires_at)
             SELECT ?1, 'example.com', 'cli', NULL, 1, 2 WHERE ?2 IS NULL",
            params![
                SecretDigest::of("t").as_bytes().as_slice(),
                rusqlite::types::Null
            ],
        );
        assert!(is_constraint_violation(&old.unwrap_err()));
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn lookups_use_an_index_for_both_token_formats() {
        let (_dir, conn) = scratch();
        let plan = |sql: &str| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("; ")
        };
        let by_id = plan("SELECT host FROM invites WHERE id = 1 AND token_format = 2");
        assert!(by_id.contains("INTEGER PRIMARY KEY"), "{by_id}");
        let legacy =
            plan("SELECT host FROM invites WHERE token_digest = x'00' AND token_format = 1");
        assert!(legacy.contains("invites_by_legacy_token"), "{legacy}");
    }

    #[test]
    fn invite_ids_grow_with_time_and_stay_above_schema_1_ids() {
        let now = Utc::now();
        let earlier = now - chrono::Duration::milliseconds(1);
        for _ in 0..1000 {
            let (a, b) = (new_invite_id(earlier), new_invite_id(now));
            assert!(a < b);
            assert!(a >= crate::domain::LEGACY_INVITE_ID_LIMIT);
        }
        let far = DateTime::from_timestamp(8_000_000_000, 0).unwrap();
        assert!(new_invite_id(far) > 0);
        let before_1970 = DateTime::from_timestamp(-86_400, 0).unwrap();
        assert!(new_invite_id(before_1970) >= crate::domain::LEGACY_INVITE_ID_LIMIT);
    }

    #[test]
    fn an_invite_id_already_taken_is_drawn_again() {
        let (_dir, conn) = scratch();
        let now = Utc::now();
        let taken = new_invite_id(now);
        let inv = cli_invite(SecretDigest::of("a"), now);
        assert_eq!(insert_invite_with_ids(&conn, &inv, [taken]), Ok(taken));
        let again = insert_invite_with_ids(&conn, &inv, [taken, taken, taken + 1]);
        assert_eq!(again, Ok(taken + 1));
        assert!(insert_invite_with_ids(&conn, &inv, [taken, taken + 1]).is_err());
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[tokio::test]
    async fn revoking_and_purging_write_one_audit_row_each_with_the_actor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let host = crate::domain::HostName::parse("example.com").unwrap();
        let now = Utc::now();
        let id = store
            .create_invite(NewInvite {
                token_digest: SecretDigest::of("t"),
                host: host.clone(),
                source: crate::store::InviteSource::Cli,
                issuer_name: None,
                created_at: now,
                expires_at: now + chrono::Duration::days(1),
                uses_allowed: 1,
                note: None,
                fixed_name: None,
                pending_limit: None,
            })
            .await
            .unwrap();
        store
            .revoke_invite(&host, id, "cli".into(), now)
            .await
            .unwrap();
        let purged = store
            .purge(
                &host,
                now + chrono::Duration::seconds(1),
                now,
                "server".into(),
                now,
            )
            .await
            .unwrap();
        assert_eq!(purged.invites, 1);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: Vec<(String, String, String, Option<String>)> = conn
            .prepare("SELECT actor, action, subject, detail FROM audit_log ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            (rows[0].0.as_str(), rows[0].1.as_str()),
            ("cli", "invite.revoke")
        );
        assert_eq!(rows[0].2, format!("invite #{id}"));
        assert_eq!(
            (rows[1].0.as_str(), rows[1].1.as_str()),
            ("server", "invites.purge")
        );
        assert_eq!(rows[1].3.as_deref(), Some("1 invites, 0 sessions"));
    }
}
