//! SQL for accounts: creating, finding, listing, disabling, password
//! changes, deletion with the invites the account minted, and
//! password-reset invites. Each write runs in one transaction with its
//! audit row.
//!
//! Changes to an account first lock its row `FOR UPDATE`, as a mint by the
//! account does (see `invites::insert`): a deletion on one node and a mint
//! on another are so ordered, and the revocation that follows the lock sees
//! every invite committed before it.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::audit::audit;
use super::invites::{find_invite, id_taken, record_use, revoke_pending};
use super::outbox::{self, record_revocations, Subject};
use super::rows::{
    account_row, all, backend, get, host_at, is_unique_violation, one, ACCOUNT_COLUMNS,
};
use super::sessions::{end_sessions, insert_session};
use crate::crypto::SecretDigest;
use crate::domain::{AccountName, HostName, InviteLookup};
use crate::store::{
    invite_minted_at, new_invite_id, AccountOrigin, AccountRecord, NewAccount, NewResetInvite,
    NewSession, StoreError, ID_ATTEMPTS,
};
use crate::webhooks::{EventKind, Routes};

/// The row id of an account, its row locked until the transaction ends; or
/// `NotFound`.
async fn lock_account(
    db: &impl GenericClient,
    host: &HostName,
    name: &AccountName,
) -> Result<i64, StoreError> {
    let st = db
        .prepare_cached("SELECT id FROM accounts WHERE host = $1 AND name = $2 FOR UPDATE")
        .await
        .map_err(backend)?;
    one(
        db.query_opt(&st, &[&host.as_str(), &name.as_str()])
            .await
            .map_err(backend)?,
        |r| get(r, 0),
    )
}

/// Inserts an account; `NameTaken` when the host has one of that name (the
/// UNIQUE constraint decides, so two nodes cannot both create it).
pub(super) async fn insert_account(
    db: &impl GenericClient,
    a: &NewAccount,
) -> Result<AccountRecord, StoreError> {
    let st = db
        .prepare_cached(
            "INSERT INTO accounts (host, name, password_hash, created_at, invited_by, invite_id)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .await
        .map_err(backend)?;
    let inserted = db
        .query_one(
            &st,
            &[
                &a.host.as_str(),
                &a.name.as_str(),
                &a.password_hash,
                &a.created_at,
                &a.invited_by,
                &a.invite_id,
            ],
        )
        .await;
    match inserted {
        Ok(row) => Ok(a.saved_as(get(&row, 0)?)),
        Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken),
        Err(e) => Err(backend(e)),
    }
}

/// Inserts an account made without an invite, with its webhook event and
/// its audit row: only the operator's command creates accounts so.
pub(super) async fn create_account_audited(
    db: &impl GenericClient,
    routes: &Routes,
    account: &NewAccount,
) -> Result<AccountRecord, StoreError> {
    let created = insert_account(db, account).await?;
    outbox::record(
        db,
        routes,
        &created.host,
        EventKind::AccountCreated,
        created.created_at,
        Subject {
            account: Some(created.name.as_str()),
            source: Some("cli"),
            ..Subject::default()
        },
    )
    .await?;
    audit(
        db,
        created.created_at,
        &created.host,
        "cli",
        "account.create",
        created.name.as_str(),
        None,
    )
    .await?;
    Ok(created)
}

/// The accounts of a host, by name (byte order, as SQLite sorts).
pub(super) async fn list(
    db: &impl GenericClient,
    host: &HostName,
) -> Result<Vec<AccountRecord>, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.host = $1 ORDER BY a.name COLLATE \"C\""
        ))
        .await
        .map_err(backend)?;
    all(
        db.query(&st, &[&host.as_str()]).await.map_err(backend)?,
        account_row,
    )
}

/// An account by host and name.
pub(super) async fn find(
    db: &impl GenericClient,
    host: &HostName,
    name: &AccountName,
) -> Result<AccountRecord, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.host = $1 AND a.name = $2"
        ))
        .await
        .map_err(backend)?;
    one(
        db.query_opt(&st, &[&host.as_str(), &name.as_str()])
            .await
            .map_err(backend)?,
        account_row,
    )
}

/// An account by row id.
pub(super) async fn find_by_id(
    db: &impl GenericClient,
    id: i64,
) -> Result<AccountRecord, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1"
        ))
        .await
        .map_err(backend)?;
    one(
        db.query_opt(&st, &[&id]).await.map_err(backend)?,
        account_row,
    )
}

/// Sets an account's password and ends its sessions but `keep`, audited.
pub(super) async fn set_password(
    db: &impl GenericClient,
    account_id: i64,
    password_hash: &str,
    keep: Option<&SecretDigest>,
    actor: &str,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached("UPDATE accounts SET password_hash = $1 WHERE id = $2 RETURNING host, name")
        .await
        .map_err(backend)?;
    let (host, name): (HostName, String) = one(
        db.query_opt(&st, &[&password_hash, &account_id])
            .await
            .map_err(backend)?,
        |r| Ok((host_at(r, 0)?, get(r, 1)?)),
    )?;
    end_sessions(db, account_id, keep).await?;
    audit(db, Utc::now(), &host, actor, "account.passwd", &name, None).await
}

/// Deletes an account (its sessions go by ON DELETE CASCADE) and revokes the
/// invites it minted that are still pending, and reset invites for it.
pub(super) async fn delete(
    db: &impl GenericClient,
    routes: &Routes,
    host: &HostName,
    name: &AccountName,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = lock_account(db, host, name).await?;
    let source = format!("account/{id}");
    let revoked = revoke_pending(db, host, &source, Some(id), now).await?;
    // Who registered with an invite stays on record by name.
    let st = db
        .prepare_cached("UPDATE invite_uses SET account_id = NULL WHERE account_id = $1")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&id]).await.map_err(backend)?;
    record_revocations(db, routes, host, &revoked, now).await?;
    let st = db
        .prepare_cached("DELETE FROM accounts WHERE id = $1")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&id]).await.map_err(backend)?;
    outbox::record(
        db,
        routes,
        host,
        EventKind::AccountDeleted,
        now,
        Subject {
            account: Some(name.as_str()),
            ..Default::default()
        },
    )
    .await?;
    let detail = format!("revoked {} pending invites", revoked.len());
    audit(
        db,
        now,
        host,
        actor,
        "account.delete",
        name.as_str(),
        Some(&detail),
    )
    .await
}

/// Disables (ending its sessions) or enables an account, audited.
pub(super) async fn set_disabled(
    db: &impl GenericClient,
    host: &HostName,
    name: &AccountName,
    disabled: bool,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<(), StoreError> {
    let id = lock_account(db, host, name).await?;
    // An account disabled twice keeps the time it was first disabled.
    let st = db
        .prepare_cached(
            "UPDATE accounts
             SET disabled_at = CASE WHEN $2::boolean THEN coalesce(disabled_at, $3) END
             WHERE id = $1",
        )
        .await
        .map_err(backend)?;
    db.execute(&st, &[&id, &disabled, &at])
        .await
        .map_err(backend)?;
    if disabled {
        end_sessions(db, id, None).await?;
    }
    let action = if disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    audit(db, at, host, actor, action, name.as_str(), None).await
}

/// An account with when its invite was minted: from the invite while it is
/// kept, else from its id (see [`invite_minted_at`]).
pub(super) async fn origin(
    db: &impl GenericClient,
    host: &HostName,
    name: &AccountName,
) -> Result<AccountOrigin, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS}, i.created_at
             FROM accounts a LEFT JOIN invites i ON i.id = a.invite_id
             WHERE a.host = $1 AND a.name = $2"
        ))
        .await
        .map_err(backend)?;
    let (account, minted) = one(
        db.query_opt(&st, &[&host.as_str(), &name.as_str()])
            .await
            .map_err(backend)?,
        |row| Ok((account_row(row)?, get::<Option<DateTime<Utc>>>(row, 8)?)),
    )?;
    let invite_minted_at = minted.or_else(|| account.invite_id.and_then(invite_minted_at));
    Ok(AccountOrigin {
        account,
        invite_minted_at,
    })
}

/// Stores a password-reset invite for an existing account, audited.
pub(super) async fn insert_reset(
    db: &impl GenericClient,
    inv: &NewResetInvite,
) -> Result<i64, StoreError> {
    let st = db
        .prepare_cached(
            "INSERT INTO invites
                (id, token_digest, host, source, created_at, expires_at, token_format, kind,
                 reset_account_id, fixed_name)
             SELECT $1::bigint, $2::bytea, host, $7::text, $3::timestamptz, $4::timestamptz,
                2, 'reset', id, name
             FROM accounts WHERE host = $5 AND name = $6
             ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(backend)?;
    for _ in 0..ID_ATTEMPTS {
        let id = new_invite_id(inv.created_at);
        let inserted = db
            .execute(
                &st,
                &[
                    &id,
                    &inv.token_digest.as_bytes().as_slice(),
                    &inv.created_at,
                    &inv.expires_at,
                    &inv.host.as_str(),
                    &inv.account.as_str(),
                    &inv.source.to_text(),
                ],
            )
            .await
            .map_err(backend)?;
        if inserted == 1 {
            audit(
                db,
                inv.created_at,
                &inv.host,
                &inv.actor,
                "invite.reset",
                inv.account.as_str(),
                None,
            )
            .await?;
            return Ok(id);
        }
        if !id_taken(db, id).await? {
            return Err(StoreError::NotFound);
        }
    }
    Err(StoreError::permanent("no free invite id in as many draws"))
}

/// Redeems a reset invite: spends it (one conditional write, so two
/// redemptions cannot both pass), sets the password, ends every session of
/// the account and opens `session`.
pub(super) async fn redeem_reset(
    db: &impl GenericClient,
    lookup: &InviteLookup,
    password_hash: &str,
    session: &NewSession,
    now: DateTime<Utc>,
) -> Result<AccountRecord, StoreError> {
    let invite = find_invite(db, lookup).await?;
    invite.usable_at(now)?;
    let account_id = invite.reset_account_id.ok_or(StoreError::NotFound)?;
    let st = db
        .prepare_cached(
            "UPDATE invites SET uses_spent = uses_spent + 1, used_at = $2, used_by = $3,
                ended_at = $2
             WHERE id = $1 AND revoked_at IS NULL AND uses_spent < uses_allowed
               AND expires_at > $2",
        )
        .await
        .map_err(backend)?;
    let spent = db
        .execute(&st, &[&invite.id, &now, &account_id])
        .await
        .map_err(backend)?;
    if spent != 1 {
        return Err(StoreError::InviteUsed);
    }
    // The account must still be the one the invite was made for.
    let name = invite.fixed_name.as_deref().ok_or(StoreError::NotFound)?;
    let st = db
        .prepare_cached(
            "UPDATE accounts SET password_hash = $1
             WHERE id = $2 AND name = $3 AND disabled_at IS NULL",
        )
        .await
        .map_err(backend)?;
    let changed = db
        .execute(&st, &[&password_hash, &account_id, &name])
        .await
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    end_sessions(db, account_id, None).await?;
    let account = find_by_id(db, account_id).await?;
    record_use(db, invite.id, &account, now).await?;
    insert_session(db, account_id, session).await?;
    Ok(account)
}
