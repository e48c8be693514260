//! SQL for managing invites: redeeming with uses, listing, revoking, purging.
//! Every change is one conditional statement (or several in one savepoint of
//! the writer's batch), so racing requests cannot spend more uses than an
//! invite has, nor register after a revocation has committed.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::audit::audit;
use super::outbox::{self, Subject};
use super::{
    backend, find_invite, insert_account, insert_session, invite_row, one, time_at, INVITE_COLUMNS,
};
use crate::domain::{HostName, InviteLookup};
use crate::store::{
    AccountRecord, InviteDetails, InviteKind, InviteRecord, InviteSource, InviteStatus, InviteUse,
    NewAccount, NewInvite, NewSession, Purged, StatusFilter, StoreError,
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

/// How an account records who invited it, readable without a lookup:
/// `key <id>`, `account <name>` or `cli`.
fn invited_by(invite: &InviteRecord) -> String {
    if let Some(id) = invite.source.strip_prefix("api/token/") {
        format!("key {id}")
    } else if let Some(row) = invite.source.strip_prefix("account/") {
        // issuer_name holds the inviting account's name; an invite minted
        // before names were kept falls back to its row id.
        match &invite.issuer_name {
            Some(name) => format!("account {name}"),
            None => format!("account #{row}"),
        }
    } else {
        "cli".to_owned()
    }
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
    if invite.host != account.host {
        return Err(StoreError::NotFound);
    }
    match invite.kind {
        InviteKind::Account => {}
        // A reset invite sets an existing account's password; it has its
        // own redemption and never registers a new account.
        InviteKind::Reset => return Err(StoreError::NotFound),
    }
    invite.usable_at(now)?;
    if invite
        .fixed_name
        .as_deref()
        .is_some_and(|fixed| fixed != account.name.as_str())
    {
        return Err(StoreError::NameNotAllowed);
    }
    let account = insert_account(
        conn,
        &NewAccount {
            invited_by: invited_by(&invite),
            ..account
        },
    )?;
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
        .and_then(|mut st| st.execute(params![super::micros(now), account.id, invite.id]))
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
            super::micros(now)
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
                params![
                    host.as_str(),
                    after.unwrap_or(i64::MAX),
                    limit,
                    super::micros(now)
                ],
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
        .and_then(|mut st| st.execute(params![id, host.as_str(), super::micros(now)]))
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
        Ok(()) => Err(StoreError::Backend(
            "a pending invite was not revoked".into(),
        )),
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
    let (h, cutoff) = (host.as_str(), super::micros(ended_before));
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
        &[&h, &super::micros(idle_before)],
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

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::crypto::SecretDigest;
    use crate::store::{NewInvite, Store};
    use chrono::Utc;

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
