//! SQL for the account lifecycle: who invited an account, disabling,
//! operator password changes, deletion with the invites the account minted,
//! and password-reset invites. Each write is one transaction with its audit row.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, audit};
use super::invites::find_invite;
use super::outbox::{self, Subject};
use super::rows::{
    account_row, all_rows, backend, host_at, is_constraint_violation, is_primary_key_clash, micros,
    one, time_at, ACCOUNT_COLUMNS,
};
use super::sessions::{end_sessions, insert_session};
use crate::crypto::SecretDigest;
use crate::domain::{AccountName, HostName, InviteLookup};
use crate::store::{
    invite_minted_at, new_invite_id, AccountOrigin, AccountRecord, NewAccount, NewResetInvite,
    NewSession, StoreError, ID_ATTEMPTS,
};
use crate::webhooks::EventKind;

/// A host's accounts, by name.
pub(super) fn list(conn: &Connection, host: &HostName) -> Result<Vec<AccountRecord>, StoreError> {
    all_rows(
        conn,
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.host = ?1 ORDER BY a.name"),
        host,
        account_row,
    )
}

/// An account by host and name, or `NotFound`.
pub(super) fn find(
    conn: &Connection,
    host: &HostName,
    name: &AccountName,
) -> Result<AccountRecord, StoreError> {
    one(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.host = ?1 AND a.name = ?2"
        ))
        .and_then(|mut st| {
            st.query_row([host.as_str(), name.as_str()], account_row)
                .optional()
        }))
}

/// Sets an account's password hash and ends its sessions but `keep`, with
/// an audit row by `actor`; `NotFound` when the account is gone.
pub(super) fn set_password(
    conn: &Connection,
    account_id: i64,
    password_hash: &str,
    keep: Option<&SecretDigest>,
    actor: &str,
) -> Result<(), StoreError> {
    let (host, name) = one(conn
        .prepare_cached("UPDATE accounts SET password_hash = ?1 WHERE id = ?2 RETURNING host, name")
        .and_then(|mut st| {
            st.query_row(params![password_hash, account_id], |r| {
                Ok((host_at(r, 0)?, r.get::<_, String>(1)?))
            })
            .optional()
        }))?;
    end_sessions(conn, account_id, keep)?;
    audit(
        conn,
        Utc::now(),
        &host,
        actor,
        "account.passwd",
        &name,
        None,
    )
}

/// The row id of an account, or `NotFound`.
fn account_id(conn: &Connection, host: &HostName, name: &AccountName) -> Result<i64, StoreError> {
    one(conn
        .prepare_cached("SELECT id FROM accounts WHERE host = ?1 AND name = ?2")
        .and_then(|mut st| {
            st.query_row([host.as_str(), name.as_str()], |r| r.get(0))
                .optional()
        }))
}

/// Deletes an account (its sessions go by ON DELETE CASCADE) and revokes the
/// invites it minted that are still pending, so a deleted account's
/// stockpile of invites stops working with it.
pub(super) fn delete(
    conn: &Connection,
    routes: &crate::webhooks::Routes,
    host: &HostName,
    name: &AccountName,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = account_id(conn, host, name)?;
    let now_us = micros(now);
    // "Pending" as everywhere: not revoked, uses left, not expired. Reset
    // invites for this account go too: SQLite may give its row id to the
    // next account, whose password such an invite must never set.
    let revoked = conn
        .prepare_cached(
            "UPDATE invites SET revoked_at = ?2, ended_at = ?2
             WHERE (source = ?1 OR reset_account_id = ?3)
               AND revoked_at IS NULL AND uses_spent < uses_allowed AND expires_at > ?2",
        )
        .and_then(|mut st| st.execute(params![format!("account/{id}"), now_us, id]))
        .map_err(backend)?;
    // Who registered with an invite stays on record by name; the row id
    // would name whichever account gets it next.
    conn.prepare_cached("UPDATE invite_uses SET account_id = NULL WHERE account_id = ?1")
        .and_then(|mut st| st.execute([id]))
        .map_err(backend)?;
    super::outbox::record_revocations(conn, routes, host, &format!("account/{id}"), Some(id), now)?;
    conn.prepare_cached("DELETE FROM accounts WHERE id = ?1")
        .and_then(|mut st| st.execute([id]))
        .map_err(backend)?;
    super::outbox::record(
        conn,
        routes,
        host,
        crate::webhooks::EventKind::AccountDeleted,
        now,
        super::outbox::Subject {
            account: Some(name.as_str()),
            ..Default::default()
        },
    )?;
    let detail = format!("revoked {revoked} pending invites");
    audit(
        conn,
        now,
        host,
        actor,
        "account.delete",
        name.as_str(),
        Some(&detail),
    )
}

/// Disables or enables an account; disabling ends its sessions.
pub(super) fn set_disabled(
    conn: &Connection,
    host: &HostName,
    name: &AccountName,
    disabled: bool,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<(), StoreError> {
    let id = account_id(conn, host, name)?;
    // An account disabled twice keeps the time it was first disabled.
    conn.prepare_cached(
        "UPDATE accounts SET disabled_at = CASE WHEN ?2 THEN coalesce(disabled_at, ?3) END
         WHERE id = ?1",
    )
    .and_then(|mut st| st.execute(params![id, disabled, micros(at)]))
    .map_err(backend)?;
    if disabled {
        super::sessions::end_sessions(conn, id, None)?;
    }
    let action = if disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    audit(conn, at, host, actor, action, name.as_str(), None)
}

/// An account by row id.
pub(super) fn find_by_id(conn: &Connection, id: i64) -> Result<AccountRecord, StoreError> {
    one(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = ?1"
        ))
        .and_then(|mut st| st.query_row([id], super::rows::account_row).optional()))
}

/// An account with when its invite was minted: from the invite while it is
/// kept, else from its id, whose high bits are the minting time in
/// milliseconds (see `new_invite_id`); schema 1 ids carry no time.
pub(super) fn origin(
    conn: &Connection,
    host: &HostName,
    name: &AccountName,
) -> Result<AccountOrigin, StoreError> {
    let (account, minted) = one(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS}, i.created_at
             FROM accounts a LEFT JOIN invites i ON i.id = a.invite_id
             WHERE a.host = ?1 AND a.name = ?2"
        ))
        .and_then(|mut st| {
            st.query_row([host.as_str(), name.as_str()], |row| {
                let minted = match row.get::<_, Option<i64>>(8)? {
                    Some(_) => Some(time_at(row, 8)?),
                    None => None,
                };
                Ok((super::rows::account_row(row)?, minted))
            })
            .optional()
        }))?;
    let invite_minted_at = minted.or_else(|| account.invite_id.and_then(invite_minted_at));
    Ok(AccountOrigin {
        account,
        invite_minted_at,
    })
}

/// Stores a password-reset invite for an existing account, audited.
pub(super) fn insert_reset(conn: &Connection, inv: &NewResetInvite) -> Result<i64, StoreError> {
    let mut st = conn
        .prepare_cached(
            "INSERT INTO invites
                (id, token_digest, host, source, created_at, expires_at, token_format, kind,
                 reset_account_id, fixed_name)
             SELECT ?1, ?2, host, ?7, ?3, ?4, 2, 'reset', id, name
             FROM accounts WHERE host = ?5 AND name = ?6",
        )
        .map_err(backend)?;
    for _ in 0..ID_ATTEMPTS {
        let id = new_invite_id(inv.created_at);
        let inserted = st.execute(params![
            id,
            inv.token_digest.as_bytes().as_slice(),
            micros(inv.created_at),
            micros(inv.expires_at),
            inv.host.as_str(),
            inv.account.as_str(),
            inv.source.to_text(),
        ]);
        match inserted {
            Ok(0) => return Err(StoreError::NotFound),
            Ok(_) => {
                audit(
                    conn,
                    inv.created_at,
                    &inv.host,
                    &inv.actor,
                    "invite.reset",
                    inv.account.as_str(),
                    None,
                )?;
                return Ok(id);
            }
            // Another invite has this id: draw again.
            Err(e) if is_primary_key_clash(&e) => continue,
            Err(e) => return Err(backend(e)),
        }
    }
    Err(StoreError::permanent("no free invite id in as many draws"))
}

/// Redeems a reset invite: spends it (one conditional write, so two
/// redemptions cannot both pass), sets the password, ends every session of
/// the account and opens `session`.
pub(super) fn redeem_reset(
    conn: &Connection,
    lookup: &InviteLookup,
    password_hash: &str,
    session: &NewSession,
    now: DateTime<Utc>,
) -> Result<AccountRecord, StoreError> {
    let invite = find_invite(conn, lookup)?;
    invite.usable_at(now)?;
    let account_id = invite.reset_account_id.ok_or(StoreError::NotFound)?;
    let now_us = micros(now);
    let spent = conn
        .prepare_cached(
            "UPDATE invites SET uses_spent = uses_spent + 1, used_at = ?2, used_by = ?3,
                ended_at = ?2
             WHERE id = ?1 AND revoked_at IS NULL AND uses_spent < uses_allowed
               AND expires_at > ?2",
        )
        .and_then(|mut st| st.execute(params![invite.id, now_us, account_id]))
        .map_err(backend)?;
    if spent != 1 {
        return Err(StoreError::InviteUsed);
    }
    // The account must still be the one the invite was made for: its name
    // is kept with the invite, since a row id can be given out again.
    let name = invite.fixed_name.as_deref().ok_or(StoreError::NotFound)?;
    let changed = conn
        .prepare_cached(
            "UPDATE accounts SET password_hash = ?1
             WHERE id = ?2 AND name = ?3 AND disabled_at IS NULL",
        )
        .and_then(|mut st| st.execute(params![password_hash, account_id, name]))
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    super::sessions::end_sessions(conn, account_id, None)?;
    let account = find_by_id(conn, account_id)?;
    conn.prepare_cached(
        "INSERT INTO invite_uses (invite_id, account_id, name, used_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| {
        st.execute(params![
            invite.id,
            account_id,
            account.name.as_str(),
            now_us
        ])
    })
    .map_err(backend)?;
    insert_session(conn, account_id, session)?;
    Ok(account)
}

pub(super) fn insert_account(
    conn: &Connection,
    a: &NewAccount,
) -> Result<AccountRecord, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO accounts (host, name, password_hash, created_at, invited_by, invite_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| {
            st.execute(params![
                a.host.as_str(),
                a.name.as_str(),
                a.password_hash,
                micros(a.created_at),
                a.invited_by,
                a.invite_id
            ])
        });
    match inserted {
        Ok(_) => Ok(a.saved_as(conn.last_insert_rowid())),
        Err(e) if is_constraint_violation(&e) => Err(StoreError::NameTaken),
        Err(e) => Err(backend(e)),
    }
}

/// Inserts an account made without an invite, with its webhook event and
/// its audit row: only the operator's command creates accounts so.
pub(super) fn create_account_audited(
    conn: &Connection,
    routes: &crate::webhooks::Routes,
    account: &NewAccount,
) -> Result<AccountRecord, StoreError> {
    let created = insert_account(conn, account)?;
    outbox::record(
        conn,
        routes,
        &created.host,
        EventKind::AccountCreated,
        created.created_at,
        Subject {
            account: Some(created.name.as_str()),
            source: Some("cli"),
            ..Subject::default()
        },
    )?;
    audit::audit(
        conn,
        created.created_at,
        &created.host,
        "cli",
        "account.create",
        created.name.as_str(),
        None,
    )?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::crypto::SecretDigest;
    use crate::domain::{AccountName, HostName};
    use crate::store::{NewAccount, NewResetInvite, Store};
    use chrono::Utc;

    #[tokio::test]
    async fn every_operator_change_to_an_account_writes_one_audit_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let host = HostName::parse("example.com").unwrap();
        let name = AccountName::parse("alice").unwrap();
        let alice = store
            .create_account(NewAccount {
                host: host.clone(),
                name: name.clone(),
                password_hash: "$argon2id$x".into(),
                created_at: Utc::now(),
                invited_by: "cli".into(),
                invite_id: None,
            })
            .await
            .unwrap();
        let now = Utc::now();
        store
            .set_account_disabled(&host, &name, true, now, "cli")
            .await
            .unwrap();
        store
            .set_account_disabled(&host, &name, false, now, "cli")
            .await
            .unwrap();
        store
            .set_password(alice.id, "$argon2id$y".into(), None, "cli")
            .await
            .unwrap();
        store
            .create_reset_invite(NewResetInvite {
                token_digest: SecretDigest::of("r"),
                host: host.clone(),
                account: name.clone(),
                created_at: now,
                expires_at: now + chrono::Duration::days(1),
                actor: "cli".into(),
                source: crate::store::InviteSource::Cli,
            })
            .await
            .unwrap();
        store.delete_account(&host, &name, "cli").await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let actions: Vec<String> = conn
            .prepare("SELECT action FROM audit_log WHERE subject = 'alice' AND actor = 'cli' ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            actions,
            [
                "account.create",
                "account.disable",
                "account.enable",
                "account.passwd",
                "invite.reset",
                "account.delete"
            ]
        );
    }
}
